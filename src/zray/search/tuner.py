"""The Ray part of the search: Tune trials proposed by Optuna, stopped early by a scheduler.

Each trial is a Tune function trainable that runs one Ray Train run (Ray
Train V2's pattern: ``trainer.fit()`` inside the trial, its reports forwarded
by ``TuneReportCallback``). The experiment lives in ``runs/NAME/``:

- ``optuna.db``: the Optuna study (SQLite), for ``optuna-dashboard``;
- ``trials/trial-IDENTITY-N/``: each trial's Ray Train run and checkpoints,
  named by the run identity so a resumed trial finds its own checkpoints;
- ``trial-IDENTITY-N/``: Tune's trial folder (params, result.json, TensorBoard events);
- Ray Tune's experiment state, used by ``--resume``;
- ``results.csv`` and ``best.json``: written at the end (:mod:`zray.search.results`);
- ``lost/``: folders of trials a killed driver started but Tune had not yet
  saved (:mod:`zray.search.recovery`), kept for inspection.

The storage may also be an object-store URI (``--storage s3://bucket/zray``),
as a multi-node cluster needs: Tune and Train then write ``URI/NAME/`` and the
driver keeps only the Optuna study and a copy of the search space in its local
``runs/NAME/``. A plain path on a multi-node cluster must be shared by every
node (NFS); :func:`zray.cluster.check_storage` proves it before the search.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from zray.console import LOG
from zray.errors import ZrayError, first_line
from zray.paths import check_name
from zray.search import warm_start as _warm_start
from zray.search.recovery import clear_unsaved, close_orphans, set_aside_lost_trials
from zray.search.results import (
    LOST_DIR,
    SPACE_FILE,
    STUDY_FILE,
    TRIALS_DIR,
    _write_json,
    summarize,
    write_results,
)
from zray.train.job import ESTIMATE_FILE, PROGRESS_DIR

__all__ = ["run", "optuna_distributions", "make_scheduler", "make_searcher"]


def optuna_distributions(space) -> dict[str, Any]:
    """The search section as Optuna distributions (what OptunaSearch takes)."""
    import optuna.distributions as od

    out: dict[str, Any] = {}
    for key, dist in space.search.items():
        if dist.type == "categorical":
            out[key] = od.CategoricalDistribution(list(dist.choices))
        elif dist.type == "int":
            out[key] = od.IntDistribution(int(dist.low), int(dist.high), log=dist.log, step=int(dist.step or 1))
        else:
            out[key] = od.FloatDistribution(dist.low, dist.high, log=dist.log, step=dist.step)
    return out


def make_scheduler(space):
    """ASHA, median stopping, or None, on the reported ``epoch``."""
    from ray.tune.schedulers import ASHAScheduler, MedianStoppingRule

    s = space.tune.scheduler
    epochs = max(int(space.default_hyperparameters()["epochs"]), 1)
    if s.type == "asha":
        return ASHAScheduler(time_attr="epoch", metric=space.tune.metric, mode=space.tune.mode, max_t=epochs,
                             grace_period=min(s.grace_period, epochs), reduction_factor=s.reduction_factor)
    if s.type == "median":
        return MedianStoppingRule(time_attr="epoch", metric=space.tune.metric, mode=space.tune.mode,
                                  grace_period=s.grace_period, min_samples_required=s.min_samples_required)
    return None


def make_searcher(space, experiment_dir: Path, trials_local: bool = True):
    """OptunaSearch over the space, seeded, with its study in ``optuna.db``: a faithful
    record of the search (see :mod:`zray.search.optuna_study`)."""
    import optuna
    from ray.tune.search import ConcurrencyLimiter

    from zray.search.optuna_study import ResumableOptunaSearch

    seed = space.tune.seed
    # TPE, random and NSGA-II each take one objective or two (tune.metrics).
    sampler = {"tpe": optuna.samplers.TPESampler, "random": optuna.samplers.RandomSampler,
               "nsga2": optuna.samplers.NSGAIISampler}[space.tune.sampler](seed=seed)
    storage = optuna.storages.RDBStorage(f"sqlite:///{experiment_dir.resolve() / STUDY_FILE}")
    searcher = ResumableOptunaSearch(
        space=optuna_distributions(space), metric=space.tune.metric, mode=space.tune.mode, sampler=sampler,
        study_name=space.name, storage=storage, epochs=int(space.default_hyperparameters()["epochs"]),
        experiment_dir=str(experiment_dir) if trials_local else None, seed=seed,
        metrics=space.tune.metrics, modes=space.tune.modes,  # two objectives, or None
    )
    return ConcurrencyLimiter(searcher, max_concurrent=space.tune.max_concurrent)


def run(space, *, runs_dir: str | Path = "runs", name: str | None = None, resume: bool = False,
        address: str | None = None, record_ids_dir: str | None = None, local_runs: str | Path = "runs",
        on_check=None, dashboard_host: str = "127.0.0.1", warm_start: str | Path | None = None,
        progress_every_s: float | None = None) -> dict[str, Any]:
    """Run (or resume) the search; return the summary that ``zray status`` also prints, with
    ``interrupted`` True when Ctrl-C ended it (Tune then returns as if it were done; ``resume=True``
    continues it).

    ``warm_start``: an earlier experiment's folder (``runs/OLD``) whose finished
    trials seed the new study before its first trial; checked before Ray starts
    (:mod:`zray.search.warm_start`).

    ``runs_dir`` is the storage: a folder, or an object-store URI (then the
    driver's own files go to ``local_runs/NAME`` and the summary only names
    where the results are). On a cluster of more than one node the storage
    and data folders are checked to be shared before any trial starts;
    ``on_check`` receives the line saying what was checked.

    ``progress_every_s``: how often a trial's worker writes how far a long epoch has come
    (default :data:`zray.train.job.PROGRESS_EVERY_S`; the tests use 0, every step).

        >>> from zray import config, search
        >>> space = config.load("search_spaces/quickstart.yaml")    # doctest: +SKIP
        >>> summary = search.run(space, runs_dir="runs")           # doctest: +SKIP
        >>> print(search.format_summary(summary))                  # doctest: +SKIP
    """
    from zray import experiment
    from zray import storage as st
    from zray.cluster import check_storage
    from zray.runtime import check_reachable, init_ray

    if address and address != "auto":
        check_reachable(address)  # before any data work: a wrong address is named at once
    name = check_name(name, "name") if name else space.name
    st.check_local_folder(local_runs if st.is_uri(runs_dir) else runs_dir)
    place = st.Place.of(runs_dir, name, local_runs)
    resume = _check_resume(space, place, resume)
    warm = warm_start and _warm_start.check(warm_start, space, place.local, resume=bool(resume))
    data = experiment.check_data(space)  # before anything is written or started
    if resume is None:
        # Stopped before Tune saved its state the first time: nothing of the
        # search can be restored, so it starts again, without the leftovers.
        LOG.info(f"{place.path} has no saved Tune state (stopped before its first save); "
                 "starting the search again")
        clear_unsaved(place)
        resume = False
    place.local.mkdir(parents=True, exist_ok=True)
    _write_json(place.local / SPACE_FILE, space.model_dump(mode="json"))
    if place.remote:
        st.write_text(place.file(SPACE_FILE), json.dumps(space.model_dump(mode="json"), indent=1, sort_keys=True))
    init_ray(address, dashboard_host=dashboard_host)
    checked = check_storage(runs_dir, data_path=space.data.path)
    if checked and on_check:
        on_check(checked)
    # Progress within long epochs, on a local (or shared) storage folder; not through an object
    # store, whose writes would hold up rank 0's training steps.
    progress_dir = None if place.remote else place.file(TRIALS_DIR, PROGRESS_DIR)
    ctx = experiment.trial_context(
        space, data, place.file(TRIALS_DIR), record_ids_dir=record_ids_dir, progress_dir=progress_dir,
        job_extra=None if progress_every_s is None else {"extra": {"progress_every_s": progress_every_s}})
    t0 = time.perf_counter()
    lines = experiment.callbacks(space, data.manifest, trials=space.tune.num_samples,
                                 concurrent=space.tune.max_concurrent,
                                 estimate_file=place.file(TRIALS_DIR, ESTIMATE_FILE), progress_dir=progress_dir,
                                 progress_every_s=progress_every_s)
    tuner = _tuner(space, ctx, data.manifest.hash, place, resume, lines)  # its searcher made the study
    if warm:
        warm.seed(place.local, space.name)  # before the first trial: the sampler knows the earlier ones
    with experiment.progress_folder(progress_dir), experiment.watch_for_interruption() as watch:
        grid = tuner.fit()
    if not watch.interrupted:
        # The study's trials still RUNNING were never run to the end. After Ctrl-C they are the
        # trials in flight, which --resume continues under the same numbers: they stay RUNNING.
        close_orphans(place.local, space.name)
    if place.remote:
        # Results live in the object store; `zray status` reads a local copy.
        return {"experiment": place.path, "remote": True, "wall_time_s": time.perf_counter() - t0,
                "interrupted": watch.interrupted}
    moved = set_aside_lost_trials(place.local, {Path(r.path).name for r in grid if r.path})
    if moved:
        LOG.info(f"set aside {len(moved)} trial folder(s) Tune had not saved before its driver "
                 f"stopped (their points were proposed again): {place.local / LOST_DIR}")
    summary = summarize(place.local)
    summary["wall_time_s"] = time.perf_counter() - t0
    summary["interrupted"] = watch.interrupted
    write_results(summary)
    return summary


def _check_resume(space, place, resume: bool) -> bool | None:
    """Whether to restore Tune's state: refuse a resume with nothing to resume or a
    changed search space, and a fresh start over an existing experiment. None: a
    search stopped before Tune's first save, to start again."""
    from zray import storage as st

    experiment_path = place.path
    state_exists = st.exists(place.file("tuner.pkl"))
    started = st.exists(place.file(SPACE_FILE)) or (place.local / SPACE_FILE).exists()
    if resume and not state_exists and not started:
        raise ZrayError(f"{experiment_path}: nothing to resume (no Tune experiment state there); run without --resume")
    if not resume and state_exists:
        raise ZrayError(f"{experiment_path}: an experiment of that name exists; use --resume to continue it "
                        "or --name NEW for a fresh one")
    if resume:
        saved_text = st.read_text(st.join(experiment_path, SPACE_FILE))
        try:
            saved = json.loads(saved_text) if saved_text is not None else None
        except ValueError:
            raise ZrayError(f"{st.join(experiment_path, SPACE_FILE)}: unreadable (cut short?); expected the search "
                            "space zray saved when the experiment started (start afresh with --name NEW)") from None
        if saved != space.model_dump(mode="json"):
            raise ZrayError(f"{st.join(experiment_path, SPACE_FILE)}: the search space differs from the one "
                            "this experiment started with; expected the same file and --set values to resume")
    if started and not state_exists:
        return None
    return resume


def _tuner(space, ctx, manifest_hash: str, place, resume: bool, callbacks: list):
    """A new ``tune.Tuner`` for the search, or the one restored from ``place``."""
    from ray import tune

    from zray.config import run_identity
    from zray.console import is_verbose
    from zray.experiment import trial_function, trial_hp, trial_name

    def identity_of(trial) -> str:
        return trial_name(run_identity(space.model, trial_hp(ctx, trial.config), manifest_hash), trial.trial_id)

    trainable = tune.with_resources(tune.with_parameters(trial_function, ctx=ctx),
                                    {"cpu": space.resources.trial_cpus})
    if resume:
        try:
            return tune.Tuner.restore(place.path, trainable=trainable, resume_unfinished=True,
                                      resume_errored=False)
        except Exception as exc:  # Tune raises several types for unreadable state
            raise ZrayError(f"{place.path}: the saved Tune state cannot be restored ({first_line(exc)}); "
                            "expected the state of a search started by zray tune (start again with --name NEW)"
                            ) from None
    return tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            # Nothing to search: Tune repeats the fixed configuration num_samples times.
            search_alg=make_searcher(space, place.local, trials_local=not place.remote) if space.search else None,
            scheduler=make_scheduler(space), num_samples=space.tune.num_samples,
            time_budget_s=space.tune.time_budget_s,
            trial_name_creator=identity_of, trial_dirname_creator=identity_of,
        ),
        run_config=tune.RunConfig(
            name=place.name, storage_path=place.storage,
            failure_config=tune.FailureConfig(max_failures=0, fail_fast=False),
            verbose=1 if is_verbose() else 0,
            callbacks=callbacks,
        ),
    )

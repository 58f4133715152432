"""The hyperparameter search: Ray Tune trials proposed by Optuna, stopped early by a scheduler.

Each trial is a Tune function trainable that runs one Ray Train run (Ray
Train V2's pattern: ``trainer.fit()`` inside the trial, its reports forwarded
by ``TuneReportCallback``). The experiment lives in ``runs/NAME/``:

- ``optuna.db``: the Optuna study (SQLite), for ``optuna-dashboard``;
- ``trials/trial-IDENTITY/``: each trial's Ray Train run and checkpoints,
  named by the run identity so a resumed trial finds its own checkpoints;
- Ray Tune's experiment state, used by ``--resume``;
- ``results.csv`` and ``best.json``: written at the end and by ``zray status``;
- ``lost/``: folders of trials a killed driver started but Tune had not yet
  saved (the resumed search proposed those points again), kept for inspection.

The storage may also be an object-store URI (``--storage s3://bucket/zray``),
as a multi-node cluster needs: Tune and Train then write ``URI/NAME/`` and the
driver keeps only the Optuna study and a copy of the search space in its local
``runs/NAME/``; fetch ``URI/NAME`` (``aws s3 sync``) to read it with
``zray status``. A plain path on a multi-node cluster must be shared by every
node (NFS); :func:`zray.cluster.check_storage` proves it before the search.
"""

from __future__ import annotations

import csv
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zray.errors import ZrayError, first_line, last_error_line

RESULTS_FILE = "results.csv"
BEST_FILE = "best.json"
SPACE_FILE = "search_space.json"
STUDY_FILE = "optuna.db"
TRIALS_DIR = "trials"
LOST_DIR = "lost"


def optuna_distributions(space) -> dict[str, Any]:
    """The search section as Optuna distributions (what OptunaSearch takes)."""
    import optuna.distributions as od

    out: dict[str, Any] = {}
    for key, dist in space.search.items():
        if dist.type == "categorical":
            out[key] = od.CategoricalDistribution(list(dist.choices))
        elif dist.type == "int":
            out[key] = od.IntDistribution(
                int(dist.low), int(dist.high), log=dist.log, step=int(dist.step or 1)
            )
        else:
            out[key] = od.FloatDistribution(dist.low, dist.high, log=dist.log, step=dist.step)
    return out


def make_scheduler(space):
    """ASHA, median stopping, or None, on the reported ``epoch``."""
    from ray.tune.schedulers import ASHAScheduler, MedianStoppingRule

    s = space.tune.scheduler
    epochs = int(space.default_hyperparameters()["epochs"])
    if s.type == "asha":
        return ASHAScheduler(
            time_attr="epoch",
            metric=space.tune.metric,
            mode=space.tune.mode,
            max_t=max(epochs, 1),
            grace_period=min(s.grace_period, max(epochs, 1)),
            reduction_factor=s.reduction_factor,
        )
    if s.type == "median":
        return MedianStoppingRule(
            time_attr="epoch",
            metric=space.tune.metric,
            mode=space.tune.mode,
            grace_period=s.grace_period,
            min_samples_required=s.min_samples_required,
        )
    return None


def make_searcher(space, experiment_dir: Path, trials_local: bool = True):
    """OptunaSearch over the space, seeded, with its study in ``optuna.db``: a faithful
    record of the search (see :mod:`zray._optuna_search`)."""
    import optuna
    from ray.tune.search import ConcurrencyLimiter

    from zray._optuna_search import ResumableOptunaSearch

    seed = space.tune.seed
    sampler = (
        optuna.samplers.TPESampler(seed=seed)
        if space.tune.sampler == "tpe"
        else optuna.samplers.RandomSampler(seed=seed)
    )
    storage = optuna.storages.RDBStorage(f"sqlite:///{experiment_dir.resolve() / STUDY_FILE}")
    searcher = ResumableOptunaSearch(
        space=optuna_distributions(space),
        metric=space.tune.metric,
        mode=space.tune.mode,
        sampler=sampler,
        study_name=space.name,
        storage=storage,
        epochs=int(space.default_hyperparameters()["epochs"]),
        experiment_dir=str(experiment_dir) if trials_local else None,
    )
    return ConcurrencyLimiter(searcher, max_concurrent=space.tune.max_concurrent)


@dataclass
class _TrialContext:
    """What the trial function needs; plain data, shipped to the trial's process."""

    space_json: dict
    base_hp: dict
    manifest_hash: str
    trials_dir: str
    record_ids_dir: str | None = None
    # For the time estimate printed by the search's first trial.
    plan: dict | None = None
    # The splits, read and scaled once by the driver for every trial (Ray
    # datasets travel by reference), and what the shard check skipped.
    datasets: dict | None = None
    skipped: dict | None = None


def _trial_hp(ctx: _TrialContext, config: dict) -> dict:
    return {**ctx.base_hp, **{k: _plain(v) for k, v in config.items()}}


def _plain(value):
    return value.item() if hasattr(value, "item") else value


def trial_name(identity: str, trial_id: str) -> str:
    """``trial-IDENTITY-NNNNN``: the run identity, plus Tune's trial counter in case
    the sampler proposes the same point twice. Tune's trial folder and the
    trial's Ray Train run share it, so a resumed trial finds its checkpoints."""
    return f"trial-{identity}-{trial_id.rsplit('_', 1)[-1]}"


def trial_function(config: dict, ctx: _TrialContext) -> None:
    """One trial: a Ray Train run at ``config``, reporting each epoch to Tune."""
    from ray import tune
    from ray.tune.integration.ray_train import TuneReportCallback

    from zray import storage as st
    from zray.config import SearchSpace, run_identity
    from zray.data.pipeline import check_shards
    from zray.runtime import pin_address, quiet_logs
    from zray.train import (
        ESTIMATE_FILE,
        divergence,
        failure_reason,
        job_for,
        make_trainer,
        prepare_datasets,
        skipped_fields,
    )

    quiet_logs()
    pin_address()

    space = SearchSpace.model_validate(ctx.space_json)
    hp = _trial_hp(ctx, config)
    identity = run_identity(space.model, hp, ctx.manifest_hash)
    trial_id = tune.get_context().get_trial_id()
    name = trial_name(identity, trial_id)
    datasets, skipped = getattr(ctx, "datasets", None), getattr(ctx, "skipped", None)
    if datasets is None:  # read here when the driver did not (a state saved by an older zray)
        shards = check_shards(space.data.path, skip_corrupt=space.data.skip_corrupt)
        datasets = prepare_datasets(space.data.path, space.data.image_size, shards=shards)
        skipped = skipped_fields(shards)
    # The first trial to train tells how long the search will take.
    first = not st.exists(st.join(ctx.trials_dir, ESTIMATE_FILE))
    job = job_for(space, hp, ctx.manifest_hash, record_ids_dir=ctx.record_ids_dir,
                  plan=ctx.plan if first else {}, **skipped)
    trainer = make_trainer(
        job,
        datasets=datasets,
        storage_path=ctx.trials_dir,
        name=name,
        gpus_per_worker=space.resources.gpus_per_worker,
        max_failures=1,
        callbacks=[TuneReportCallback()],
    )
    try:
        trainer.fit()
    except Exception as exc:  # Ray Train's TrainingFailedError: keep Tune's error.txt to one sentence
        raise RuntimeError(failure_reason(exc, f"{ctx.trials_dir.rstrip('/')}/{name}")) from None
    reason = divergence(f"{ctx.trials_dir.rstrip('/')}/{name}")
    if reason:
        raise FloatingPointError(reason)


def run(
    space,
    *,
    runs_dir: str | Path = "runs",
    name: str | None = None,
    resume: bool = False,
    address: str | None = None,
    record_ids_dir: str | None = None,
    local_runs: str | Path = "runs",
    on_check=None,
    dashboard_host: str = "127.0.0.1",
) -> dict[str, Any]:
    """Run (or resume) the search; return the summary that ``zray status`` also prints.

    ``runs_dir`` is the storage: a folder, or an object-store URI (then the
    driver's own files go to ``local_runs/NAME`` and the summary only names
    where the results are). On a cluster of more than one node the storage
    and data folders are checked to be shared before any trial starts;
    ``on_check`` receives the line saying what was checked.
    """
    from ray import tune

    from zray import baselines
    from zray import storage as st
    from zray._tune_progress import TrialLines
    from zray.cluster import check_storage
    from zray.config import run_identity
    from zray.console import is_verbose
    from zray.data.pipeline import check_shards
    from zray.data.source import ensure_data
    from zray.runtime import init_ray
    from zray.train import plan_of, prepare_datasets, skipped_fields

    name = name or space.name
    remote = st.is_uri(runs_dir)
    if remote:
        experiment_path = st.join(runs_dir, name)
        experiment_dir = (Path(local_runs) / name).resolve()
    else:
        experiment_dir = (Path(runs_dir) / name).resolve()
        experiment_path = str(experiment_dir)
    state_exists = st.exists(st.join(experiment_path, "tuner.pkl"))
    started = st.exists(st.join(experiment_path, SPACE_FILE)) or (experiment_dir / SPACE_FILE).exists()
    if resume and not state_exists and not started:
        raise ZrayError(f"{experiment_path}: nothing to resume (no Tune experiment state there); run without --resume")
    if not resume and state_exists:
        raise ZrayError(
            f"{experiment_path}: an experiment of that name exists; use --resume to continue it "
            "or --name NEW for a fresh one"
        )
    if resume:
        saved_text = st.read_text(st.join(experiment_path, SPACE_FILE))
        if saved_text is None or json.loads(saved_text) != space.model_dump(mode="json"):
            raise ZrayError(
                f"{st.join(experiment_path, SPACE_FILE)}: the search space differs from the one this "
                "experiment started with; expected the same file and --set values to resume"
            )

    manifest = ensure_data(space)
    # Footer check of every shard before anything is written or started; each
    # trial checks again (and skips, with data.skip_corrupt) when it reads.
    shards = check_shards(space.data.path, skip_corrupt=space.data.skip_corrupt)
    baselines.ensure_or_none(space.data.path, say=lambda line: print(f"zray: {line}", flush=True))
    if started and not state_exists:
        # Stopped before Tune saved its state the first time: nothing of the
        # search can be restored, so it starts again, without the leftovers.
        print(f"zray: {experiment_path} has no saved Tune state (stopped before its first save); "
              "starting the search again", flush=True)
        _clear_unsaved(experiment_path, experiment_dir)
        resume = False
    experiment_dir.mkdir(parents=True, exist_ok=True)
    _write_json(experiment_dir / SPACE_FILE, space.model_dump(mode="json"))
    if remote:
        st.write_text(st.join(experiment_path, SPACE_FILE), json.dumps(space.model_dump(mode="json"), indent=1, sort_keys=True))
    init_ray(address, dashboard_host=dashboard_host)
    checked = check_storage(runs_dir, data_path=space.data.path)
    if checked and on_check:
        on_check(checked)

    base_hp = space.default_hyperparameters()
    for key in space.search:
        base_hp.pop(key, None)
    # Read and scale the data once for all trials: a trial then starts with its
    # Ray Train run, not with Ray Data planning and reading the shards again.
    datasets = prepare_datasets(space.data.path, space.data.image_size, shards=shards)
    ctx = _TrialContext(
        space_json=space.model_dump(mode="json"),
        base_hp=base_hp,
        manifest_hash=manifest.hash,
        trials_dir=st.join(experiment_path, TRIALS_DIR),
        record_ids_dir=record_ids_dir,
        plan=plan_of(space, manifest, trials=space.tune.num_samples, concurrent=space.tune.max_concurrent),
        datasets=datasets,
        skipped=skipped_fields(shards),
    )

    def identity_of(trial) -> str:
        identity = run_identity(space.model, _trial_hp(ctx, trial.config), manifest.hash)
        return trial_name(identity, trial.trial_id)

    trainable = tune.with_resources(
        tune.with_parameters(trial_function, ctx=ctx), {"cpu": space.resources.trial_cpus}
    )
    t0 = time.perf_counter()
    if resume:
        try:
            tuner = tune.Tuner.restore(
                experiment_path, trainable=trainable, resume_unfinished=True, resume_errored=False
            )
        except Exception as exc:  # Tune raises several types for unreadable state
            raise ZrayError(
                f"{experiment_path}: the saved Tune state cannot be restored ({first_line(exc)}); "
                "expected the state of a search started by zray tune (start again with --name NEW)"
            ) from None
    else:
        tuner = tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(
                # Nothing to search: Tune repeats the fixed configuration num_samples times.
                search_alg=make_searcher(space, experiment_dir, trials_local=not remote) if space.search else None,
                scheduler=make_scheduler(space),
                num_samples=space.tune.num_samples,
                time_budget_s=space.tune.time_budget_s,
                trial_name_creator=identity_of,
                trial_dirname_creator=identity_of,
            ),
            run_config=tune.RunConfig(
                name=name,
                storage_path=str(runs_dir) if remote else str(experiment_dir.parent),
                failure_config=tune.FailureConfig(max_failures=0, fail_fast=False),
                verbose=1 if is_verbose() else 0,
                callbacks=[TrialLines(space.tune.metric, space.tune.mode,
                                      space.default_hyperparameters()["epochs"])],
            ),
        )
    grid = tuner.fit()
    close_orphans(experiment_dir, space.name)
    if remote:
        # Results live in the object store; `zray status` reads a local copy.
        return {"experiment": experiment_path, "remote": True, "wall_time_s": time.perf_counter() - t0}
    moved = set_aside_lost_trials(experiment_dir, {Path(r.path).name for r in grid if r.path})
    if moved:
        print(f"zray: set aside {len(moved)} trial folder(s) Tune had not saved before its driver "
              f"stopped (their points were proposed again): {experiment_dir / LOST_DIR}", flush=True)
    summary = summarize(experiment_dir)
    summary["wall_time_s"] = time.perf_counter() - t0
    return summary


def _clear_unsaved(experiment_path: str, experiment_dir: Path) -> None:
    """Remove what a search stopped before its first Tune save left behind:
    trial folders and the Optuna study (left there, they would be counted as trials)."""
    import shutil

    from zray import storage as st

    if st.is_uri(experiment_path):
        from pyarrow import fs

        filesystem, inner = fs.FileSystem.from_uri(experiment_path)
        for info in filesystem.get_file_info(fs.FileSelector(inner, allow_not_found=True)):
            name = info.path.rsplit("/", 1)[-1]
            if name.startswith("trial-") or name == TRIALS_DIR:
                filesystem.delete_dir(info.path)
    else:
        for path in [*experiment_dir.glob("trial-*"), experiment_dir / TRIALS_DIR]:
            shutil.rmtree(path, ignore_errors=True)
    (experiment_dir / STUDY_FILE).unlink(missing_ok=True)


def set_aside_lost_trials(experiment_dir: Path, known: set[str]) -> list[str]:
    """Move trial folders that are not among Tune's trials into ``lost/``; return their names.

    Tune saves its experiment state every few seconds; a driver killed after
    a trial started but before the next save leaves that trial's folder
    behind while the restored Tune (and its restored searcher) never heard of
    it and proposes the point again under a new trial. Left in place the
    folder would count as a trial twice; moved aside it stays for inspection.
    """
    lost: list[str] = []
    if not known:
        return lost  # nothing to compare against: move nothing
    for folder in sorted(Path(experiment_dir).glob("trial-*")):
        if folder.name in known or not folder.is_dir():
            continue
        target = Path(experiment_dir) / LOST_DIR
        target.mkdir(exist_ok=True)
        folder.rename(target / folder.name)
        run = Path(experiment_dir) / TRIALS_DIR / folder.name
        if run.is_dir():
            (target / TRIALS_DIR).mkdir(exist_ok=True)
            run.rename(target / TRIALS_DIR / folder.name)
        lost.append(folder.name)
    return lost


def close_orphans(experiment_dir: Path, study_name: str) -> int:
    """Mark Optuna trials still RUNNING after the search as FAIL; return how many.

    A driver killed mid-search leaves the trials it had asked Optuna for in
    state RUNNING; Tune re-runs its own trials after ``--resume`` under their
    original Optuna numbers, so whatever is still RUNNING once ``fit``
    returns was never run to the end and must not count as a trial.
    """
    import optuna

    path = Path(experiment_dir) / STUDY_FILE
    if not path.exists():
        return 0
    storage = optuna.storages.RDBStorage(f"sqlite:///{path}")
    try:
        study_id = storage.get_study_id_from_name(study_name)
    except KeyError:
        return 0
    closed = 0
    for trial in storage.get_all_trials(study_id, deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        storage.set_trial_state_values(trial._trial_id, optuna.trial.TrialState.FAIL)
        closed += 1
    return closed


# ---------------------------------------------------------------------------
# Results, read back from disk so `zray status` works on a running experiment


def _write_json(path: Path, data) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
    tmp.replace(path)


def _read_jsonl(path: Path) -> list[dict]:
    rows = []
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except ValueError:
                continue  # a line being written right now
    return rows


def trial_records(experiment_dir: Path, metric: str, mode: str, epochs: int) -> list[dict[str, Any]]:
    """One record per trial: parameters, status, final and best metrics, best checkpoint.

    Status is ``error``, ``complete`` (all ``epochs`` run), ``stopped`` (ended
    early by the scheduler) or ``unfinished`` (running, or interrupted).
    """

    sign = 1.0 if mode == "min" else -1.0
    records = []
    for trial_dir in sorted(experiment_dir.glob("trial-*")):
        params_file = trial_dir / "params.json"
        if not params_file.exists():
            continue
        params = json.loads(params_file.read_text())
        results = _read_jsonl(trial_dir / "result.json")
        error_file = trial_dir / "error.txt"
        error = last_error_line(error_file.read_text()) if error_file.exists() else ""
        final = results[-1] if results else {}
        trained = int(final.get("epoch", 0) or 0)
        target = int(params.get("epochs", epochs))
        if error:
            state = "error"
        elif trained >= target:
            state = "complete"
        elif final.get("done"):
            state = "stopped"
        else:
            state = "unfinished"
        scored = [r for r in results if _finite(r.get(metric))]
        best = min(scored, key=lambda r: sign * r[metric]) if scored else {}
        best_ckpt = best_checkpoint(experiment_dir / TRIALS_DIR / trial_dir.name, metric, mode)
        records.append(
            {
                "trial": trial_dir.name,
                "status": state,
                "epochs": trained,
                "params": params,
                "final": {k: final.get(k) for k in _METRIC_KEYS if k in final},
                "best": {k: best.get(k) for k in _METRIC_KEYS if k in best},
                "best_checkpoint": best_ckpt,
                "error": error,
            }
        )
    return records


_METRIC_KEYS = ("val_sigma_mad", "val_bias", "val_outlier_fraction", "val_crps", "val_loss", "loss", "epoch")


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def best_checkpoint(run_dir: Path, metric: str, mode: str) -> str | None:
    """The whole checkpoint of a trial's run folder that is best by ``metric``, or None."""
    from zray.train import STATE_FILE, checkpoint_complete

    sign = 1.0 if mode == "min" else -1.0
    best, best_value = None, math.inf
    for state_file in sorted(Path(run_dir).glob(f"checkpoint_*/{STATE_FILE}")):
        if not checkpoint_complete(state_file.parent):
            continue
        try:
            metrics = json.loads(state_file.read_text()).get("metrics", {})
        except (OSError, ValueError):
            continue
        value = metrics.get(metric)
        if _finite(value) and sign * value < best_value:
            best, best_value = str(state_file.parent), sign * value
    return best


def summarize(experiment_dir: Path) -> dict[str, Any]:
    """Write ``results.csv`` and ``best.json``; return the summary."""
    from zray import baselines
    from zray.config import SearchSpace

    experiment_dir = Path(experiment_dir)
    space_file = experiment_dir / SPACE_FILE
    if not space_file.exists():
        raise ZrayError(f"{experiment_dir}: not a zray experiment ({SPACE_FILE} missing); expected runs/NAME")
    space = SearchSpace.model_validate(json.loads(space_file.read_text()))
    metric, mode = space.tune.metric, space.tune.mode
    epochs = int(space.default_hyperparameters()["epochs"])
    records = trial_records(experiment_dir, metric, mode, epochs)
    sign = 1.0 if mode == "min" else -1.0
    ranked = sorted(
        (r for r in records if _finite(r["best"].get(metric))), key=lambda r: sign * r["best"][metric]
    )
    param_names = sorted({k for r in records for k in r["params"]})
    metric_names = [k for k in _METRIC_KEYS if k != "epoch"]
    tmp = experiment_dir / (RESULTS_FILE + ".tmp")
    with tmp.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(
            ["trial", "status", "epochs", *param_names]
            + [f"final_{m}" for m in metric_names]
            + [f"best_{m}" for m in metric_names]
            + ["best_checkpoint", "error"]
        )
        for r in records:
            writer.writerow(
                [r["trial"], r["status"], r["epochs"], *(r["params"].get(p, "") for p in param_names)]
                + [r["final"].get(m, "") for m in metric_names]
                + [r["best"].get(m, "") for m in metric_names]
                + [r["best_checkpoint"] or "", r["error"]]
            )
    tmp.replace(experiment_dir / RESULTS_FILE)
    best = ranked[0] if ranked else None
    summary = {
        "experiment": str(experiment_dir),
        "num_samples": space.tune.num_samples,
        "metric": metric,
        "mode": mode,
        "trials": records,
        "ranked": ranked,
        "best": best,
        "best_checkpoint": best["best_checkpoint"] if best else None,
        "baselines": baselines.load(space.data.path),
    }
    _write_json(
        experiment_dir / BEST_FILE,
        {"metric": metric, "mode": mode, "trial": best and best["trial"], "params": best and best["params"],
         "metrics": best and best["best"], "checkpoint": best and best["best_checkpoint"]},
    )
    return summary


def format_summary(summary: dict[str, Any], top: int = 5) -> str:
    """The table printed at the end of a search and by ``zray status``."""
    from zray import baselines
    metric = summary["metric"]
    records = summary["trials"]
    counts: dict[str, int] = {}
    for r in records:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    lines = [
        f"experiment  {summary['experiment']}",
        f"trials      {len(records)} of {summary['num_samples']}: "
        + (", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "none yet"),
    ]
    ranked = summary["ranked"][:top]
    if ranked:
        params = sorted({k for r in ranked for k in r["params"]})
        header = ["rank", "trial", *params, "sigma_mad", "bias", "outliers", "epochs"]
        rows = []
        for i, r in enumerate(ranked, 1):
            b = r["best"]
            rows.append(
                [str(i), r["trial"], *(_fmt(r["params"].get(p)) for p in params),
                 _fmt(b.get("val_sigma_mad")), _fmt(b.get("val_bias")),
                 _fmt(b.get("val_outlier_fraction")), str(r["epochs"])]
            )
        widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(header)]
        lines.append("")
        lines.append("  ".join(h.ljust(w) for h, w in zip(header, widths)))
        lines.extend("  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in rows)
        lines.append("")
        lines.append(f"best {metric}: {_fmt(summary['best']['best'].get(metric))}  ({summary['best']['trial']})")
        lines.append(f"best checkpoint: {summary['best_checkpoint']}")
    table = summary.get("baselines")
    if table:
        lines.append("")
        lines.extend(baselines.format_table(table, "val"))
        if ranked:
            best_sigma = summary["best"]["best"].get("val_sigma_mad")
            lines.append(f"best trial's sigma_mad: {baselines.compare(best_sigma, table, 'val')}")
        constant = table["splits"].get("val", {}).get("constant", {}).get("sigma_mad")
        useless = [r["trial"] for r in summary["ranked"]
                   if constant is not None and r["best"].get("val_sigma_mad", 0.0) >= constant]
        if useless:
            lines.append(f"no better than the constant predictor: {', '.join(useless)}")
    failed = [r for r in records if r["status"] == "error"]
    for r in failed:
        lines.append(f"failed {r['trial']}: {r['error']}")
    lines.append(f"results: {Path(summary['experiment']) / RESULTS_FILE}")
    return "\n".join(lines)


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


"""What ``zray train`` and ``zray tune`` share: one way to prepare an experiment and run its trials.

``zray train`` is a search of one trial at the space's default
hyperparameters; ``zray tune`` one of many, proposed by Optuna. Both go
through the same steps, in this order:

1. :func:`check_data`, before Ray starts: the data (simulated on first use),
   a footer check of every shard, the labels against the bins, and the
   reference predictors, so that a broken input is named at once;
2. :func:`zray.runtime.init_ray`;
3. :func:`trial_context`: the splits read and scaled once, for every trial
   (they travel by reference), and what each trial needs to build its job;
4. a Ray Tune ``Tuner`` whose trainable is :func:`trial_function`: one Ray
   Train run per trial, its epochs reported to Tune by Ray's
   ``TuneReportCallback``, and :func:`callbacks` writing the terminal's
   lines from those reports.

The lines a run shows (its epochs, the time estimate, how each trial ended)
are written in the driver from the metrics the workers report: nothing a
worker prints is needed.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zray.console import LOG

__all__ = ["CheckedData", "TrialContext", "callbacks", "check_data", "progress_file", "progress_folder",
           "trial_context", "trial_function", "trial_hp", "trial_name", "watch_for_interruption"]


@dataclass
class CheckedData:
    """The data of an experiment, checked before Ray starts."""

    manifest: Any  # zray.data.shards.Manifest
    shards: Any  # zray.data.pipeline.ShardCheck: which files to read, what was skipped or dropped
    baselines: dict | None  # the reference predictors' figures (None when the data cannot give them)


def check_data(space) -> CheckedData:
    """Step 1: the data, the shards, the labels and the reference predictors."""
    from zray import baselines
    from zray.data.pipeline import check_shards
    from zray.data.source import ensure_data

    manifest = ensure_data(space)
    shards = check_shards(space.data.path, skip_corrupt=space.data.skip_corrupt)
    shards.check_labels(space.data.bins, drop=space.data.drop_out_of_range)
    table = baselines.ensure_or_none(space.data.path, say=LOG.info)
    return CheckedData(manifest=manifest, shards=shards, baselines=table)


@dataclass
class TrialContext:
    """What a trial needs; plain data, shipped to the trial's process."""

    space_json: dict
    base_hp: dict
    manifest_hash: str
    trials_dir: str
    record_ids_dir: str | None = None
    # The splits, read and scaled once by the driver for every trial (they
    # travel by reference: train.RunData), and what the shard check skipped.
    datasets: Any = None
    skipped: dict = field(default_factory=dict)
    # The Ray Train run's name under trials_dir; None: one per trial (trial_name).
    run_name: str | None = None
    # Ray Train restarts of the run's workers before the trial fails.
    max_failures: int = 1
    # Further TrainJob fields (test instruments: zray.train.faults).
    job_extra: dict = field(default_factory=dict)
    # Where each trial's rank 0 writes its progress within an epoch (progress_file(...)).
    progress_dir: str | None = None


def trial_context(space, data: CheckedData, trials_dir: str, *, hyperparameters: dict | None = None,
                  record_ids_dir: str | None = None, run_name: str | None = None, max_failures: int = 1,
                  job_extra: dict | None = None, progress_dir: str | None = None) -> TrialContext:
    """Step 3 (Ray started): the trials' shared context, with the data read and scaled
    once here (a trial then starts with its Ray Train run, not with Ray Data planning
    and reading the shards again). ``hyperparameters``: the fixed ones (default: the
    space's defaults outside its search section)."""
    from zray.train import prepare_datasets, skipped_fields

    if hyperparameters is None:
        hyperparameters = {k: v for k, v in space.default_hyperparameters().items() if k not in space.search}
    return TrialContext(
        space_json=space.model_dump(mode="json"), base_hp=dict(hyperparameters),
        manifest_hash=data.manifest.hash, trials_dir=trials_dir, record_ids_dir=record_ids_dir,
        datasets=prepare_datasets(space.data.path, space.data.image_size, shards=data.shards,
                                  shuffle_buffer=space.data.shuffle_buffer),
        skipped=skipped_fields(data.shards), run_name=run_name, max_failures=max_failures,
        job_extra=dict(job_extra or {}), progress_dir=progress_dir,
    )


def progress_file(progress_dir: str | None, name: str) -> str | None:
    """The file the progress within an epoch of the trial called ``name`` (its Tune trial name, the
    name of its folders) goes to: written by its rank-0 worker, read by the driver's
    :class:`zray.search.progress.TrialLines` and by ``zray status``."""
    return str(Path(progress_dir) / f"{name}.json") if progress_dir else None


@contextlib.contextmanager
def progress_folder(progress_dir: str | None):
    """``with progress_folder(dir): tuner.fit()``: the progress files' folder is the driver's, made
    before the search (workers write into it, never make it; where a file of that name stands, the
    search runs without progress lines) and removed when it returns, even after Ctrl-C (a stopped
    trial never reports its end, and would show as running in ``zray status``); a worker still
    writing then fails instead of bringing the folder back."""
    import shutil

    if progress_dir:
        with contextlib.suppress(OSError):
            Path(progress_dir).mkdir(parents=True, exist_ok=True)
    try:
        yield
    finally:
        if progress_dir:
            shutil.rmtree(progress_dir, ignore_errors=True)


def trial_hp(ctx: TrialContext, config: dict) -> dict:
    """A trial's hyperparameters: the fixed ones and what the searcher proposed."""
    return {**ctx.base_hp, **{k: (v.item() if hasattr(v, "item") else v) for k, v in config.items()}}


def trial_name(identity: str, trial_id: str) -> str:
    """``trial-IDENTITY-NNNNN``: the run identity, plus Tune's trial counter in case
    the sampler proposes the same point twice. Tune's trial folder and the
    trial's Ray Train run share it, so a resumed trial finds its checkpoints."""
    return f"trial-{identity}-{trial_id.rsplit('_', 1)[-1]}"


def trial_function(config: dict, ctx: TrialContext) -> None:
    """One trial: a Ray Train run at ``config``, reporting each epoch to Tune."""
    from ray import tune
    from ray.tune.integration.ray_train import TuneReportCallback

    from zray.config import SearchSpace, run_identity
    from zray.runtime import quiet_logs
    from zray.train import divergence, failure_reason, job_for, make_trainer

    quiet_logs(load=False)  # Optuna lives in the driver
    space = SearchSpace.model_validate(ctx.space_json)
    hp = trial_hp(ctx, config)
    name = ctx.run_name or trial_name(run_identity(space.model, hp, ctx.manifest_hash),
                                      tune.get_context().get_trial_id())
    run_dir = f"{ctx.trials_dir.rstrip('/')}/{name}"
    job = job_for(space, hp, ctx.manifest_hash, record_ids_dir=ctx.record_ids_dir,
                  progress_file=progress_file(ctx.progress_dir, name), **ctx.skipped, **ctx.job_extra)
    trainer = make_trainer(job, datasets=ctx.datasets, storage_path=ctx.trials_dir, name=name,
                           gpus_per_worker=space.resources.gpus_per_worker, max_failures=ctx.max_failures,
                           callbacks=[TuneReportCallback()])
    try:
        trainer.fit()
    except Exception as exc:  # Ray Train's TrainingFailedError: keep Tune's error.txt to one sentence
        raise RuntimeError(failure_reason(exc, run_dir)) from None
    reason = divergence(run_dir)
    if reason:
        raise FloatingPointError(reason)


def callbacks(space, manifest, *, trials: int, concurrent: int, estimate_file: str | None,
              trial_lines: bool = True, progress_dir: str | None = None, progress_every_s: float | None = None
              ) -> list:
    """The Tune callbacks that write the terminal's lines (:class:`zray.search.progress.TrialLines`):
    each epoch, the time estimate once a speed is known (once per experiment
    when ``estimate_file`` is given: it is left there), how far a long epoch has come (from the
    files in ``progress_dir``), and how each trial ended; and the one
    that gives back the workers of the trials Tune ended where Ray Train did not
    (:class:`zray.ray_workarounds.ReturnWorkerGroups`)."""
    from zray.ray_workarounds import ReturnWorkerGroups
    from zray.search.progress import TrialLines
    from zray.train import plan_of

    plan = plan_of(space, manifest, trials=trials, concurrent=concurrent)
    epochs = int(space.default_hyperparameters()["epochs"])
    res = space.resources
    worker = {"CPU": res.cpus_per_worker, "GPU": res.gpus_per_worker}
    # A group shaped as a trial's own (Tune's, {"CPU": trial_cpus}) is never swept.
    same_as_trial = {k: v for k, v in worker.items() if v} == {"CPU": res.trial_cpus}
    return [TrialLines(space.tune.metric, space.tune.mode, epochs, plan=plan, estimate_file=estimate_file,
                       trial_lines=trial_lines, progress_dir=progress_dir, progress_every_s=progress_every_s),
            ReturnWorkerGroups(worker_bundle=None if same_as_trial else worker)]


class TuneInterruption(logging.Filter):
    """Whether Ctrl-C ended ``Tuner.fit()``, and Tune's note on resuming in Python kept off the terminal.

    On SIGINT Tune saves its state and returns from ``fit`` as if the experiment were done; the one
    place it says otherwise is its own log (``ray.tune.tune``): "Stop signal received ..." from its
    signal handler, then "Experiment has been interrupted ... Tuner.restore(path=..., trainable=...)".
    This filter, on that logger for the length of ``fit``, notes either (``interrupted``), says the
    first as a zray line, and drops both: ``zray tune`` and ``zray train`` print the command that
    resumes instead of the ``Tuner.restore`` advice. ``tests/test_tune.py`` and ``tests/test_train.py``
    interrupt a real search and run, and fail if Tune's wording changes.
    """

    STOPPING, STOPPED = "Stop signal received", "has been interrupted"

    def __init__(self) -> None:
        super().__init__()
        self.interrupted = False

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if self.STOPPING in message:
            LOG.info("Ctrl-C: stopping, and saving what resuming needs (Ctrl-C again skips that)")
        self.interrupted = self.interrupted or self.STOPPING in message or self.STOPPED in message
        return self.STOPPING not in message and "Tuner.restore(" not in message


@contextlib.contextmanager
def watch_for_interruption():
    """``with watch_for_interruption() as watch: tuner.fit()``; then ``watch.interrupted``."""
    tune_logger = logging.getLogger("ray.tune.tune")  # Tune's module logger, where the notes come from
    watch = TuneInterruption()
    tune_logger.addFilter(watch)
    try:
        yield watch
    finally:
        tune_logger.removeFilter(watch)

"""The driver side of a training run: datasets, the Ray Train trainer, and ``zray train``.

The driver (``zray train``, or one Tune trial) reads the data's splits with
Ray Data, scales and crops the pixels once, keeps the result in Ray's object
store when it fits (re-reading and decoding Parquet every epoch costs 5-10x)
and streams it otherwise. Each worker, running
:func:`zray.train.worker.worker_loop`, trains in every epoch on its own
uniformly random, disjoint part of the training split, drawn again each
epoch from the run's seed (:mod:`zray.data.epochs`), whether the split is in
memory or streamed from its Parquet row groups.

    >>> from zray import config, train
    >>> space = config.load("search_spaces/quickstart.yaml", ["fixed.epochs=2"])  # doctest: +SKIP
    >>> result = train.run(space, runs_dir="runs")                                 # doctest: +SKIP
    >>> result["metrics"]["val_sigma_mad"]                                         # doctest: +SKIP
    0.031
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from zray.console import LOG
from zray.errors import ZrayError, last_error_line
from zray.train.checkpoints import complete_checkpoints, divergence, read_state
from zray.train.job import DIVERGED_FILE, PROGRESS_DIR, TrainJob

__all__ = ["prepare_datasets", "RunData", "make_trainer", "run", "skipped_fields", "failure_reason"]

# Keep a dataset in the object store when it takes at most this share of it.
MATERIALIZE_FRACTION = 0.4


@dataclass
class RunData:
    """The data of every run (trial) of an experiment, prepared once by the driver.

    ``train``: an :class:`~zray.data.epochs.InMemorySplit` or
    :class:`~zray.data.epochs.StreamedSplit`, read by every worker in a fresh
    order each epoch. ``val``: a Ray dataset (materialised when it fits) that
    rank 0 reads whole after every epoch.
    """

    train: Any
    val: Any

    @property
    def val_in_memory(self) -> bool:
        from ray.data.dataset import MaterializedDataset

        return isinstance(self.val, MaterializedDataset)


def prepare_datasets(data_path: str | Path, image_size: int, shards=None,
                     shuffle_buffer: int | None = None) -> RunData:
    """The training and validation splits, pixels scaled and cropped, kept in memory when they fit.

    ``shards`` (a :class:`zray.data.pipeline.ShardCheck`, default: a strict
    footer check of every shard) says which files to read; a shard whose rows
    turn out undecodable stops the run naming it, or with ``skip_corrupt`` is
    dropped and counted in ``shards.skipped``. ``shuffle_buffer``: rows a
    worker mixes at a time when the training split is streamed.
    """
    import ray

    from zray.data import pipeline
    from zray.data.epochs import SHUFFLE_BUFFER_ROWS, InMemorySplit, StreamedSplit
    from zray.data.shards import read_manifest

    manifest = read_manifest(data_path)
    splits = ("train", "val")
    for split in splits:
        if manifest.rows.get(split, 0) == 0:
            raise ZrayError(f"{data_path}: the {split} split is empty; expected rows in it to train")
    if shards is None:
        shards = pipeline.check_shards(data_path, splits)
    store = ray.available_resources().get("object_store_memory", 0.0)
    read = {}
    for split in splits:
        n_rows = manifest.rows.get(split, 0)
        size_mb = n_rows * image_size * image_size * 5 * 4 / 1e6
        in_memory = size_mb * 1e6 <= MATERIALIZE_FRACTION * store
        if split == "val":
            read[split] = _read(data_path, split, image_size, shards, in_memory)
        elif in_memory:  # the dataset's own blocks are kept; the dataset itself is let go
            read[split] = InMemorySplit.from_dataset(_read(data_path, split, image_size, shards, True))
        else:
            _screen(shards, split)
            read[split] = StreamedSplit.from_files(shards.files[split], image_size,
                                                   shuffle_buffer or SHUFFLE_BUFFER_ROWS, z_range=shards.z_range)
        how = ("kept in Ray's object store" if in_memory
               else f"streamed from Parquet each epoch (object store {store / 1e6:.0f} MB)")
        LOG.info(f"{split} split: {n_rows} rows, {size_mb:.0f} MB, {how}")
    return RunData(train=read["train"], val=read["val"])


def _screen(shards, split: str) -> None:
    """With skip_corrupt, drop a streamed split's undecodable shards now: its rows are
    read inside the workers, too late to leave a file out."""
    from zray.data import pipeline

    if shards.skip_corrupt:
        while bad := pipeline.find_unreadable(shards.files[split]):
            shards.reject(split, *bad)


def _read(data_path, split: str, image_size: int, shards, in_memory: bool):
    """One split as a Ray dataset; materialised when ``in_memory``, dropping
    (with skip_corrupt) or naming (without) a shard that fails to decode."""
    from zray.data import pipeline

    if not in_memory:
        _screen(shards, split)
    while True:
        ds = pipeline.read_split(data_path, split, files=shards.files[split]).map_batches(
            _scale_and_crop, fn_kwargs={"image_size": image_size, "z_range": shards.z_range},
            batch_format="numpy", batch_size=256,
        )
        if not in_memory:
            return ds
        try:
            return ds.materialize()
        except Exception:
            bad = pipeline.find_unreadable(shards.files[split])
            if bad is None:
                raise
            shards.reject(split, *bad)  # raises unless skip_corrupt


def _scale_and_crop(batch: dict[str, np.ndarray], image_size: int,
                    z_range: tuple[float, float] | None = None) -> dict[str, np.ndarray]:
    """Network-ready rows; with ``z_range``, only those whose z_spec lies in it."""
    from zray.data.cutouts import crop_centre
    from zray.data.pipeline import preprocess_batch

    if z_range is not None:
        z = np.asarray(batch["z_spec"])
        keep = (z >= z_range[0]) & (z < z_range[1])
        if not keep.all():
            batch = {k: np.asarray(v)[keep] for k, v in batch.items()}

    image = crop_centre(preprocess_batch(batch)["image"], image_size, axes=(1, 2))
    return {
        "id": np.asarray(batch["id"], dtype=np.int64),
        "image": np.ascontiguousarray(image, dtype=np.float32),
        "ebv": np.asarray(batch["ebv"], dtype=np.float32),
        "z_spec": np.asarray(batch["z_spec"], dtype=np.float32),
    }


def _worker_entry(config: dict[str, Any]) -> None:
    """What Ray Train runs in each worker. TensorFlow is imported there, not in the driver."""
    from zray.train.worker import worker_loop

    worker_loop(config["job"], config["data"])


def make_trainer(job: TrainJob, *, datasets: RunData | None, storage_path: str | Path, name: str,
                 gpus_per_worker: float | None = None, max_failures: int = 2, callbacks: list | None = None):
    """Ray Train's trainer for ``job``; run it with ``.fit()``.

    ``datasets``: what :func:`prepare_datasets` returned (None: a trainer
    that is only inspected, never run).

    ``gpus_per_worker`` overrides the job's own (``job.gpus_per_worker``) when
    given. ``storage_path`` is a folder (shared by all nodes on a cluster) or
    an object-store URI such as ``s3://bucket/zray/NAME/trials``. Ray keeps the
    two checkpoints best by the job's metric (``job.metric``, ``job.mode``).
    Ray Train's own placement-group cleaner gives a run's CPUs back if its
    controller dies (a trial Tune stops).

    Ray's ``TensorflowTrainer`` is its ``DataParallelTrainer`` with a
    ``TensorflowConfig``, which writes each worker's ``TF_CONFIG`` for
    ``MultiWorkerMirroredStrategy``. Importing ``ray.train.tensorflow`` imports
    TensorFlow, so with it the trial's process (which builds the trainer) and
    Ray Train's controller (which unpickles the config) each load TensorFlow
    before the first worker starts: about 8 s and 800 MB each, one after the
    other. A run of one worker needs no ``TF_CONFIG`` (it trains under
    TensorFlow's default strategy), so it gets the plain ``DataParallelTrainer`` and
    only the worker imports TensorFlow; runs of several workers get Ray's
    ``TensorflowConfig``.
    """
    from ray.train import CheckpointConfig, DataConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig
    from ray.train.v2.api.data_parallel_trainer import DataParallelTrainer

    from zray import storage as st

    if st.is_uri(storage_path):
        storage_path = str(storage_path)
        run_dir = st.join(storage_path, name)
    else:
        storage_path = str(Path(storage_path).resolve())
        run_dir = str(Path(storage_path) / name)
        Path(run_dir).mkdir(parents=True, exist_ok=True)
    st.remove(st.join(run_dir, DIVERGED_FILE))
    if gpus_per_worker is None:
        gpus_per_worker = job.gpus_per_worker
    job = replace(job, run_dir=run_dir, gpus_per_worker=float(gpus_per_worker))
    resources = {"CPU": job.cpus_per_worker}
    # A streamed validation split goes through Ray Train (whole, to rank 0); one in
    # memory travels with the config, by reference, like the training split.
    ray_datasets = {"val": datasets.val} if datasets is not None and not datasets.val_in_memory else {}
    if gpus_per_worker:
        resources["GPU"] = gpus_per_worker
    backend_config = None  # one worker: Ray's default backend, no TF_CONFIG
    if job.num_workers > 1:
        from ray.train.tensorflow import TensorflowConfig  # imports TensorFlow (here and in the controller)

        backend_config = TensorflowConfig()
    return DataParallelTrainer(
        _worker_entry,
        backend_config=backend_config,
        train_loop_config={"job": asdict(job), "data": datasets},
        scaling_config=ScalingConfig(num_workers=job.num_workers, use_gpu=gpus_per_worker > 0,
                                     resources_per_worker=resources),
        datasets=ray_datasets,
        dataset_config=DataConfig(datasets_to_split=[]),
        run_config=RunConfig(
            name=name,
            storage_path=storage_path,
            failure_config=FailureConfig(max_failures=max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=2, checkpoint_score_attribute=job.metric,
                                               checkpoint_score_order=job.mode),
            callbacks=callbacks or [],
            logging_config=LoggingConfig(log_level="WARNING"),
        ),
    )


def run(space, *, runs_dir: str | Path = "runs", name: str | None = None, max_failures: int = 2,
        dashboard_host: str = "127.0.0.1", record_ids_dir: str | None = None,
        extra: dict | None = None) -> dict[str, Any]:
    """One training run of ``space`` at its default hyperparameters: a search of one
    trial (:mod:`zray.experiment`), whose Ray Train run is ``runs_dir/NAME``.

    Started again with the same name and output, it resumes from the last
    checkpoint (Ray Train restores its checkpoint manager from storage). Ray
    Train restarts the workers up to ``max_failures`` times after a failure.
    ``record_ids_dir`` and ``extra`` are test instruments (:mod:`zray.train.faults`).
    ``interrupted`` in the result is True when Ctrl-C ended the run (Tune then returns as if
    it were done): its last checkpoint is where the same call continues.
    """
    from ray import tune

    from zray import experiment
    from zray.config import run_identity
    from zray.console import is_verbose
    from zray.paths import check_name
    from zray.runtime import init_ray
    from zray.storage import Place, check_local_folder

    if name is not None:
        check_name(name, "name")  # one folder under runs_dir, never a path out of it
    check_local_folder(runs_dir, "--runs")
    data = experiment.check_data(space)
    hp = space.default_hyperparameters()
    identity = run_identity(space.model, hp, data.manifest.hash)
    name = name or f"{space.name}-train-{identity}"
    init_ray(dashboard_host=dashboard_host)
    place = Place.of(runs_dir, name)  # the run's folder: its checkpoints, and Tune's record in tune/
    run_dir = place.local
    progress_dir = None if place.remote else place.file(PROGRESS_DIR)
    ctx = experiment.trial_context(space, data, place.storage, hyperparameters=hp, record_ids_dir=record_ids_dir,
                                   run_name=name, max_failures=max_failures,
                                   job_extra={"extra": extra} if extra else None, progress_dir=progress_dir)
    lines = experiment.callbacks(space, data.manifest, trials=1, concurrent=1, estimate_file=None,
                                 trial_lines=False, progress_dir=progress_dir,
                                 progress_every_s=(extra or {}).get("progress_every_s"))
    run_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    tuner = tune.Tuner(
        # The trial process only waits for its Ray Train run: no CPU of its own (Tune
        # refuses a trial of no resources at all: one byte of memory stands for them).
        tune.with_resources(tune.with_parameters(experiment.trial_function, ctx=ctx), {"cpu": 0, "memory": 1}),
        run_config=tune.RunConfig(
            # Tune's record of the run (result.json, TensorBoard events) beside its checkpoints.
            name=TUNE_DIR, storage_path=str(run_dir), verbose=1 if is_verbose() else 0, callbacks=lines,
            failure_config=tune.FailureConfig(max_failures=0),
        ),
        tune_config=tune.TuneConfig(num_samples=1, trial_dirname_creator=lambda trial: "trial",
                                    trial_name_creator=lambda trial: name),
    )
    try:
        with experiment.progress_folder(progress_dir), experiment.watch_for_interruption() as watch:
            grid = tuner.fit()
        error = str(grid[0].error) if grid.num_errors else None
    except Exception:  # noqa: BLE001 - Tune reads its pickled record of the failed trial back, and
        # raises when that record was cut short (a full disk): its text copy tells what happened
        error = _error_text(run_dir)
    reason = divergence(run_dir)
    if reason:
        raise ZrayError(f"training run {name} failed: {reason}; try a lower learning_rate")
    if error is not None:
        raise ZrayError(f"training run {name} failed: {_trial_sentence(error, run_dir)}") from None
    found = complete_checkpoints(run_dir)
    state = read_state(found[-1]) if found else {}
    return {
        "name": name, "identity": identity, "run_dir": str(run_dir),
        "checkpoint": str(found[-1]) if found else None,
        "metrics": state.get("metrics", {}), "history": state.get("history", []),
        "wall_time_s": time.perf_counter() - t0, "hyperparameters": hp,
        "rows_skipped": data.shards.rows_skipped, "skipped": data.shards.skipped, "baselines": data.baselines,
        "rows_out_of_range": data.shards.rows_out_of_range, "interrupted": watch.interrupted,
    }


# Where `zray train` keeps Tune's record of its run, inside the run's folder.
TUNE_DIR = "tune"


def _error_text(run_dir: Path) -> str:
    """The failed trial's error.txt, as Tune wrote it (as much as a full disk let it)."""
    try:
        text = (run_dir / TUNE_DIR / "trial" / "error.txt").read_text(errors="replace")
    except OSError:
        text = ""
    if not text.strip() and _no_space(run_dir):
        text = "No space left on device"
    return text


def _trial_sentence(text: str, run_dir: Path) -> str:
    """The sentence the failed trial raised (:func:`zray.experiment.trial_function`)."""
    for line in reversed(text.strip().splitlines()):
        if "RuntimeError: " in line:
            return line.split("RuntimeError: ", 1)[1].strip()
    return failure_reason(RuntimeError(text or "failed"), str(run_dir))


def _no_space(folder: Path) -> bool:
    import shutil

    try:
        return shutil.disk_usage(folder).free == 0
    except OSError:
        return False


def skipped_fields(shards) -> dict[str, Any]:
    """The TrainJob fields a ShardCheck fills: the skipped shards, and the rows trained on."""
    return {"rows_skipped": shards.rows_skipped, "skipped_files": [p for p, _, _ in shards.skipped],
            "train_rows": sum(shards.rows.get(f, 0) for f in shards.files.get("train", []))
            - (shards.out_of_range.get("train", 0) if shards.z_range else 0)}


def failure_reason(error: BaseException, run_dir: str) -> str:
    """One sentence for a failed run: a worker's :class:`ZrayError` as it was
    raised (Ray wraps it in traceback text), a full disk under ``run_dir``
    wherever Ray met it (its controller also writes there), else the
    innermost error line."""
    text = str(error).strip().splitlines()
    for line in reversed(text):
        if "ZrayError: " in line:
            return line.split("ZrayError: ", 1)[1].strip()
    if any("No space left on device" in line or "errno 28" in line.lower() for line in text):
        return (
            f"{run_dir}: no space left on device while writing the run's checkpoints; the last "
            "whole checkpoint is kept; expected free space in the storage folder (free some, or "
            "give another --runs/--storage)"
        )
    return last_error_line(str(error))

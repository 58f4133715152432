"""The loop each Ray Train worker runs: set up, restore, then per epoch train,
validate, checkpoint and report.

In every epoch each worker trains on its own uniformly random, disjoint part
of the training split, drawn again for the next epoch from the run's seed
and the epoch number (:mod:`zray.data.epochs`; equal row counts, so every
worker runs the same number of steps and the gradient all-reduce never waits
on one that ran out of data) under ``MultiWorkerMirroredStrategy``. Rank 0 also
validates; every worker writes the checkpoint (the
save may use collectives) and rank 0's copy is kept.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import ray.train

from zray.models import ModelSpec, build_model, keras
from zray.ray_workarounds import WORKER_GROUP_KEY

k = keras()  # sets TF_USE_LEGACY_KERAS before TensorFlow is imported
import tensorflow as tf  # noqa: E402

from zray.train import steps  # noqa: E402
from zray.train.checkpoints import (  # noqa: E402
    STATE_FILE,
    WEIGHTS_PREFIX,
    check_resumable,
    file_sizes,
    latest_checkpoint,
    read_state,
    upload_checkpoint,  # noqa: E402
)
from zray.train.faults import Instruments  # noqa: E402
from zray.train.job import (  # noqa: E402
    DIVERGED_FILE,
    DIVERGENCE_LOSS,
    PROGRESS_EVERY_S,
    TrainJob,
    learning_rate,
    model_hp,
    progress_record,
)

__all__ = ["worker_loop"]

# Rank 0 keeps in-memory validation data up to this size as arrays between epochs:
# reading it through Ray Data again cost each epoch 0.05-0.1 s, most of the time
# between two epochs of a small search.
KEEP_VAL_BYTES = 256 * 2**20


class Diverged(Exception):
    """The all-reduced loss blew up: every worker stops at the same step."""


@dataclass
class _Worker:
    """One worker's state across epochs."""

    job: TrainJob
    rank: int
    world: int
    model: Any
    optimizer: Any
    ckpt: Any
    train_step: Any
    predict_step: Any
    start_epoch: int = 0
    history: list = field(default_factory=list)


def worker_loop(job_fields: dict[str, Any], data) -> None:
    """The per-worker training loop (runs inside a Ray Train worker).

    ``job_fields``: a :class:`TrainJob` as a dict. ``data``: the
    :class:`zray.train.RunData` the driver prepared; a validation split that
    is streamed arrives through Ray Train (``get_dataset_shard``).
    """
    from zray.runtime import quiet_logs

    quiet_logs(load=False)  # Ray Data is loaded here already; Optuna is not needed
    job = TrainJob(**job_fields)
    w = _set_up(job)
    restored = _restore(w)
    instruments = Instruments(job, w.rank, w.world, w.start_epoch, w.model)
    train = data.train
    if w.rank != 0:
        val_batches = None
    elif data.val_in_memory:
        val_batches = _kept_batches(data.val)
    else:
        val_shard = ray.train.get_dataset_shard("val")
        val_batches = lambda: _batches(val_shard)  # noqa: E731
    epochs = int(job.hyperparameters["epochs"])
    if restored and w.start_epoch >= epochs and w.history:
        # Already trained to the end: the process that was to hear the last
        # report (a Tune driver killed just then) hears it again, or a resumed
        # trial would end with no metric at all.
        ray.train.report(w.history[-1])
    for epoch in range(w.start_epoch, epochs):
        try:
            metrics = _train_one_epoch(w, epoch, train, instruments)
        except Diverged as exc:
            if w.rank == 0 and job.run_dir:
                from zray import storage as st

                st.write_text(st.join(job.run_dir, DIVERGED_FILE), str(exc))
            return
        if w.rank == 0:
            metrics.update(steps.validate(val_batches(), w.predict_step, job.bins))
            metrics["node_id"] = ray.get_runtime_context().get_node_id()  # which node trained
            w.history.append(metrics)
        _save_and_report(w, epoch, metrics)
        instruments.epoch_done(epoch, metrics["steps"])


def _set_up(job: TrainJob) -> _Worker:
    """Threads, precision, the distribution strategy, model and optimizer."""
    ctx = ray.train.get_context()
    threads = max(1, int(round(job.cpus_per_worker)))
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(max(2, threads))
    except RuntimeError:
        pass  # already initialised in this process (a restarted loop)
    mixed = steps.set_precision(job, k, tf) == "mixed_float16"
    # A lone worker keeps TensorFlow's default strategy: a multi-worker one would
    # set up collectives and all-reduce every step with nobody else.
    strategy = (tf.distribute.MultiWorkerMirroredStrategy() if ctx.get_world_size() > 1
                else tf.distribute.get_strategy())
    hp = job.hyperparameters
    # The initial weights follow the run's seed (the same on every worker): two runs
    # that differ only in how their data are stored start from the same network.
    k.utils.set_random_seed(int(job.seed))
    with strategy.scope():
        model = build_model(job.model, model_hp(job), ModelSpec(image_size=job.image_size, bins=job.bins))
        optimizer = k.optimizers.Adam(learning_rate=float(hp["learning_rate"]))
        if mixed:
            optimizer = k.mixed_precision.LossScaleOptimizer(optimizer)  # float16 gradients do not underflow
        optimizer.build(model.trainable_variables)
    loss = steps.make_loss(job.bins, float(hp["label_sigma"]))
    return _Worker(
        job=job, rank=ctx.get_world_rank(), world=ctx.get_world_size(), model=model, optimizer=optimizer,
        ckpt=tf.train.Checkpoint(model=model, optimizer=optimizer),
        train_step=steps.make_train_step(model, optimizer, loss, strategy=strategy,
                                         augment=bool(hp["augment"]), mixed=mixed),
        predict_step=steps.make_predict_step(model),
    )


def _restore(w: _Worker) -> bool:
    """Load the newest whole checkpoint of this run, if any; True if one was loaded."""
    job = w.job
    restored = latest_checkpoint(ray.train.get_checkpoint(), job.run_dir)
    if restored is None:
        return False
    with restored.as_directory() as directory:
        state = read_state(directory)
        check_resumable(directory, state, job)
        w.ckpt.read(os.path.join(directory, WEIGHTS_PREFIX)).assert_existing_objects_matched()
        w.start_epoch = int(state["epoch"]) + 1
        w.history = list(state["history"])
    return True


def _train_one_epoch(w: _Worker, epoch: int, train, instruments: Instruments) -> dict[str, Any]:
    """One pass over this worker's part of the epoch; the epoch's training figures."""
    job, hp = w.job, w.job.hyperparameters
    lr = learning_rate(hp, epoch)
    w.optimizer.learning_rate.assign(lr)
    batch_size = max(1, int(hp["batch_size"]) // w.world)  # batch_size is the global batch
    clock = _Clock(epoch)
    progress = _ProgressFile(job, epoch, total=getattr(train, "n_rows", 0) // w.world * w.world) \
        if w.rank == 0 and job.progress_file else None
    total_loss, n_steps, rows = 0.0, 0, 0
    batches = train.epoch_batches(epoch=epoch, rank=w.rank, world=w.world, batch_size=batch_size, seed=job.seed)
    with contextlib.closing(batches):  # its reading threads stop even if the loop does not end
        for batch in batches:
            instruments.step(epoch, n_steps, batch)
            n = len(batch["id"])
            seed = tf.constant([job.seed * 7919 + epoch, n_steps * 131 + w.rank], dtype=tf.int64)
            loss = float(w.train_step(
                tf.convert_to_tensor(batch["image"]), tf.convert_to_tensor(batch["ebv"].reshape(-1, 1)),
                tf.convert_to_tensor(batch["z_spec"]), seed, tf.constant(n * w.world, dtype=tf.int32),
            ))
            if not math.isfinite(loss) or loss > DIVERGENCE_LOSS:
                raise Diverged(f"training loss became {loss:.3g} at epoch {epoch + 1}, step {n_steps + 1} "
                               f"(learning rate {lr:g}); the run diverged")
            total_loss, n_steps, rows = total_loss + loss, n_steps + 1, rows + n
            clock.tick(n * w.world)
            if progress is not None:
                progress.tick(rows * w.world, clock)
    train_time, steady = clock.done()
    metrics = {
        "epoch": epoch + 1, "loss": total_loss / max(n_steps, 1), "lr": lr, "steps": n_steps,
        "train_rows": rows * w.world, "rows_skipped": job.rows_skipped, "restored_epochs": w.start_epoch,
        "epoch_time_s": train_time,
        "train_images_per_s": rows * w.world / train_time if train_time > 0 else 0.0,
    }
    if steady is not None:
        metrics["steady_images_per_s"] = steady  # the time estimate's speed (first epoch)
    return metrics


def _save_and_report(w: _Worker, epoch: int, metrics: dict[str, Any]) -> None:
    """Write this epoch's checkpoint and report it with the metrics to Ray Train."""
    with tempfile.TemporaryDirectory(prefix="zray-ckpt-") as tmp:
        w.ckpt.write(os.path.join(tmp, WEIGHTS_PREFIX))
        state = {
            "epoch": epoch, "history": w.history, "job": asdict(w.job), "metrics": metrics,
            "files": file_sizes(tmp),  # what a whole copy holds: checkpoint_complete() checks it
        }
        Path(tmp, STATE_FILE).write_text(json.dumps(state, indent=1))
        checkpoint = ray.train.Checkpoint.from_directory(tmp) if w.rank == 0 else None
        reported = metrics
        if w.rank == 0:  # to Tune only, not the checkpoint: which placement group the run's workers
            # hold, for the driver to remove if Ray does not (zray.ray_workarounds.ReturnWorkerGroups)
            reported = {**metrics, WORKER_GROUP_KEY: ray.get_runtime_context().get_placement_group_id() or ""}
        ray.train.report(reported, checkpoint=checkpoint, checkpoint_upload_fn=upload_checkpoint)


def _batches(val_shard):
    return val_shard.iter_batches(batch_size=512, batch_format="numpy", prefetch_batches=1)


def _kept_batches(val):
    """Each epoch's validation batches of an in-memory dataset: read once and kept
    when it is at most KEEP_VAL_BYTES, read through Ray Data every epoch otherwise."""
    if val.size_bytes() > KEEP_VAL_BYTES:
        return lambda: _batches(val)
    kept = list(_batches(val))
    return lambda: kept


class _Clock:
    """An epoch's training time and its speed after the first step (which traces the graph): in
    the first epoch, what the time estimate is made from."""

    def __init__(self, epoch: int) -> None:
        self.t0 = time.perf_counter()
        self.first_epoch = epoch == 0
        self.steady_t0, self.steady_rows = None, 0

    def tick(self, step_rows: int) -> None:
        if self.steady_t0 is None:
            self.steady_t0 = time.perf_counter()  # after the first step
            return
        self.steady_rows += step_rows

    def steady_seconds(self, now: float) -> float:
        """Seconds since the first step ended (what :meth:`speed` is measured over)."""
        return now - self.steady_t0 if self.steady_t0 is not None else 0.0

    def speed(self, now: float | None = None) -> float | None:
        """Images per second since the first step, once a step after it has ended."""
        now = time.perf_counter() if now is None else now
        if not self.steady_rows or self.steady_t0 is None or now <= self.steady_t0:
            return None
        return self.steady_rows / (now - self.steady_t0)

    def done(self) -> tuple[float, float | None]:
        """The epoch's training time, and in the first epoch the steady speed (images/s) if measured."""
        end = time.perf_counter()
        return end - self.t0, self.speed(end) if self.first_epoch else None


class _ProgressFile:
    """Rank 0's progress within an epoch, written to ``job.progress_file`` every
    ``PROGRESS_EVERY_S`` seconds (``job.extra["progress_every_s"]`` in tests): how many of the
    epoch's rows are trained and at what speed, for the driver's lines
    (:class:`zray.search.progress.TrialLines`). Best effort: a write that fails is not retried."""

    def __init__(self, job: TrainJob, epoch: int, total: int) -> None:
        self.path, self.epoch, self.total = job.progress_file, epoch + 1, int(total)
        self.every = float(job.extra.get("progress_every_s", PROGRESS_EVERY_S))
        self.last = time.perf_counter()

    def tick(self, rows: int, clock: _Clock) -> None:
        now = time.perf_counter()
        if now - self.last < self.every or self.path is None:
            return
        self.last = now
        text = json.dumps(progress_record(self.epoch, rows, max(self.total, rows), clock.speed(now), time.time(),
                                          clock.steady_seconds(now)))
        try:
            _write_whole(self.path, text)
        except OSError:
            self.path = None  # storage that cannot take it: the epoch lines still come


def _write_whole(path: str, text: str) -> None:
    """Write ``text`` so that a reader sees the old file or the new one, never half of it. The
    folder is the driver's (made before the search, removed after it): a worker still writing
    after the search returned (Ctrl-C) fails here instead of bringing the folder back."""
    target = Path(path)
    part = target.with_name(f".{target.name}.{os.getpid()}.part")
    part.write_text(text)
    os.replace(part, target)

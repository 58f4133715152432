"""One training run: Ray Data shards into Ray Train TensorFlow workers.

The driver (``zray train``, or one Tune trial) reads the data's splits with
Ray Data, scales the pixels once, keeps the result in Ray's object store when
it fits (re-reading and decoding Parquet every epoch costs 5-10x,
docs/architecture.md section 2) and streams it otherwise. Ray Train splits the training split
between the workers with ``streaming_split(equal=True)``: every epoch each
worker sees its own disjoint part, all parts have the same number of rows, so
every worker runs the same number of steps and the gradient all-reduce never
waits on a worker that has run out of data.

Each worker runs :func:`worker_loop`: a ``MultiWorkerMirroredStrategy``
training step compiled with ``tf.function``, the learning-rate schedule,
validation on rank 0 with the photo-z metrics, and a checkpoint every epoch
holding weights, optimizer state, epoch, history, configuration and the data
manifest's hash.
"""

from __future__ import annotations

import errno
import json
import math
import os
import signal
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from zray.bins import RedshiftBins
from zray.errors import ZrayError, last_error_line

STATE_FILE = "state.json"
WEIGHTS_PREFIX = "tf/ckpt"
# Cross-entropy over a few hundred bins starts near log(n_bins) ~ 5 and a
# working run stays well below 50; past this the weights have blown up.
DIVERGENCE_LOSS = 1.0e3
# A diverged run leaves its reason in this file of its run folder.
DIVERGED_FILE = "diverged.txt"
# Keep a dataset in the object store when it takes at most this share of it.
MATERIALIZE_FRACTION = 0.4


@dataclass
class TrainJob:
    """Everything a worker needs, as plain data (it crosses process boundaries)."""

    model: str
    hyperparameters: dict[str, Any]
    data_path: str
    image_size: int
    z_min: float
    z_max: float
    n_bins: int
    manifest_hash: str
    seed: int = 0
    num_workers: int = 1
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0
    # float16 compute with float32 weights (tf_keras mixed_float16), on GPUs only.
    mixed_precision: bool = False
    record_ids_dir: str | None = None
    # Where the run keeps its checkpoints; a diverged run leaves its reason
    # there rather than raising (a retry would only diverge again).
    run_dir: str | None = None
    # Rows of shards skipped as corrupt (data.skip_corrupt), reported every epoch.
    rows_skipped: int = 0
    skipped_files: list[str] = field(default_factory=list)
    # Fault injection for tests and scripts/chaos.py: {"fail_after_epoch": N}
    # raises after epoch N's (0-based) checkpoint; {"kill_at": {"epoch": E,
    # "step": S, "rank": R}} SIGKILLs rank R's process before step S of epoch
    # E (both 1-based), once per run (a marker in run_dir stops the retry).
    extra: dict[str, Any] = field(default_factory=dict)
    # What the whole job is, for the time estimate printed early in the first
    # epoch (see :func:`estimate_line`): {"trials", "concurrent", "train_rows",
    # "val_rows", "what"}; empty for no estimate.
    plan: dict[str, Any] = field(default_factory=dict)
    # Rows of the training split (for the progress line inside an epoch).
    train_rows: int = 0

    @property
    def bins(self) -> RedshiftBins:
        return RedshiftBins(self.z_min, self.z_max, self.n_bins)


# Fixed cost of one Ray Train run on top of its epochs (worker start-up,
# TensorFlow import, dataset planning), as measured on 2 cores.
RUN_OVERHEAD_S = 20.0
# Seconds of steady training the estimate waits for.
ESTIMATE_AFTER_S = 10.0
# The estimate, kept beside a search's run folders once printed.
ESTIMATE_FILE = "estimate.txt"


def estimate_line(job: TrainJob, images_per_s: float) -> str:
    """The time estimate from the first steps' speed, with the overrides that shorten it.

    An upper bound: every trial runs all its epochs (a scheduler such as ASHA
    stops poor trials earlier), validation runs at about three times the
    training speed, and each run pays :data:`RUN_OVERHEAD_S` of start-up.
    """
    plan, hp = job.plan, job.hyperparameters
    epochs = int(hp["epochs"])
    rate = max(images_per_s, 1e-6)
    epoch_s = plan["train_rows"] / rate + plan.get("val_rows", 0) / (3 * rate)
    run_s = epochs * epoch_s + RUN_OVERHEAD_S
    trials = int(plan.get("trials", 1))
    waves = math.ceil(trials / max(int(plan.get("concurrent", 1)), 1))
    total = waves * run_s
    text = (f"zray: estimate: {rate:.0f} img/s here, so an epoch takes about {_duration(epoch_s)} "
            f"and one run of {epochs} epochs about {_duration(run_s)}")
    if trials > 1:
        text += f"; the search of {trials} trials at most about {_duration(total)}"
    if total > 15 * 60:
        short_epochs = max(2, epochs // 3)
        flags = f"--set fixed.epochs={short_epochs}"
        short_total = short_epochs * epoch_s + RUN_OVERHEAD_S
        if trials > 1:
            short_trials = max(2, trials // 4)
            flags += f" --set tune.num_samples={short_trials}"
            short_total *= math.ceil(short_trials / max(int(plan.get("concurrent", 1)), 1))
        text += f". Shorter (about {_duration(short_total)}): {flags}"
        if plan.get("simulated_n", 0) > 2000:
            text += f" --set data.simulate.n=2000 --set data.path={plan['data_path']}-small"
    return text


def _announce_estimate(job: TrainJob, images_per_s: float) -> None:
    """Print the estimate, and leave it beside the run folders so the search's
    later trials do not repeat it."""
    from zray import storage as st

    line = estimate_line(job, images_per_s)
    print(line, flush=True)
    if job.run_dir and int(job.plan.get("trials", 1)) > 1:
        parent = job.run_dir.rstrip("/").rsplit("/", 1)[0]
        st.write_text(st.join(parent, ESTIMATE_FILE), line + "\n")


def plan_of(space, manifest, trials: int = 1, concurrent: int = 1) -> dict[str, Any]:
    """The :attr:`TrainJob.plan` of ``space`` on the dataset of ``manifest``."""
    simulate = space.data.simulate
    return {
        "trials": trials, "concurrent": concurrent,
        "train_rows": manifest.rows["train"], "val_rows": manifest.rows["val"],
        "simulated_n": simulate.n if simulate else 0, "data_path": str(space.data.path),
    }


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def learning_rate(hp: dict[str, Any], epoch: int) -> float:
    """The rate for ``epoch`` (0-based) under ``hp['lr_schedule']``."""
    base = float(hp["learning_rate"])
    epochs = int(hp["epochs"])
    schedule = hp.get("lr_schedule", "constant")
    if schedule == "step":
        return base / float(hp.get("lr_drop_factor", 5.0)) if epoch >= epochs // 2 and epochs > 1 else base
    if schedule == "cosine":
        return base * 0.5 * (1.0 + math.cos(math.pi * epoch / max(epochs, 1)))
    return base


# ---------------------------------------------------------------------------
# Driver side


def prepare_datasets(
    data_path: str | Path, image_size: int, splits=("train", "val"), shards=None
) -> dict:
    """Ray datasets per split, pixels scaled and cropped, kept in memory when they fit.

    ``shards`` (a :class:`zray.data.pipeline.ShardCheck`, default: a strict
    footer check of every shard) says which files to read; a shard whose rows
    turn out undecodable stops the run naming it, or with ``skip_corrupt`` is
    dropped and counted in ``shards.skipped``.
    """
    import ray

    from zray.data import pipeline
    from zray.data.shards import read_manifest

    manifest = read_manifest(data_path)
    for split in splits:
        if manifest.rows.get(split, 0) == 0:
            raise ZrayError(f"{data_path}: the {split} split is empty; expected rows in it to train")
    if shards is None:
        shards = pipeline.check_shards(data_path, splits)
    datasets = {}
    store = ray.available_resources().get("object_store_memory", 0.0)
    for split in splits:
        n_rows = manifest.rows.get(split, 0)
        size_mb = n_rows * image_size * image_size * 5 * 4 / 1e6
        in_memory = size_mb * 1e6 <= MATERIALIZE_FRACTION * store
        if not in_memory and shards.skip_corrupt:
            # Streamed rows are read inside the workers, too late to drop a
            # file: screen every shard once now.
            while bad := pipeline.find_unreadable(shards.files[split]):
                shards.reject(split, *bad)
        while True:
            ds = pipeline.read_split(data_path, split, files=shards.files[split]).map_batches(
                _scale_and_crop,
                fn_kwargs={"image_size": image_size},
                batch_format="numpy",
                batch_size=256,
            )
            if not in_memory:
                break
            try:
                ds = ds.materialize()
                break
            except Exception:
                bad = pipeline.find_unreadable(shards.files[split])
                if bad is None:
                    raise
                shards.reject(split, *bad)  # raises unless skip_corrupt
        if in_memory:
            how = "kept in Ray's object store"
        else:
            how = f"streamed from Parquet each epoch (object store {store / 1e6:.0f} MB)"
        print(f"zray: {split} split: {n_rows} rows, {size_mb:.0f} MB, {how}", flush=True)
        datasets[split] = ds
    return datasets


def _scale_and_crop(batch: dict[str, np.ndarray], image_size: int) -> dict[str, np.ndarray]:
    from zray.data import pipeline

    out = pipeline.preprocess_batch(batch, augment=False, seed=None)
    image = out["image"]
    h = image.shape[1]
    if h != image_size:
        start = (h - image_size) // 2
        image = image[:, start : start + image_size, start : start + image_size, :]
    return {
        "id": np.asarray(batch["id"], dtype=np.int64),
        "image": np.ascontiguousarray(image, dtype=np.float32),
        "ebv": np.asarray(batch["ebv"], dtype=np.float32),
        "z_spec": np.asarray(batch["z_spec"], dtype=np.float32),
    }


def make_trainer(
    job: TrainJob,
    *,
    datasets: dict,
    storage_path: str | Path,
    name: str,
    gpus_per_worker: float | None = None,
    max_failures: int = 2,
    callbacks: list | None = None,
):
    """A TensorflowTrainer for ``job``; run it with ``.fit()``.

    ``gpus_per_worker`` overrides the job's own (``job.gpus_per_worker``) when given.

    ``storage_path`` is a folder (shared by all nodes on a cluster) or an
    object-store URI such as ``s3://bucket/zray/NAME/trials``.
    """
    from ray.train import CheckpointConfig, DataConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.tensorflow import TensorflowTrainer
    from ray.train.v2.api.config import LoggingConfig

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
    if gpus_per_worker:
        resources["GPU"] = gpus_per_worker
    return TensorflowTrainer(
        worker_loop,
        train_loop_config=asdict(job),
        scaling_config=ScalingConfig(
            num_workers=job.num_workers,
            use_gpu=gpus_per_worker > 0,
            resources_per_worker=resources,
        ),
        datasets=datasets,
        dataset_config=DataConfig(datasets_to_split=["train"]),
        run_config=RunConfig(
            name=name,
            storage_path=storage_path,
            failure_config=FailureConfig(max_failures=max_failures),
            checkpoint_config=CheckpointConfig(
                num_to_keep=2,
                checkpoint_score_attribute="val_sigma_mad",
                checkpoint_score_order="min",
            ),
            callbacks=callbacks or [],
            logging_config=LoggingConfig(log_level="WARNING"),
        ),
    )


def checkpoint_complete(checkpoint_dir: str | Path) -> bool:
    """True when ``checkpoint_dir`` holds a whole checkpoint: ``state.json``
    parses and every file it lists is there with its recorded size.

    A checkpoint copy cut short (a full disk, a killed process) fails this;
    zray never picks such a folder to resume, report or export from.
    """
    directory = Path(checkpoint_dir)
    try:
        state = json.loads((directory / STATE_FILE).read_text())
        # Checkpoints from before the file list was recorded: the index suffices.
        files = state.get("files") or {WEIGHTS_PREFIX + ".index": (directory / (WEIGHTS_PREFIX + ".index")).stat().st_size}
    except (OSError, ValueError, AttributeError):
        return False
    if not any(name.startswith(WEIGHTS_PREFIX + ".index") for name in files):
        return False
    for name, size in files.items():
        path = directory / name
        if not path.is_file() or path.stat().st_size != size:
            return False
    return True


def complete_checkpoints(run_dir: str | Path) -> list[Path]:
    """The run's whole checkpoints (see :func:`checkpoint_complete`), oldest epoch first."""
    found = [d for d in Path(run_dir).glob("checkpoint_*") if d.is_dir() and checkpoint_complete(d)]
    return sorted(found, key=lambda d: read_state(d)["epoch"])


def read_state(checkpoint_dir: str | Path) -> dict[str, Any]:
    """The JSON half of a checkpoint: epoch, history, job and manifest hash."""
    path = Path(checkpoint_dir) / STATE_FILE
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ZrayError(f"{path}: unreadable checkpoint state ({exc}); expected JSON written by zray") from None


def load_checkpoint_model(checkpoint_dir: str | Path):
    """Rebuild the model of a checkpoint and load its weights (no optimizer)."""
    import tensorflow as tf

    from zray.models import ModelSpec, build_model

    if not checkpoint_complete(checkpoint_dir):
        raise ZrayError(
            f"{checkpoint_dir}: incomplete checkpoint (state.json or a weights file missing or cut "
            "short); expected a whole checkpoint written by zray"
        )
    state = read_state(checkpoint_dir)
    job = TrainJob(**state["job"])
    model = build_model(job.model, _model_hp(job), ModelSpec(image_size=job.image_size, bins=job.bins))
    tf.train.Checkpoint(model=model).read(str(Path(checkpoint_dir) / WEIGHTS_PREFIX)).expect_partial()
    return model, state


# ---------------------------------------------------------------------------
# Worker side


def _model_hp(job: TrainJob) -> dict[str, Any]:
    from zray.models import model_hyperparameters

    names = model_hyperparameters(job.model)
    return {k: v for k, v in job.hyperparameters.items() if k in names}


def worker_loop(config: dict[str, Any]) -> None:
    """The per-worker training loop (runs inside a Ray Train worker)."""
    import ray.train

    from zray.models import ModelSpec, build_model, keras
    from zray.runtime import quiet_logs

    k = keras()
    import tensorflow as tf

    quiet_logs()

    job = TrainJob(**config)
    hp = job.hyperparameters
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    threads = max(1, int(round(job.cpus_per_worker)))
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(max(2, threads))
    except RuntimeError:
        pass  # already initialised in this process (a restarted loop)

    mixed = set_precision(job, k, tf) == "mixed_float16"
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    with strategy.scope():
        model = build_model(job.model, _model_hp(job), ModelSpec(image_size=job.image_size, bins=job.bins))
        optimizer = k.optimizers.Adam(learning_rate=float(hp["learning_rate"]))
        if mixed:
            # Scales the loss so float16 gradients do not underflow.
            optimizer = k.mixed_precision.LossScaleOptimizer(optimizer)
        optimizer.build(model.trainable_variables)
    ckpt = tf.train.Checkpoint(model=model, optimizer=optimizer)

    start_epoch, history = 0, []
    restored = latest_checkpoint(ray.train.get_checkpoint(), job.run_dir)
    if restored is not None:
        with restored.as_directory() as directory:
            state = read_state(directory)
            if state["job"]["manifest_hash"] != job.manifest_hash:
                raise ZrayError(
                    f"{directory}: checkpoint was trained on data {state['job']['manifest_hash'][:12]}, "
                    f"but {job.data_path} is {job.manifest_hash[:12]}; expected the same data to resume"
                )
            ckpt.read(os.path.join(directory, WEIGHTS_PREFIX)).assert_existing_objects_matched()
            start_epoch = int(state["epoch"]) + 1
            history = list(state["history"])
    if job.record_ids_dir:
        _record_start(job.record_ids_dir, rank, start_epoch, model)

    n_bins = job.n_bins
    bins = job.bins
    # batch_size is the global batch, as in the papers: each worker takes its share.
    batch_size = max(1, int(hp["batch_size"]) // world)
    augment = bool(hp.get("augment", True))
    edges_lo, width = float(bins.z_min), float(bins.width)

    label_sigma = float(hp.get("label_sigma", 0.0))
    centres = tf.constant(bins.centres, dtype=tf.float32)

    def loss_per_row(z, probs):
        """Cross-entropy against the one-hot bin of z, or a Gaussian of width label_sigma."""
        if label_sigma > 0:
            target = tf.exp(-0.5 * tf.square((centres[None, :] - z[:, None]) / label_sigma))
            target = target / tf.reduce_sum(target, axis=1, keepdims=True)
            return k.losses.categorical_crossentropy(target, probs)
        idx = tf.cast(tf.floor((z - edges_lo) / width), tf.int32)
        return k.losses.sparse_categorical_crossentropy(tf.clip_by_value(idx, 0, n_bins - 1), probs)

    @tf.function(reduce_retracing=True)
    def train_step(image, ebv, z, seed, global_rows):
        def step(image, ebv, z, seed):
            if augment:
                image = _dihedral(tf, image, seed)
            with tf.GradientTape() as tape:
                probs = model([image, ebv], training=True)
                per_row = loss_per_row(tf.cast(z, tf.float32), probs)
                loss = tf.reduce_sum(per_row) / tf.cast(global_rows, tf.float32)
                scaled = optimizer.get_scaled_loss(loss) if mixed else loss
            grads = tape.gradient(scaled, model.trainable_variables)
            if mixed:
                grads = optimizer.get_unscaled_gradients(grads)
            optimizer.apply_gradients(zip(grads, model.trainable_variables))
            return loss

        per_replica = strategy.run(step, args=(image, ebv, z, seed))
        return strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)

    @tf.function(reduce_retracing=True)
    def predict_step(image, ebv):
        return model([image, ebv], training=False)

    train_shard = ray.train.get_dataset_shard("train")
    val_shard = ray.train.get_dataset_shard("val") if rank == 0 else None
    epochs = int(hp["epochs"])
    kill_at = job.extra.get("kill_at")
    if restored is not None and start_epoch >= epochs and history:
        # Already trained to the end: the process that was to hear the last
        # report (a Tune driver killed just then) hears it again, or a resumed
        # trial would end with no metric at all.
        ray.train.report(history[-1])

    for epoch in range(start_epoch, epochs):
        lr = learning_rate(hp, epoch)
        optimizer.learning_rate.assign(lr)
        t0 = time.perf_counter()
        total_loss, steps, rows, seen = 0.0, 0, 0, []
        # Time estimate: once, on rank 0, from the first epoch's steady speed.
        estimate_due = bool(job.plan) and rank == 0 and epoch == 0
        steady_t0, steady_rows = None, 0
        last_progress = t0
        for batch in _named_failures(job, train_shard.iter_batches(
            batch_size=batch_size,
            batch_format="numpy",
            local_shuffle_buffer_size=4 * batch_size,
            local_shuffle_seed=job.seed * 100_003 + epoch * 1009 + rank,
            prefetch_batches=2,
        )):
            if kill_at:
                _maybe_kill(job, kill_at, epoch, steps, rank, world)
            n = len(batch["id"])
            seed = tf.constant([job.seed * 7919 + epoch, steps * 131 + rank], dtype=tf.int64)
            loss = train_step(
                tf.convert_to_tensor(batch["image"]),
                tf.convert_to_tensor(batch["ebv"].reshape(-1, 1)),
                tf.convert_to_tensor(batch["z_spec"]),
                seed,
                tf.constant(n * world, dtype=tf.int32),
            )
            loss_value = float(loss)
            if not math.isfinite(loss_value) or loss_value > DIVERGENCE_LOSS:
                # The loss is all-reduced, so every worker stops at the same step.
                reason = (
                    f"training loss became {loss_value:.3g} at epoch {epoch + 1}, step {steps + 1} "
                    f"(learning rate {lr:g}); the run diverged"
                )
                if rank == 0 and job.run_dir:
                    from zray import storage as st

                    st.write_text(st.join(job.run_dir, DIVERGED_FILE), reason)
                return
            total_loss += loss_value
            steps += 1
            rows += n
            if rank == 0 and job.train_rows:
                last_progress = _progress_inside_epoch(job, epoch, epochs, rows * world, t0, last_progress)
            if estimate_due:
                if steady_t0 is None:
                    steady_t0 = time.perf_counter()  # after the first step, which traces the graph
                else:
                    steady_rows += n
                    elapsed = time.perf_counter() - steady_t0
                    if elapsed >= ESTIMATE_AFTER_S:
                        _announce_estimate(job, steady_rows * world / elapsed)
                        estimate_due = False
            if job.record_ids_dir:
                seen.append(np.asarray(batch["id"]))
        train_time = time.perf_counter() - t0
        if estimate_due and steady_rows:  # a short first epoch: estimate from all of it
            _announce_estimate(job, steady_rows * world / (time.perf_counter() - steady_t0))

        metrics = {
            "epoch": epoch + 1,
            "loss": total_loss / max(steps, 1),
            "lr": lr,
            "steps": steps,
            "train_rows": rows * world,
            "rows_skipped": job.rows_skipped,
            "restored_epochs": start_epoch,
            "epoch_time_s": train_time,
            "train_images_per_s": rows * world / train_time if train_time > 0 else 0.0,
        }
        if job.record_ids_dir:
            _record_ids(job.record_ids_dir, epoch, rank, seen, steps)
        if rank == 0:
            metrics.update(_validate(val_shard, predict_step, bins))
            # Which node trained (a string; Tune keeps it in result.json).
            metrics["node_id"] = ray.get_runtime_context().get_node_id()
            history.append(metrics)
            print(_progress_line(metrics, epochs), flush=True)

        with tempfile.TemporaryDirectory(prefix="zray-ckpt-") as tmp:
            # Every worker writes (the save may use collectives); rank 0's is kept.
            ckpt.write(os.path.join(tmp, WEIGHTS_PREFIX))
            state = {
                "epoch": epoch, "history": history, "job": asdict(job), "metrics": metrics,
                # What a whole copy holds: checkpoint_complete() checks it.
                "files": _file_sizes(tmp),
            }
            Path(tmp, STATE_FILE).write_text(json.dumps(state, indent=1))
            checkpoint = ray.train.Checkpoint.from_directory(tmp) if rank == 0 else None
            ray.train.report(metrics, checkpoint=checkpoint, checkpoint_upload_fn=upload_checkpoint)
        if job.extra.get("fail_after_epoch") == epoch:
            # Fault injection for tests and scripts/chaos.py: a crash right
            # after this epoch's checkpoint.
            raise RuntimeError(f"injected failure after epoch {epoch + 1}")


def latest_checkpoint(registered, run_dir: str | None):
    """The checkpoint to resume from: Ray Train's latest registered one, or a
    later whole one in ``run_dir``.

    Ray registers a checkpoint when its controller collects the report, which
    it does on a poll; a worker killed between its upload and that poll leaves
    a whole checkpoint Ray does not know about, and Ray would restart a whole
    epoch (or the run) earlier. zray's checkpoints prove their own
    completeness (:func:`checkpoint_complete`), so the later one is safe to
    use. Only for a local or shared folder; on an object store Ray's choice
    stands.
    """
    import ray.train

    from zray import storage as st

    if not run_dir or st.is_uri(run_dir) or not Path(run_dir).is_dir():
        return registered
    found = complete_checkpoints(run_dir)
    if not found:
        return registered
    newest = found[-1]
    if registered is not None:
        with registered.as_directory() as directory:
            if int(read_state(directory)["epoch"]) >= int(read_state(newest)["epoch"]):
                return registered
    return ray.train.Checkpoint.from_directory(str(newest))


def _file_sizes(directory: str) -> dict[str, int]:
    root = Path(directory)
    return {p.relative_to(root).as_posix(): p.stat().st_size for p in sorted(root.rglob("*")) if p.is_file()}


def upload_checkpoint(checkpoint, checkpoint_dir_name: str):
    """Copy a worker's checkpoint into the run's storage, whole or not at all.

    Ray Train's own upload copies file by file into the final folder, so a
    failed copy (a full disk) leaves a partial ``checkpoint_*`` behind. Here
    the copy goes to a hidden ``.checkpoint_*.partial`` sibling that is
    renamed when complete (a plain rename on a local or NFS folder; on an
    object store, where there is no rename, :func:`checkpoint_complete`
    still tells a whole copy from a cut one). A failed copy is removed and
    becomes one sentence naming the folder; the previous checkpoint is
    untouched.
    """
    import pyarrow.fs as pafs
    import ray.train

    storage = ray.train.get_context().get_storage()
    fs = storage.storage_filesystem
    check = getattr(storage, "_check_validation_file", None)
    if check is not None:
        check()  # storage reachable from this node (multi-node: shared)
    dest = storage.build_checkpoint_path_from_name(checkpoint_dir_name)
    parent, base = dest.rsplit("/", 1)
    staging = f"{parent}/.{base}.partial"
    try:
        if fs.get_file_info(staging).type != pafs.FileType.NotFound:
            fs.delete_dir(staging)
        fs.create_dir(staging)
        pafs.copy_files(
            checkpoint.path, staging, source_filesystem=checkpoint.filesystem, destination_filesystem=fs
        )
        want = _file_sizes(checkpoint.path)
        got = {
            info.path[len(staging) + 1:]: info.size
            for info in fs.get_file_info(pafs.FileSelector(staging, recursive=True))
            if info.type == pafs.FileType.File
        }
        if got != want:
            # A copy cut short without an error (seen on a full disk): never publish it.
            short = sum(want.values()) - sum(v or 0 for v in got.values())
            raise OSError(errno.ENOSPC if _disk_full(parent, short) else errno.EIO,
                          f"copy incomplete ({len(got)} of {len(want)} files, {short} bytes short)")
        fs.move(staging, dest)
    except OSError as exc:
        try:
            fs.delete_dir(staging)
        except OSError:
            pass
        text = str(exc)
        if exc.errno == errno.ENOSPC or "errno 28" in text.lower() or "No space left" in text:
            raise ZrayError(
                f"{dest}: no space left on device while writing the checkpoint; the previous "
                "checkpoint is kept; expected free space in the storage folder (free some, or "
                "give another --runs/--storage)"
            ) from None
        first = text.strip().splitlines()[0][:200] if text.strip() else type(exc).__name__
        raise ZrayError(f"{dest}: cannot write the checkpoint ({first}); the previous checkpoint is kept") from None
    return ray.train.Checkpoint(path=dest, filesystem=fs)


def _disk_full(folder: str, needed: int) -> bool:
    import shutil

    try:
        return shutil.disk_usage(folder).free < max(needed, 1)
    except OSError:
        return False


def _named_failures(job: TrainJob, batches):
    """Pass ``batches`` through; a read that fails names the corrupt shard.

    A streamed dataset decodes Parquet inside this worker, so this is where a
    damaged data page surfaces; the files are re-read one by one to name it.
    """
    try:
        yield from batches
    except Exception:
        from zray.data.pipeline import find_unreadable
        from zray.data.shards import read_manifest

        files = [f for f in read_manifest(job.data_path).files("train") if str(f) not in job.skipped_files]
        bad = find_unreadable(files)
        if bad is None:
            raise
        raise ZrayError(
            f"{bad[0]}: shard is corrupt ({bad[1]}); expected a readable zray shard (rewrite the "
            "dataset, or set data.skip_corrupt: true to train without it)"
        ) from None


def _maybe_kill(job: TrainJob, kill_at: dict, epoch: int, steps: int, rank: int, world: int) -> None:
    """Fault injection: SIGKILL this worker's process at ``kill_at``, on the first attempt only."""
    from zray import storage as st

    target_rank = int(kill_at.get("rank", world - 1))
    if (rank, epoch + 1, steps + 1) != (target_rank, int(kill_at["epoch"]), int(kill_at["step"])):
        return
    marker = st.join(job.run_dir or tempfile.gettempdir(), f"killed-e{epoch + 1}-s{steps + 1}-r{rank}")
    if st.exists(marker):
        return
    st.write_text(marker, str(os.getpid()))
    os.kill(os.getpid(), signal.SIGKILL)


def divergence(run_dir: str | Path) -> str | None:
    """Why the run at ``run_dir`` (a folder or a URI) diverged, or None."""
    from zray import storage as st

    return st.read_text(st.join(str(run_dir), DIVERGED_FILE))


def set_precision(job: TrainJob, k, tf) -> str:
    """Set tf_keras' global dtype policy for ``job``; return its name.

    ``mixed_float16`` only when the job asks for mixed precision and this
    worker has a GPU (on CPUs float16 is slower, not faster); the models'
    ``pdf`` softmax is float32 under either policy. Set before the model is
    built: layers take the policy in force when they are created.
    """
    name = "float32"
    if job.mixed_precision and job.gpus_per_worker > 0 and tf.config.list_physical_devices("GPU"):
        name = "mixed_float16"
    k.mixed_precision.set_global_policy(name)
    return name


# A progress line inside an epoch once it has run this long, then this often.
PROGRESS_AFTER_S = 3.0


def _progress_inside_epoch(job: TrainJob, epoch: int, epochs: int, rows: int, t0: float, last: float) -> float:
    """Print ``zray: progress ...`` (rows, img/s, ETA) every few seconds; return when it last did.

    The driver shows these in place on a terminal and drops them elsewhere
    (:mod:`zray.console`).
    """
    now = time.perf_counter()
    if now - last < PROGRESS_AFTER_S or now - t0 < PROGRESS_AFTER_S:
        return last
    rate = rows / max(now - t0, 1e-9)
    eta = max(job.train_rows - rows, 0) / max(rate, 1e-9)
    print(f"zray: progress epoch {epoch + 1}/{epochs}  {rows}/{job.train_rows} rows  {rate:.0f} img/s  "
          f"ETA {_duration(eta)}", flush=True)
    return now


def _progress_line(m: dict[str, Any], epochs: int) -> str:
    return (
        f"zray: epoch {m['epoch']}/{epochs}  loss {m['loss']:.4f}  val_loss {m['val_loss']:.4f}  "
        f"val_sigma_mad {m['val_sigma_mad']:.4f}  val_bias {m['val_bias']:+.4f}  "
        f"outliers {m['val_outlier_fraction']:.3f}  ({m['train_images_per_s']:.0f} img/s, lr {m['lr']:.2g})"
    )


def weights_checksum(model) -> float:
    """Sum of every weight, in float64: equal weights give equal sums."""
    return float(sum(np.asarray(w, dtype=np.float64).sum() for w in model.get_weights()))


def _record_start(directory: str, rank: int, start_epoch: int, model) -> None:
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    record = {"start_epoch": start_epoch, "weights_checksum": weights_checksum(model)}
    (out / f"start-r{rank}-e{start_epoch}.json").write_text(json.dumps(record))


def _dihedral(tf, image, seed):
    """Random 90-degree rotations and flips: the 8 symmetries of a square, per image."""
    n = tf.shape(image)[0]
    draws = tf.random.stateless_uniform([3, n], seed=seed) < 0.5
    t, fh, fw = draws[0], draws[1], draws[2]
    shape = tf.stack([n, 1, 1, 1])
    image = tf.where(tf.reshape(t, shape), tf.transpose(image, [0, 2, 1, 3]), image)
    image = tf.where(tf.reshape(fh, shape), tf.reverse(image, [1]), image)
    return tf.where(tf.reshape(fw, shape), tf.reverse(image, [2]), image)


def _validate(val_shard, predict_step, bins: RedshiftBins) -> dict[str, float]:
    from zray import metrics

    pdfs, zs = [], []
    for batch in val_shard.iter_batches(batch_size=512, batch_format="numpy", prefetch_batches=1):
        pdfs.append(predict_step(batch["image"], batch["ebv"].reshape(-1, 1).astype(np.float32)).numpy())
        zs.append(batch["z_spec"])
    pdf = np.concatenate(pdfs).astype(np.float64)
    z = np.concatenate(zs).astype(np.float64)
    p_true = pdf[np.arange(len(z)), bins.index(z)]
    summary = metrics.summary(pdf, bins, z)
    return {
        "val_loss": float(-np.mean(np.log(np.clip(p_true, 1e-7, 1.0)))),
        "val_sigma_mad": summary["sigma_mad"],
        "val_bias": summary["bias_mean"],
        "val_bias_median": summary["bias_median"],
        "val_outlier_fraction": summary["outlier_fraction"],
        "val_crps": summary["crps"],
        "val_rows": int(len(z)),
    }


def _record_ids(directory: str, epoch: int, rank: int, seen: list, steps: int) -> None:
    """Debug evidence of what this worker received (used by the tests)."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    ids = np.concatenate(seen) if seen else np.zeros(0, dtype=np.int64)
    np.save(out / f"ids-e{epoch}-r{rank}.npy", ids)
    (out / f"steps-e{epoch}-r{rank}.txt").write_text(str(steps))


# ---------------------------------------------------------------------------
# The `zray train` entry point


def job_for(space, hyperparameters: dict[str, Any], manifest_hash: str, **extra) -> TrainJob:
    """The TrainJob of a search space at the given hyperparameters."""
    data = space.data
    return TrainJob(
        model=space.model,
        hyperparameters=dict(hyperparameters),
        data_path=str(Path(data.path).resolve()),
        image_size=data.image_size,
        z_min=data.z_min,
        z_max=data.z_max,
        n_bins=data.n_bins,
        manifest_hash=manifest_hash,
        seed=space.tune.seed,
        num_workers=space.resources.num_workers,
        cpus_per_worker=space.resources.cpus_per_worker,
        gpus_per_worker=space.resources.gpus_per_worker,
        mixed_precision=space.resources.mixed_precision,
        **extra,
    )


def run(
    space, *, runs_dir: str | Path = "runs", name: str | None = None, max_failures: int = 2,
    dashboard_host: str = "127.0.0.1", **job_extra,
) -> dict[str, Any]:
    """One training run of ``space`` at its default hyperparameters.

    Started again with the same name and output, it resumes from the last
    checkpoint (Ray Train restores its checkpoint manager from storage).
    """
    from zray import baselines
    from zray.config import run_identity
    from zray.data.pipeline import check_shards
    from zray.data.source import ensure_data
    from zray.runtime import init_ray

    manifest = ensure_data(space)
    hp = space.default_hyperparameters()
    identity = run_identity(space.model, hp, manifest.hash)
    name = name or f"{space.name}-train-{identity}"
    # Footer check of every shard before Ray starts: a broken file is named at once.
    shards = check_shards(space.data.path, skip_corrupt=space.data.skip_corrupt)
    table = baselines.ensure_or_none(space.data.path, say=lambda line: print(f"zray: {line}", flush=True))
    init_ray(dashboard_host=dashboard_host)
    datasets = prepare_datasets(space.data.path, space.data.image_size, shards=shards)
    trainer = make_trainer(
        job_for(space, hp, manifest.hash, plan=plan_of(space, manifest), **skipped_fields(shards), **job_extra),
        datasets=datasets,
        storage_path=runs_dir,
        name=name,
        gpus_per_worker=space.resources.gpus_per_worker,
        max_failures=max_failures,
    )
    t0 = time.perf_counter()
    run_dir = str(Path(runs_dir).resolve() / name)
    try:
        result = trainer.fit()
        error = result.error
    except Exception as exc:  # Ray Train raises its TrainingFailedError from fit()
        error = exc
    if error:
        raise ZrayError(f"training run {name} failed: {failure_reason(error, run_dir)}") from None
    reason = divergence(Path(runs_dir).resolve() / name)
    if reason:
        raise ZrayError(f"training run {name} failed: {reason}; try a lower learning_rate")
    checkpoint = result.checkpoint
    state = read_state(checkpoint.path) if checkpoint else {}
    return {
        "name": name,
        "identity": identity,
        "run_dir": str(Path(runs_dir).resolve() / name),
        "checkpoint": checkpoint.path if checkpoint else None,
        "metrics": state.get("metrics", {}),
        "history": state.get("history", []),
        "wall_time_s": time.perf_counter() - t0,
        "hyperparameters": hp,
        "rows_skipped": shards.rows_skipped,
        "skipped": shards.skipped,
        "baselines": table,
    }


def skipped_fields(shards) -> dict[str, Any]:
    """The TrainJob fields a ShardCheck fills: the skipped shards, and the rows trained on."""
    return {"rows_skipped": shards.rows_skipped, "skipped_files": [p for p, _, _ in shards.skipped],
            "train_rows": sum(shards.rows.get(f, 0) for f in shards.files.get("train", []))}


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

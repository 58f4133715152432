"""What one training run is, as plain data: the :class:`TrainJob`, its learning-rate
schedule and the time estimate printed early in a search.

Pure Python (no Ray, no TensorFlow): the job crosses process boundaries as a
dict, and the schedule and estimate are tested without either.

    >>> job = TrainJob(model="cnn", hyperparameters={"epochs": 4, "learning_rate": 1e-3,
    ...                "lr_schedule": "step", "lr_drop_factor": 5.0},
    ...                data_path="data/sim", image_size=32, z_min=0.0, z_max=0.4,
    ...                n_bins=180, manifest_hash="0" * 64)
    >>> [learning_rate(job.hyperparameters, e) for e in range(4)]
    [0.001, 0.001, 0.0002, 0.0002]
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zray.bins import RedshiftBins

__all__ = [
    "TrainJob",
    "job_for",
    "plan_of",
    "learning_rate",
    "estimate_line",
    "epoch_line",
    "progress_line",
    "model_hp",
    "DIVERGED_FILE",
    "DIVERGENCE_LOSS",
    "ESTIMATE_FILE",
]

# Cross-entropy over a few hundred bins starts near log(n_bins) ~ 5 and a
# working run stays well below 50; past this the weights have blown up.
DIVERGENCE_LOSS = 1.0e3
# A diverged run leaves its reason in this file of its run folder.
DIVERGED_FILE = "diverged.txt"
# Fixed cost of one Ray Train run on top of its epochs (worker start-up,
# TensorFlow import, dataset planning), as measured on 2 cores.
RUN_OVERHEAD_S = 20.0
# The estimate, kept beside a search's run folders once printed.
ESTIMATE_FILE = "estimate.txt"
# Within an epoch, rank 0 writes its progress this often (seconds); the driver shows it at most
# every FIRST_EVERY progress intervals until a run's first epoch has ended, every LATER_EVERY after
# (an epoch shorter than that shows only its end line).
PROGRESS_EVERY_S = 10.0
FIRST_EVERY, LATER_EVERY = 3, 12
# The folder, beside a search's run folders (in a training run's folder), of the progress files.
PROGRESS_DIR = ".progress"


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
    # The validation metric that ranks this run's checkpoints, and its direction.
    metric: str = "val_sigma_mad"
    mode: str = "min"
    # Where the run keeps its checkpoints; a diverged run leaves its reason
    # there rather than raising (a retry would only diverge again).
    run_dir: str | None = None
    # Rows of shards skipped as corrupt (data.skip_corrupt), reported every epoch.
    rows_skipped: int = 0
    skipped_files: list[str] = field(default_factory=list)
    # Test instruments (zray.train.faults): where each worker records the ids
    # it trained on, and faults to inject ({"fail_after_epoch": N} or
    # {"kill_at": {"epoch": E, "step": S, "rank": R}}).
    record_ids_dir: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    # Rows of the training split (those left after skipped shards and dropped labels).
    train_rows: int = 0
    # Where rank 0 writes, every PROGRESS_EVERY_S seconds within an epoch, how far the epoch
    # has come (progress_record): the driver shows it while an epoch of minutes runs.
    progress_file: str | None = None

    @property
    def bins(self) -> RedshiftBins:
        return RedshiftBins(self.z_min, self.z_max, self.n_bins)


def job_for(space, hyperparameters: dict[str, Any], manifest_hash: str, **extra) -> TrainJob:
    """The TrainJob of a search space at the given hyperparameters."""
    from zray.models import model_hyperparameters

    data = space.data
    # Every architecture hyperparameter is recorded, defaults included: a model
    # type that gains one later still rebuilds this job's model as trained.
    return TrainJob(
        model=space.model,
        hyperparameters={**model_hyperparameters(space.model), **hyperparameters},
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
        metric=space.tune.metric,
        mode=space.tune.mode,
        **extra,
    )


def model_hp(job: TrainJob) -> dict[str, Any]:
    """The hyperparameters of ``job`` that its model type's builder takes, as
    the job was trained (:func:`zray.models.recorded_hyperparameters`)."""
    from zray.models import model_hyperparameters, recorded_hyperparameters

    names = model_hyperparameters(job.model)
    return recorded_hyperparameters(job.model, {k: v for k, v in job.hyperparameters.items() if k in names})


def learning_rate(hp: dict[str, Any], epoch: int) -> float:
    """The rate for ``epoch`` (0-based) under ``hp['lr_schedule']``.

    ``hp`` holds every training hyperparameter (the search space fills the
    declared defaults), so there is no fallback here to drift from them.
    """
    base = float(hp["learning_rate"])
    epochs = int(hp["epochs"])
    schedule = hp["lr_schedule"]
    if schedule == "step":
        return base / float(hp["lr_drop_factor"]) if epoch >= epochs // 2 and epochs > 1 else base
    if schedule == "cosine":
        return base * 0.5 * (1.0 + math.cos(math.pi * epoch / max(epochs, 1)))
    if schedule == "constant":
        return base
    raise ValueError(f"lr_schedule {schedule!r} is not one of constant, step, cosine")


def plan_of(space, manifest, trials: int = 1, concurrent: int = 1) -> dict[str, Any]:
    """What the whole experiment is, for the time estimate (:func:`estimate_line`):
    ``{"trials", "concurrent", "train_rows", "val_rows", "simulated_n", "data_path"}``."""
    simulate = space.data.simulate
    return {
        "trials": trials, "concurrent": concurrent,
        "train_rows": manifest.rows["train"], "val_rows": manifest.rows["val"],
        "simulated_n": simulate.n if simulate else 0, "data_path": str(space.data.path),
    }


def estimate_line(plan: dict[str, Any], epochs: int, images_per_s: float) -> str:
    """The time estimate from the first epoch's speed, with the overrides that shorten it.

    An upper bound: every trial runs all its epochs (a scheduler such as ASHA
    stops poor trials earlier), validation runs at about three times the
    training speed, and each run pays :data:`RUN_OVERHEAD_S` of start-up.
    """
    epochs = int(epochs)
    rate = max(images_per_s, 1e-6)
    epoch_s = plan["train_rows"] / rate + plan.get("val_rows", 0) / (3 * rate)
    run_s = epochs * epoch_s + RUN_OVERHEAD_S
    trials = int(plan.get("trials", 1))
    concurrent = max(int(plan.get("concurrent", 1)), 1)
    total = math.ceil(trials / concurrent) * run_s
    text = (f"estimate: {rate:.0f} img/s here, so an epoch takes about {duration(epoch_s)} "
            f"and one run of {epochs} epoch{'s' if epochs != 1 else ''} about {duration(run_s)}")
    if trials > 1:
        text += f"; the search of {trials} trials at most about {duration(total)}"
    if total > 15 * 60:
        short_epochs = max(2, epochs // 3)
        flags = f"--set fixed.epochs={short_epochs}"
        short_total = short_epochs * epoch_s + RUN_OVERHEAD_S
        if trials > 1:
            short_trials = max(2, trials // 4)
            flags += f" --set tune.num_samples={short_trials}"
            short_total *= math.ceil(short_trials / concurrent)
        text += f". Shorter (about {duration(short_total)}): {flags}"
        if plan.get("simulated_n", 0) > 2000:
            text += f" --set data.simulate.n=2000 --set data.path={plan['data_path']}-small"
    return text


def duration(seconds: float) -> str:
    """``42 s``, ``12 min``, ``3.4 h`` or ``2.9 days``."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def epoch_line(m: dict[str, Any], epochs: int) -> str:
    """``epoch 3/15  loss ...``: the line shown for each epoch a run reports."""
    return (
        f"epoch {m['epoch']}/{epochs}  loss {m['loss']:.4f}  val_loss {m['val_loss']:.4f}  "
        f"val_sigma_mad {m['val_sigma_mad']:.4f}  val_bias {m['val_bias']:+.4f}  "
        f"outliers {m['val_outlier_fraction']:.3f}  ({m['train_images_per_s']:.0f} img/s, lr {m['lr']:.2g})"
    )


def progress_record(epoch: int, rows: int, total: int, images_per_s: float | None, when: float,
                    steady_s: float = 0.0) -> dict[str, Any]:
    """What rank 0 writes to ``TrainJob.progress_file`` within an epoch: ``epoch`` counted from 1,
    ``rows`` of about ``total`` trained so far, the speed since the epoch's first step (which
    traces the graph) measured over ``steady_s`` seconds, and when (``time.time()``)."""
    return {"epoch": int(epoch), "rows": int(rows), "total": int(total),
            "images_per_s": float(images_per_s) if images_per_s else None, "steady_s": float(steady_s),
            "time": float(when)}


def progress_line(p: dict[str, Any], epochs: int) -> str:
    """``epoch 1/30: 2,816 of 8,000 galaxies (35%) at 31 img/s; its training ends in about 3 min``."""
    rows, total, rate = int(p["rows"]), int(p["total"]), p.get("images_per_s")
    text = f"epoch {int(p['epoch'])}/{epochs}: {rows:,} of {total:,} galaxies"
    if total > 0:
        text += f" ({min(rows / total, 1.0):.0%})"
    if isinstance(rate, (int, float)) and math.isfinite(rate) and rate > 0:  # not NaN, or none yet
        text += f" at {rate:.0f} img/s"
        if total > rows:
            text += f"; its training ends in about {duration((total - rows) / rate)}"
    return text

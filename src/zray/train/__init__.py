"""One training run: Ray Data shards into Ray Train TensorFlow workers.

Split by the process that runs the code:

- :mod:`zray.train.job`: the :class:`TrainJob` (plain data), learning-rate
  schedule, time estimate. Pure Python.
- :mod:`zray.train.checkpoints`: what a whole checkpoint is, reading it back,
  the verified upload. What the search and export import.
- :mod:`zray.train.driver`: datasets, Ray Train's trainer, and :func:`run`
  (``zray train``: a search of one trial, :mod:`zray.experiment`).
- :mod:`zray.train.worker`: the loop each Ray Train worker runs (imports TensorFlow).
- :mod:`zray.train.steps`: the TensorFlow train step, loss, augmentation and
  validation, testable without Ray.
- :mod:`zray.train.faults`: test instruments (fault injection, id recording).

Importing ``zray.train`` loads neither TensorFlow nor Ray.

    >>> from zray import config, train
    >>> space = config.load("search_spaces/quickstart.yaml", ["fixed.epochs=2"])  # doctest: +SKIP
    >>> train.run(space)["metrics"]["val_sigma_mad"]                               # doctest: +SKIP
    0.031
"""

from zray.train.checkpoints import (
    STATE_FILE,
    WEIGHTS_PREFIX,
    checkpoint_complete,
    complete_checkpoints,
    divergence,
    load_checkpoint_model,
    read_state,
)
from zray.train.driver import (
    RunData,
    failure_reason,
    make_trainer,
    prepare_datasets,
    run,
    skipped_fields,
)
from zray.train.job import (
    DIVERGED_FILE,
    ESTIMATE_FILE,
    TrainJob,
    epoch_line,
    estimate_line,
    job_for,
    learning_rate,
    model_hp,
    plan_of,
)

__all__ = [
    "DIVERGED_FILE",
    "ESTIMATE_FILE",
    "STATE_FILE",
    "WEIGHTS_PREFIX",
    "RunData",
    "TrainJob",
    "checkpoint_complete",
    "complete_checkpoints",
    "divergence",
    "epoch_line",
    "estimate_line",
    "failure_reason",
    "job_for",
    "learning_rate",
    "load_checkpoint_model",
    "make_trainer",
    "model_hp",
    "plan_of",
    "prepare_datasets",
    "read_state",
    "run",
    "skipped_fields",
]

"""The search-space YAML: its schema, ``--set`` overrides and the run identity.

One YAML per model type describes a whole experiment::

    name: inception-sdss
    model: inception
    data: {path: data/sim, image_size: 64, z_max: 0.4, n_bins: 180}
    fixed: {epochs: 30, batch_size: 128}
    search:
      learning_rate: {type: float, low: 1.0e-5, high: 1.0e-3, log: true}
    tune: {metric: val_sigma_mad, num_samples: 20, scheduler: {type: asha}}
    resources: {num_workers: 2, cpus_per_worker: 1, gpus_per_worker: 0}

- :mod:`zray.config.schema`: the sections and their fields (pydantic);
- :mod:`zray.config.loading`: YAML, overrides, registry-aware checks, error sentences;
- :mod:`zray.config.identity`: :func:`run_identity`.

    >>> from zray import config
    >>> space = config.load("search_spaces/quickstart.yaml", ["tune.num_samples=1"])  # doctest: +SKIP
    >>> space.tune.metric, space.tune.mode                                          # doctest: +SKIP
    ('val_sigma_mad', 'min')
"""

from zray.config.identity import run_identity
from zray.config.loading import apply_overrides, load, parse_override, validate
from zray.config.schema import (
    TRAINING_HYPERPARAMETERS,
    DataConfig,
    Distribution,
    ResourcesConfig,
    SchedulerConfig,
    SearchSpace,
    SimulateSpec,
    TuneConfig,
)

__all__ = [
    "TRAINING_HYPERPARAMETERS",
    "DataConfig",
    "Distribution",
    "ResourcesConfig",
    "SchedulerConfig",
    "SearchSpace",
    "SimulateSpec",
    "TuneConfig",
    "apply_overrides",
    "load",
    "parse_override",
    "run_identity",
    "validate",
]

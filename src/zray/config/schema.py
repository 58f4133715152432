"""The search-space schema: sections, their fields and the checks that need no registry.

Pydantic models, frozen and strict: an unknown key is an error. Checks that
need the model registry (hyperparameter names, types and constraints) are in
:mod:`zray.config.loading`.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, model_serializer, model_validator

from zray.bins import RedshiftBins
from zray.errors import shown
from zray.hyperparameters import DEFAULTS
from zray.paths import name_problem

# Hyperparameters of the training loop, shared by every model type (defaults and
# constraints in zray.hyperparameters). Model types add their own architecture
# hyperparameters through the registry.
TRAINING_HYPERPARAMETERS: dict[str, Any] = DEFAULTS


class _KeyedError(ValueError):
    """A validator error that belongs to a sub-key of the object being checked."""

    def __init__(self, key: str, message: str):
        super().__init__(message)
        self.key = key
        self.message = message


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)  # NaN is never a valid number


PosInt = Annotated[StrictInt, Field(gt=0)]
NonNegInt = Annotated[StrictInt, Field(ge=0)]


class Distribution(_Strict):
    """One searchable hyperparameter, in Optuna's terms."""

    type: Literal["float", "int", "categorical"]
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: list[Any] | None = None
    default: Any = None

    @model_validator(mode="after")
    def _check(self) -> Distribution:
        if self.type == "categorical":
            for key in ("low", "high", "step"):
                if getattr(self, key) is not None:
                    raise _KeyedError(key, "is not used by a categorical distribution; give choices")
            if not self.choices:
                raise _KeyedError("choices", "must be a non-empty list")
            pair = next(((a, b) for i, b in enumerate(self.choices) for a in self.choices[:i] if a == b), None)
            if pair is not None:  # Optuna would take them for one choice, and try it more often than the others
                a, b = pair
                same = (f"{shown(a)} appears twice" if repr(a) == repr(b)
                        else f"{shown(a)} and {shown(b)} are one choice (equal)")
                raise _KeyedError("choices", f"must each appear once, but {same} in {shown(self.choices)}")
            if self.default is not None and self.default not in self.choices:
                raise _KeyedError("default",
                                  f"must be one of the choices {shown(self.choices)}, got {shown(self.default)}")
            return self
        if self.choices is not None:
            raise _KeyedError("choices", f"is only used by categorical distributions, not {self.type}")
        for key in ("low", "high"):
            value = getattr(self, key)
            if value is None:
                raise _KeyedError(key, f"is required for a {self.type} distribution")
            if self.type == "int" and value != int(value):
                raise _KeyedError(key, f"must be a whole number for an int distribution, got {value}")
        if self.low > self.high:
            raise _KeyedError("low", f"`low <= high` must hold, got low={self.low}, high={self.high}")
        if self.log and self.low <= 0:
            raise _KeyedError("low", f"must be > 0 on a log scale, got {self.low:g}")
        if self.step is not None:
            if self.step <= 0:
                raise _KeyedError("step", f"must be > 0, got {self.step:g}")
            if self.log:
                raise _KeyedError("step", "cannot be combined with log: true (Optuna forbids it)")
            if self.type == "int" and self.step != int(self.step):
                raise _KeyedError("step", f"must be a whole number for an int distribution, got {self.step}")
            if self.low < self.high and self.step > (self.high - self.low) * (1 + 1e-9):  # 0.3 - 0.1 < 0.2
                raise _KeyedError("step", f"leaves only low ({self.low:g}) in [{self.low:g}, {self.high:g}]; "
                                  f"expected a step of at most {self.high - self.low:g}, got {self.step:g}")
        if self.default is not None:
            if not isinstance(self.default, (int, float)) or isinstance(self.default, bool):
                raise _KeyedError("default", f"must be a number, got {shown(self.default)}")
            if not self.low <= self.default <= self.high:
                raise _KeyedError(
                    "default", f"must lie in [{self.low:g}, {self.high:g}], got {self.default:g}"
                )
        return self

    def centre(self) -> Any:
        """A value inside the distribution, used when no default is known."""
        if self.type == "categorical":
            return self.choices[0]
        mid = math.sqrt(self.low * self.high) if self.log else (self.low + self.high) / 2
        if self.step:
            mid = self.low + round((mid - self.low) / self.step) * self.step
        return int(round(mid)) if self.type == "int" else float(mid)

    def admits(self, value: Any) -> bool:
        if self.type == "categorical":
            return value in self.choices
        return isinstance(value, (int, float)) and self.low <= value <= self.high


class SimulateSpec(_Strict):
    """Data generated with ``zray simulate`` on first use and cached at ``data.path``: the path
    the file names, or one given with ``--set`` only when ``data.simulate`` is set there too."""

    n: PosInt = 2000
    seed: NonNegInt = 0


class DataConfig(_Strict):
    path: str
    image_size: PosInt = 64
    z_min: float = 0.0
    z_max: float = 0.4
    n_bins: Annotated[StrictInt, Field(ge=2)] = 180
    simulate: SimulateSpec | None = None
    # Train without shards found corrupt (reporting their rows as skipped)
    # instead of stopping at the first one.
    skip_corrupt: bool = False
    # Leave out galaxies whose z_spec lies outside z_min <= z < z_max (counted in
    # the summary) instead of refusing the data.
    drop_out_of_range: bool = False
    # Rows each worker mixes at a time when the training split is streamed from
    # Parquet (too large for the object store); see zray.data.epochs.
    shuffle_buffer: PosInt = 8192  # zray.data.epochs.SHUFFLE_BUFFER_ROWS (not imported: it loads pyarrow)

    @model_validator(mode="after")
    def _check(self) -> DataConfig:
        if self.z_min < 0:
            raise _KeyedError("z_min", f"must be >= 0, got {self.z_min:g}")
        if self.z_max <= self.z_min:
            raise _KeyedError("z_max", f"must be > z_min ({self.z_min:g}), got {self.z_max:g}")
        if self.image_size < 8:
            raise _KeyedError("image_size", f"must be at least 8 pixels, got {self.image_size}")
        return self

    @property
    def bins(self) -> RedshiftBins:
        return RedshiftBins(self.z_min, self.z_max, self.n_bins)


class SchedulerConfig(_Strict):
    """Early stopping of poor trials: ASHA, median stopping, or none."""

    type: Literal["none", "asha", "median"] = "none"
    grace_period: PosInt = 1
    reduction_factor: float = Field(3.0, gt=1)
    min_samples_required: PosInt = 3


class TuneConfig(_Strict):
    """How trials are ranked, how many run, and what stops the poor ones early.

    ``metric`` is one of :data:`zray.metrics.VALIDATION_METRICS`; ``mode``
    follows from it (giving it is allowed, contradicting it is refused).

    ``metrics`` makes it a two-objective search: exactly two distinct
    validation metrics, searched with Optuna's multi-objective samplers
    (``tpe``, ``random`` or ``nsga2``), whose result is a Pareto front
    (:func:`zray.search.results.pareto_front`). ``modes`` follow from them as
    ``mode`` does. ``metric`` is then ``metrics[0]``: what checkpoints are
    ranked by, what the trial lines show, and the rule that picks the front's
    trial to export. ASHA and median stopping compare trials on one metric, so
    a two-objective search takes ``scheduler.type: none``.

    Without ``metrics`` nothing changes, and the saved search space reads as
    it did before (``metrics``/``modes`` are left out of the dump when unset,
    so an experiment started earlier still resumes).
    """

    metric: str = "val_sigma_mad"
    mode: Literal["min", "max"] | None = None
    metrics: list[str] | None = None
    modes: list[Literal["min", "max"]] | None = None
    num_samples: PosInt = 10
    max_concurrent: PosInt = 1
    scheduler: SchedulerConfig = SchedulerConfig()
    sampler: Literal["tpe", "random", "nsga2"] = "tpe"
    seed: NonNegInt = 0
    time_budget_s: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _check_metric(self) -> TuneConfig:
        from zray.metrics import VALIDATION_METRICS

        self._check_metrics()
        if self.metric not in VALIDATION_METRICS:
            raise _KeyedError("metric", f"unknown metric {shown(self.metric)}; expected one of "
                                        f"{', '.join(VALIDATION_METRICS)}")
        want = VALIDATION_METRICS[self.metric]
        if self.mode is None:
            object.__setattr__(self, "mode", want)  # frozen model: filled once, here
        elif self.mode != want:
            better = "lower" if want == "min" else "higher"
            raise _KeyedError("mode",
                              f"{self.metric} is better when {better}; expected {want!r}, got {shown(self.mode)}")
        return self

    def _check_metrics(self) -> None:
        """The two objectives: known, distinct, their modes right, a scheduler that can take
        them; ``metric`` (and ``modes``) filled from them."""
        from zray.metrics import VALIDATION_METRICS

        if self.metrics is None:
            if self.modes is not None:
                raise _KeyedError("modes", "belongs with tune.metrics (two objectives); for one metric give "
                                           "tune.mode, or add tune.metrics")
            return
        if len(self.metrics) != 2:
            raise _KeyedError("metrics", f"expected exactly two metrics (a two-objective search), "
                                         f"got {len(self.metrics)}: {shown(self.metrics)}")
        for name in self.metrics:
            if name not in VALIDATION_METRICS:
                raise _KeyedError("metrics", f"unknown metric {shown(name)}; expected two of "
                                             f"{', '.join(VALIDATION_METRICS)}")
        if self.metrics[0] == self.metrics[1]:
            raise _KeyedError("metrics", f"names {self.metrics[0]} twice; expected two different metrics")
        if "metric" in self.model_fields_set and self.metric != self.metrics[0]:
            raise _KeyedError("metric", f"is {self.metric} but tune.metrics starts with {self.metrics[0]}; "
                                        "expected tune.metric left out (it is tune.metrics' first) or equal to it")
        want = [VALIDATION_METRICS[name] for name in self.metrics]
        if self.modes is not None:
            if len(self.modes) != 2:
                raise _KeyedError("modes", f"expected one mode per metric ({want!r}), got {shown(self.modes)}")
            for name, mode, right in zip(self.metrics, self.modes, want):
                if mode != right:
                    better = "lower" if right == "min" else "higher"
                    raise _KeyedError("modes", f"{name} is better when {better}; expected {want!r}, "
                                               f"got {shown(self.modes)}")
        if self.scheduler.type != "none":
            stopper = {"asha": "ASHA", "median": "median stopping"}.get(self.scheduler.type, self.scheduler.type)
            raise _KeyedError("scheduler.type", f"{stopper} stops trials on one metric but tune.metrics names "
                                                "two; expected none for a two-objective search")
        object.__setattr__(self, "modes", want)  # frozen model: filled once, here
        object.__setattr__(self, "metric", self.metrics[0])

    @property
    def objectives(self) -> list[tuple[str, str]]:
        """(metric, mode) of each objective: one, or the two of ``metrics``."""
        if self.metrics:
            return list(zip(self.metrics, self.modes))
        return [(self.metric, self.mode)]

    @model_serializer(mode="wrap")
    def _dump(self, handler) -> dict[str, Any]:
        data = handler(self)
        if self.metrics is None:  # a one-metric search dumps as it always did
            data.pop("metrics", None)
            data.pop("modes", None)
        return data


class ResourcesConfig(_Strict):
    """Per trial: Ray Train workers and what each gets.

    ``trial_cpus`` is what the Tune trial's driver holds (not 0: Ray refuses);
    whatever the trials leave is free for Ray Data's read tasks.
    """

    num_workers: PosInt = 1
    cpus_per_worker: float = Field(1.0, gt=0)
    gpus_per_worker: float = Field(0.0, ge=0)
    trial_cpus: float = Field(0.1, gt=0)
    mixed_precision: bool = False


class SearchSpace(_Strict):
    name: str = Field(min_length=1)
    model: str
    data: DataConfig
    fixed: dict[str, Any] = {}
    search: dict[str, Distribution] = {}
    tune: TuneConfig = TuneConfig()
    resources: ResourcesConfig = ResourcesConfig()

    @model_validator(mode="after")
    def _check_name(self) -> SearchSpace:
        problem = name_problem(self.name)
        if problem:
            raise _KeyedError("name", problem)
        return self

    def warnings(self) -> list[str]:
        """What is allowed but likely a mistake, for ``zray validate`` and ``zray tune`` to say."""
        said = []
        if not self.search and self.tune.num_samples > 1:
            said.append(f"nothing is searched, so the {self.tune.num_samples} trials train one configuration with "
                        "one seed (tune.seed) and differ by chance alone; tune.num_samples: 1 trains it once")
        return said

    def hyperparameter_defaults(self) -> dict[str, Any]:
        """Every hyperparameter this experiment's model and training take, with defaults."""
        from zray.models import model_hyperparameters

        return {**TRAINING_HYPERPARAMETERS, **model_hyperparameters(self.model)}

    def default_hyperparameters(self) -> dict[str, Any]:
        """What ``zray train`` runs: fixed values, then each searched one at its default."""
        known = self.hyperparameter_defaults()
        params = dict(known)
        params.update(self.fixed)
        for key, dist in self.search.items():
            if dist.default is not None:
                params[key] = dist.default
            elif not dist.admits(known.get(key)):
                params[key] = dist.centre()
        return params



"""The search-space YAML: its schema, ``--set`` overrides and the run identity.

One YAML per model type describes a whole experiment (docs/architecture.md, section 2)::

    name: inception-sdss
    model: inception
    data: {path: data/sim, image_size: 64, z_max: 0.4, n_bins: 180}
    fixed: {epochs: 30, batch_size: 128}
    search:
      learning_rate: {type: float, low: 1.0e-5, high: 1.0e-3, log: true}
    tune: {metric: val_sigma_mad, mode: min, num_samples: 20, scheduler: {type: asha}}
    resources: {num_workers: 2, cpus_per_worker: 1, gpus_per_worker: 0}

Every problem is reported as one :class:`~zray.errors.ZrayError` sentence of
the form ``FILE: key.path: what was expected, got VALUE``.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError, model_validator

from zray.bins import RedshiftBins
from zray.errors import ZrayError
from zray.paths import absolute

# Hyperparameters of the training loop, shared by every model type. Model types
# add their own architecture hyperparameters through the registry.
TRAINING_HYPERPARAMETERS: dict[str, Any] = {
    "epochs": 30,
    "batch_size": 128,
    "learning_rate": 1.0e-4,
    # "step": divide the rate by lr_drop_factor at half the run (Lin et al. 2022).
    "lr_schedule": "step",
    "lr_drop_factor": 5.0,
    "augment": True,
    # Width (in z) of a Gaussian spread over the bins as the training target;
    # 0 trains on the one-hot bin of z_spec, as Pasquet et al. 2019 did. A
    # width of about two bins lets a few thousand galaxies teach every bin
    # its neighbours and speeds learning several-fold.
    "label_sigma": 0.0,
}
LR_SCHEDULES = ("constant", "step", "cosine")


class _KeyedError(ValueError):
    """A validator error that belongs to a sub-key of the object being checked."""

    def __init__(self, key: str, message: str):
        super().__init__(message)
        self.key = key
        self.message = message


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


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
            if self.default is not None and self.default not in self.choices:
                raise _KeyedError("default", f"must be one of the choices {self.choices}, got {self.default!r}")
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
        if self.default is not None:
            if not isinstance(self.default, (int, float)) or isinstance(self.default, bool):
                raise _KeyedError("default", f"must be a number, got {self.default!r}")
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
    """Data generated with ``zray simulate`` on first use and cached at ``data.path``."""

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
    metric: str = "val_sigma_mad"
    mode: Literal["min", "max"] = "min"
    num_samples: PosInt = 10
    max_concurrent: PosInt = 1
    scheduler: SchedulerConfig = SchedulerConfig()
    sampler: Literal["tpe", "random"] = "tpe"
    seed: NonNegInt = 0
    time_budget_s: float | None = Field(None, gt=0)


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
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", self.name):
            raise _KeyedError("name", f"must be letters, digits, '-', '_' or '.', got {self.name!r}")
        return self

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


# ---------------------------------------------------------------------------
# Loading, overrides and error messages


class _Loader(yaml.SafeLoader):
    """YAML 1.1 reads ``1e-4`` as a string; users mean a float. A key given twice
    in one mapping (two ``search:`` blocks) is refused: plain YAML keeps the last
    one and silently drops the first."""

    def construct_mapping(self, node, deep=False):
        seen: dict = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} appears twice (lines {seen[key] + 1} and "
                    f"{key_node.start_mark.line + 1}); expected each key once", key_node.start_mark)
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:\d+\.?\d*|\.\d+)[eE][-+]?\d+$"),
    list("-+0123456789."),
)


def load(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> SearchSpace:
    """Read, override and validate a search-space file; raise ZrayError on any problem."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ZrayError(f"{path}: no such file; expected a search-space YAML") from None
    except OSError as exc:
        raise ZrayError(f"{path}: cannot be read ({exc.strerror})") from None
    try:
        raw = yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ZrayError(f"{path}: {where}invalid YAML ({problem})") from None
    if not isinstance(raw, dict):
        raise ZrayError(f"{path}: expected a mapping of sections (name, model, data, ...), got {type(raw).__name__}")
    applied = apply_overrides(raw, overrides, path)
    space = validate(raw, path, applied)
    # Trials and workers run elsewhere: a relative data.path means "from here".
    data = space.data.model_copy(update={"path": absolute(space.data.path)})
    return space.model_copy(update={"data": data})


def parse_override(text: str) -> tuple[list[str], Any]:
    """``tune.num_samples=4`` -> (["tune", "num_samples"], 4); the value is read as YAML."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ZrayError(f"--set {text}: expected KEY=VALUE, e.g. --set fixed.epochs=2")
    try:
        parsed = yaml.load(value, Loader=_Loader) if value.strip() else ""
    except yaml.YAMLError:
        parsed = value
    return key.strip().split("."), parsed


def apply_overrides(raw: dict, overrides, path: Path) -> dict[tuple[str, ...], str]:
    """Apply ``--set`` overrides in place; return {key path: override text} for messages."""
    applied: dict[tuple[str, ...], str] = {}
    for text in overrides:
        keys, value = parse_override(text)
        _check_override_path(raw, keys, text)
        node = raw
        for key in keys[:-1]:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                raise ZrayError(f"--set {text}: {key} is not a section")
        node[keys[-1]] = value
        if keys[0] == "fixed" and len(keys) == 2:
            # Fixing a searched hyperparameter takes it out of the search.
            search = raw.get("search")
            if isinstance(search, dict):
                search.pop(keys[1], None)
        applied[tuple(keys)] = text
    return applied


def _check_override_path(raw: dict, keys: list[str], text: str) -> None:
    """An override must name a key the schema knows (or a known hyperparameter)."""
    model: type[BaseModel] | None = SearchSpace
    for depth, key in enumerate(keys):
        if model is None:
            return
        fields = model.model_fields
        if key not in fields:
            known = list(fields)
            raise ZrayError(f"--set {text}: unknown key {'.'.join(keys[: depth + 1])}{_suggest(key, known)}")
        if model is SearchSpace and key in ("fixed", "search"):
            if len(keys) < 2:
                raise ZrayError(f"--set {text}: name a hyperparameter, e.g. --set {key}.epochs=2")
            if key == "fixed":
                _check_hyperparameter_name(raw, keys[1], text)
                return
            if keys[1] not in (raw.get("search") or {}):
                known = sorted(raw.get("search") or {})
                raise ZrayError(
                    f"--set {text}: search.{keys[1]} is not in this file's search space"
                    f"{_suggest(keys[1], known)}"
                )
            model = Distribution
            keys_left = keys[2:]
            if keys_left and keys_left[0] not in Distribution.model_fields:
                raise ZrayError(
                    f"--set {text}: unknown key {keys_left[0]}{_suggest(keys_left[0], list(Distribution.model_fields))}"
                )
            return
        annotation = fields[key].annotation
        model = annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None
        if model is None:
            args = getattr(annotation, "__args__", ())
            model = next((a for a in args if isinstance(a, type) and issubclass(a, BaseModel)), None)
        if model is None and depth < len(keys) - 1:
            raise ZrayError(f"--set {text}: {'.'.join(keys[: depth + 1])} takes a value, not sub-keys")


def _check_hyperparameter_name(raw: dict, name: str, text: str) -> None:
    model_name = raw.get("model")
    known = _known_hyperparameters(model_name)
    if known is not None and name not in known:
        raise ZrayError(
            f"--set {text}: {name!r} is not a hyperparameter of model {model_name!r}{_suggest(name, sorted(known))}"
        )


def _known_hyperparameters(model_name: Any) -> dict[str, Any] | None:
    from zray.models import available_models, model_hyperparameters

    if not isinstance(model_name, str) or model_name not in available_models():
        return None
    return {**TRAINING_HYPERPARAMETERS, **model_hyperparameters(model_name)}


def _suggest(word: str, candidates: list[str]) -> str:
    close = difflib.get_close_matches(word, candidates, n=1, cutoff=0.6)
    if close:
        return f"; did you mean {close[0]!r}?"
    return f"; expected one of: {', '.join(candidates)}" if candidates else ""


def validate(raw: dict, path: Path, overrides: dict[tuple[str, ...], str] | None = None) -> SearchSpace:
    """Validate a loaded mapping; the first problem becomes one ZrayError sentence."""
    overrides = overrides or {}
    try:
        space = SearchSpace.model_validate(raw)
    except ValidationError as exc:
        raise _first_error(exc, raw, path, overrides) from None
    _check_semantics(space, path, overrides)
    return space


def _where(path: Path, loc: tuple, overrides: dict[tuple[str, ...], str]) -> str:
    for key_path, text in overrides.items():
        if tuple(loc[: len(key_path)]) == key_path:
            return f"--set {text}: {'.'.join(map(str, loc))}"
    return f"{path}: {'.'.join(map(str, loc))}"


def _first_error(exc: ValidationError, raw: dict, path: Path, overrides) -> ZrayError:
    err = exc.errors()[0]
    loc = tuple(str(p) for p in err["loc"])
    kind = err["type"]
    cause = (err.get("ctx") or {}).get("error")
    if isinstance(cause, _KeyedError):
        return ZrayError(f"{_where(path, loc + (cause.key,), overrides)}: {cause.message}")
    if kind == "missing":
        section = loc[-1]
        if len(loc) == 1:
            return ZrayError(f"{path}: required section {section!r} is missing")
        return ZrayError(f"{_where(path, loc, overrides)}: is required but missing")
    if kind == "extra_forbidden":
        parent = _model_at(loc[:-1])
        known = list(parent.model_fields) if parent else []
        return ZrayError(f"{_where(path, loc, overrides)}: unknown key{_suggest(loc[-1], known)}")
    message = err["msg"]
    message = message[0].lower() + message[1:]
    message = message.replace("input should be", "expected").replace("value should be", "expected")
    got = err.get("input")
    return ZrayError(f"{_where(path, loc, overrides)}: {message}, got {got!r}")


def _model_at(loc: tuple[str, ...]) -> type[BaseModel] | None:
    model: type[BaseModel] | None = SearchSpace
    for i, key in enumerate(loc):
        if model is None:
            return None
        if model is SearchSpace and key == "search":
            return Distribution if i + 2 == len(loc) else None
        field = model.model_fields.get(key)
        if field is None:
            return None
        ann = field.annotation
        args = (ann,) + tuple(getattr(ann, "__args__", ()))
        model = next((a for a in args if isinstance(a, type) and issubclass(a, BaseModel)), None)
    return model


def _check_semantics(space: SearchSpace, path: Path, overrides) -> None:
    """Checks that need the model registry: the model name and hyperparameter names/types."""
    from zray.models import available_models

    models = available_models()
    if space.model not in models:
        raise ZrayError(
            f"{_where(path, ('model',), overrides)}: unknown model {space.model!r}; "
            f"known models: {', '.join(models)}"
        )
    known = space.hyperparameter_defaults()
    for section in ("fixed", "search"):
        for key in getattr(space, section):
            if key not in known:
                raise ZrayError(
                    f"{_where(path, (section, key), overrides)}: not a hyperparameter of model "
                    f"{space.model!r}{_suggest(key, sorted(known))}"
                )
    for key in space.fixed:
        if key in space.search:
            raise ZrayError(
                f"{path}: fixed.{key}: is also in search; a hyperparameter is either fixed or searched"
            )
    for key, value in space.fixed.items():
        problem = _type_problem(known[key], value)
        if problem:
            raise ZrayError(f"{_where(path, ('fixed', key), overrides)}: {problem}, got {value!r}")
    for key, dist in space.search.items():
        if dist.type == "categorical":
            for choice in dist.choices:
                problem = _type_problem(known[key], choice)
                if problem:
                    raise ZrayError(f"{_where(path, ('search', key, 'choices'), overrides)}: {problem}, got {choice!r}")
        elif dist.type == "float" and isinstance(known[key], int) and not isinstance(known[key], bool):
            raise ZrayError(
                f"{_where(path, ('search', key, 'type'), overrides)}: {key} takes whole numbers; "
                "use type: int, got 'float'"
            )
        elif isinstance(known[key], (bool, str)):
            raise ZrayError(
                f"{_where(path, ('search', key, 'type'), overrides)}: {key} takes "
                f"{type(known[key]).__name__} values; use type: categorical, got {dist.type!r}"
            )
    if known_schedule := space.fixed.get("lr_schedule"):
        if known_schedule not in LR_SCHEDULES:
            raise ZrayError(
                f"{_where(path, ('fixed', 'lr_schedule'), overrides)}: expected one of "
                f"{', '.join(LR_SCHEDULES)}, got {known_schedule!r}"
            )
    for key in ("epochs", "batch_size"):
        value = space.fixed.get(key)
        if isinstance(value, int) and value <= 0:
            raise ZrayError(f"{_where(path, ('fixed', key), overrides)}: must be > 0, got {value}")
    sigma = space.fixed.get("label_sigma")
    if isinstance(sigma, (int, float)) and sigma < 0:
        raise ZrayError(f"{_where(path, ('fixed', 'label_sigma'), overrides)}: must be >= 0, got {sigma}")
    dist = space.search.get("label_sigma")
    if dist is not None and dist.type != "categorical" and dist.low < 0:
        raise ZrayError(f"{_where(path, ('search', 'label_sigma', 'low'), overrides)}: must be >= 0, got {dist.low}")


def _type_problem(default: Any, value: Any) -> str | None:
    """Does ``value`` have the type of the hyperparameter whose default is ``default``?"""
    if isinstance(default, bool):
        return None if isinstance(value, bool) else "expected true or false"
    if isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
        return None if ok else "expected a whole number"
    if isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return None if ok else "expected a number"
    if isinstance(default, str):
        return None if isinstance(value, str) else "expected a string"
    return None


# ---------------------------------------------------------------------------
# Run identity


def _canonical(value: Any) -> Any:
    """JSON-stable form: floats by their shortest repr, whole floats kept distinct from ints."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return {"f": repr(float(value))}
    if isinstance(value, dict):
        return {str(k): _canonical(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    if hasattr(value, "item"):  # numpy scalars
        return _canonical(value.item())
    raise TypeError(f"cannot hash a value of type {type(value).__name__}")


def run_identity(model: str, hyperparameters: dict[str, Any], data_hash: str, length: int = 10) -> str:
    """A short hash of what makes a trial different: model type, hyperparameters, data.

    The same inputs give the same hash on any machine and Python version (no
    ``hash()``, no dict order); any change to them changes it.
    """
    payload = json.dumps(
        {"model": model, "hyperparameters": _canonical(hyperparameters), "data": data_hash},
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:length]

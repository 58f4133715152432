"""Model types by name: the YAML's ``model:`` key looks a builder up here.

A model type is a builder ``build(hp, spec) -> keras.Model`` registered with
its architecture hyperparameters and their defaults. The defaults are the
single source of truth: search spaces, ``zray models`` and saved models all
read them from here, and an unknown name is caught before any TensorFlow work.
Training hyperparameters (learning rate, batch size, epochs, schedule) belong
to the training configuration, not to a model type.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from zray.bins import RedshiftBins
from zray.errors import ZrayError

Builder = Callable[[dict, "ModelSpec"], Any]


@dataclass(frozen=True)
class ModelSpec:
    """What a model needs to know about the data: input size and output bins."""

    image_size: int = 64
    n_bands: int = 5
    bins: RedshiftBins = field(default_factory=RedshiftBins)

    def __post_init__(self) -> None:
        for key in ("image_size", "n_bands"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ZrayError(f"model spec: {key} must be a positive integer, got {value!r}")
        if not isinstance(self.bins, RedshiftBins):
            raise ZrayError(f"model spec: bins must be a RedshiftBins, got {self.bins!r}")

    def to_dict(self) -> dict:
        b = self.bins
        return {
            "image_size": self.image_size,
            "n_bands": self.n_bands,
            "bins": {"z_min": b.z_min, "z_max": b.z_max, "n_bins": b.n_bins},
        }

    @classmethod
    def from_dict(cls, data: Mapping) -> ModelSpec:
        bins = data.get("bins", {})
        return cls(
            image_size=data["image_size"],
            n_bands=data["n_bands"],
            bins=RedshiftBins(
                z_min=float(bins["z_min"]), z_max=float(bins["z_max"]), n_bins=int(bins["n_bins"])
            ),
        )


@dataclass(frozen=True)
class ModelType:
    """A registered builder with its hyperparameter defaults and a one-line description."""

    name: str
    build: Builder
    hyperparameters: Mapping[str, Any]
    description: str
    # Hyperparameters added after models of this type were first saved, each with
    # the value that rebuilds those older models as they were trained.
    introduced: Mapping[str, Any] = field(default_factory=dict)


_REGISTRY: dict[str, ModelType] = {}


def register(name: str, hyperparameters: Mapping[str, Any], description: str = "",
             introduced: Mapping[str, Any] | None = None):
    """Decorator registering ``build(hp, spec) -> keras.Model`` under ``name``.

    Defaults must be plain ``int``/``float``/``bool``/``str`` values: their
    types are how :func:`resolve_hyperparameters` checks what a search or a
    YAML file passes in. ``introduced`` names hyperparameters added after
    models of this type were first saved, with the value that reproduces
    those models (see :func:`recorded_hyperparameters`).
    """

    def decorator(build: Builder) -> Builder:
        if name in _REGISTRY:
            raise ValueError(f"model type {name!r} is already registered")
        for key, default in hyperparameters.items():
            if not isinstance(default, (int, float, bool, str)):
                raise TypeError(f"{name}.{key}: default must be int, float, bool or str")
        _REGISTRY[name] = ModelType(
            name=name,
            build=build,
            hyperparameters=MappingProxyType(dict(hyperparameters)),
            description=description or (build.__doc__ or "").strip().split("\n")[0],
            introduced=MappingProxyType(dict(introduced or {})),
        )
        return build

    return decorator


def available_models() -> list[str]:
    """Registered model names, sorted."""
    return sorted(_REGISTRY)


def model_type(name: str) -> ModelType:
    """The registration of ``name``; an unknown name lists the known ones."""
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        known = ", ".join(available_models())
        raise ZrayError(f"unknown model {name!r}; known models: {known}") from None


def model_hyperparameters(name: str) -> dict[str, Any]:
    """The architecture hyperparameters of model ``name`` and their defaults."""
    return dict(model_type(name).hyperparameters)


def describe(name: str) -> str:
    """The one-line description of model ``name``."""
    return model_type(name).description


def resolve_hyperparameters(name: str, hp: Mapping[str, Any] | None) -> dict[str, Any]:
    """Defaults overlaid with ``hp``, type-checked against the defaults' types.

    Ints are accepted for float defaults (YAML writes ``1`` for ``1.0``); a
    float is not accepted for an int default, since silently truncating a
    searched value would hide a bad search space.
    """
    defaults = model_type(name).hyperparameters
    resolved = dict(defaults)
    for key, value in (hp or {}).items():
        if key not in defaults:
            valid = ", ".join(sorted(defaults)) or "(none)"
            raise ZrayError(
                f"model {name!r} has no hyperparameter {key!r}; valid hyperparameters: {valid}"
            )
        resolved[key] = _coerce(name, key, value, defaults[key])
    return resolved


def recorded_hyperparameters(name: str, hp: Mapping[str, Any] | None) -> dict[str, Any]:
    """:func:`resolve_hyperparameters` for hyperparameters zray recorded when it
    trained or saved a model (``model.json``, a checkpoint's job).

    zray records every hyperparameter of a model it trains, so one missing from
    such a record was added to the model type later: it takes the value that
    rebuilds the older model as trained (the registration's ``introduced``),
    not today's default, whose weights would not fit it.
    """
    recorded = dict(hp or {})
    for key, before in model_type(name).introduced.items():
        recorded.setdefault(key, before)
    return resolve_hyperparameters(name, recorded)


def _coerce(model: str, key: str, value: Any, default: Any) -> Any:
    expected = type(default)
    ok = isinstance(value, expected) and not (isinstance(value, bool) and expected is not bool)
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not ok:
        raise invalid(model, key, f"of type {expected.__name__}", value)
    return value


def invalid(model: str, key: str, expected: str, value: Any) -> ZrayError:
    """The one message shape for a bad hyperparameter value (name, expected, got)."""
    return ZrayError(
        f"model {model!r}: hyperparameter {key!r} must be {expected}, "
        f"got {value!r} ({type(value).__name__})"
    )


def build_model(name: str, hp: Mapping[str, Any] | None = None, spec: ModelSpec | None = None):
    """Build model ``name`` with ``hp`` over its defaults, for data described by ``spec``."""
    entry = model_type(name)
    return entry.build(resolve_hyperparameters(name, hp), spec or ModelSpec())


def count_parameters(model) -> int:
    """Trainable parameters of a built Keras model."""
    return int(sum(int(w.shape.num_elements()) for w in model.trainable_weights))

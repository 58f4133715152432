"""Model types, looked up by the name in a search space's ``model:`` key.

Every public module of this package is a model type that registers itself
with :func:`register` when imported; they are all imported here, so adding a
model type means adding one module and touching nothing else. Module imports
are cheap: TensorFlow is imported only when a model is built.

Every model takes two inputs, ``image`` (H, W, bands; channels last, float32)
and ``ebv`` (1,), and returns ``pdf``, a softmax over ``spec.bins``.
"""

from __future__ import annotations

import importlib
import pkgutil

from zray.models._backend import keras
from zray.models._registry import (
    ModelSpec,
    ModelType,
    available_models,
    build_model,
    count_parameters,
    describe,
    model_hyperparameters,
    model_type,
    recorded_hyperparameters,
    register,
    resolve_hyperparameters,
)
from zray.models._saving import ModelInfo, load_model, read_info, save_model

__all__ = [
    "ModelInfo",
    "ModelSpec",
    "ModelType",
    "available_models",
    "build_model",
    "count_parameters",
    "describe",
    "keras",
    "load_model",
    "model_hyperparameters",
    "model_type",
    "read_info",
    "recorded_hyperparameters",
    "register",
    "resolve_hyperparameters",
    "save_model",
]


def _import_model_modules() -> None:
    for module in pkgutil.iter_modules(__path__):
        if not module.name.startswith("_"):
            importlib.import_module(f"{__name__}.{module.name}")


_import_model_modules()

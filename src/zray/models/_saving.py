"""Save and load models as ``model.json`` + ``weights.weights.h5``; no pickle.

The JSON names the registered model type, its full hyperparameters and the
data spec (image size, bands, bins), so loading rebuilds the architecture
from code and only reads numbers from the HDF5 file: a saved model can never
execute anything. Export bundles reuse this directory as is. The weights'
SHA-256 is recorded so a truncated or altered file is caught by name.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zray import __version__
from zray.atomic import publish_dir
from zray.errors import ZrayError, first_line
from zray.models._registry import (
    ModelSpec,
    build_model,
    count_parameters,
    recorded_hyperparameters,
    resolve_hyperparameters,
)

FORMAT_VERSION = 1
INFO_FILE = "model.json"
WEIGHTS_FILE = "weights.weights.h5"  # tf_keras picks its name-keyed H5 format by this suffix


@dataclass(frozen=True)
class ModelInfo:
    """What ``model.json`` records: enough to rebuild the model from the registry."""

    name: str
    hyperparameters: dict[str, Any]
    spec: ModelSpec
    weights_sha256: str | None = None


def save_model(model, path, name: str, hp: dict | None, spec: ModelSpec) -> Path:
    """Write ``model`` to directory ``path``, replacing a model saved there before.

    The directory is written under a temporary name and renamed when complete,
    so an interrupted save never leaves a half-written model behind.
    """
    path = Path(path)
    replaceable = path.is_dir() and ((path / INFO_FILE).is_file() or not any(path.iterdir()))
    if path.exists() and not replaceable:
        raise ZrayError(
            f"{path}: exists and is not a saved zray model; expected a new or empty folder"
        )
    hp = resolve_hyperparameters(name, hp)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        model.save_weights(str(tmp / WEIGHTS_FILE))
        info = {
            "format": FORMAT_VERSION,
            "zray_version": __version__,
            "model": name,
            "hyperparameters": hp,
            "spec": spec.to_dict(),
            "trainable_parameters": count_parameters(model),
            "weights_sha256": sha256_of(tmp / WEIGHTS_FILE),
        }
        (tmp / INFO_FILE).write_text(json.dumps(info, indent=2) + "\n")
        publish_dir(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path


def read_info(path) -> ModelInfo:
    """Read and check ``model.json`` in ``path`` without touching TensorFlow."""
    file = Path(path) / INFO_FILE
    try:
        data = json.loads(file.read_text())
    except FileNotFoundError:
        raise ZrayError(f"{file}: not found; expected a model saved by zray") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ZrayError(f"{file}: unreadable ({first_line(exc)}); expected JSON written by zray") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT_VERSION:
        got = data.get("format") if isinstance(data, dict) else data
        raise ZrayError(f"{file}: format {got!r}; expected format {FORMAT_VERSION}")
    try:
        spec = ModelSpec.from_dict(data["spec"])
        name, hp = data["model"], dict(data["hyperparameters"])
        hp = recorded_hyperparameters(name, hp)
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as exc:
        raise ZrayError(
            f"{file}: missing or malformed field {exc}; expected model, hyperparameters and spec"
        ) from None
    except ZrayError as exc:
        raise ZrayError(f"{file}: {exc}") from None
    return ModelInfo(name, hp, spec, data.get("weights_sha256"))


def check_weights(path) -> ModelInfo:
    """``model.json`` read and the weights file checked against its checksum; no TensorFlow.

    Cheap enough to run in a driver before any Ray worker loads the model, so
    a corrupt file is one sentence, not pages of remote tracebacks.
    """
    info = read_info(path)
    weights = Path(path) / WEIGHTS_FILE
    if not weights.is_file():
        raise ZrayError(f"{weights}: not found; expected the weights saved beside {INFO_FILE}")
    if not info.weights_sha256:
        raise ZrayError(f"{Path(path) / INFO_FILE}: no weights_sha256; expected the checksum zray writes beside "
                        "every model (save it again with zray)")
    if sha256_of(weights) != info.weights_sha256:
        raise ZrayError(
            f"{weights}: checksum differs from {INFO_FILE}; the file is corrupt or was replaced"
        )
    return info


def load_model(path):
    """Rebuild the saved model from the registry and load its weights: ``(model, info)``."""
    info = check_weights(path)
    weights = Path(path) / WEIGHTS_FILE
    model = build_model(info.name, info.hyperparameters, info.spec)
    try:
        model.load_weights(str(weights))
    except Exception as exc:  # h5py and Keras raise many types for a bad file
        raise ZrayError(f"{weights}: cannot be loaded into model {info.name!r} ({exc})") from None
    return model, info


def sha256_of(file: Path) -> str:
    """The SHA-256 of a file's bytes, as hex."""
    digest = hashlib.sha256()
    with open(file, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()

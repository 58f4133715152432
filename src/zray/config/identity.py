"""The run identity: a short, stable hash of what makes a trial different."""

from __future__ import annotations

import hashlib
import json
from typing import Any

__all__ = ["run_identity"]


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

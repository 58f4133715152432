"""The training loop's hyperparameters: each one's default and constraint, declared once.

Like scikit-learn's ``_parameter_constraints``, the declaration is data, and
one function applies it to a ``fixed:`` value, to each ``search:`` choice and
to both bounds of a searched range, so a value the training loop would not
understand (``lr_schedule: cosin``) is refused before anything runs.
Architecture hyperparameters belong to each model type (:mod:`zray.models`).

    >>> check("lr_schedule", "cosin")
    "expected one of 'constant', 'step', 'cosine'"
    >>> check("learning_rate", 0.0)
    'expected a number > 0'
    >>> check("epochs", 10) is None
    True
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["TRAINING", "DEFAULTS", "Interval", "Options", "Boolean", "check"]


@dataclass(frozen=True)
class Interval:
    """A number of ``kind`` (int or float) with ``low < x`` (or ``<=``) and ``x <= high``."""

    kind: type
    low: float | None = None
    high: float | None = None
    low_open: bool = False

    def problem(self, value: Any) -> str | None:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"expected {self.describe()}"
        if self.kind is int and not isinstance(value, int):
            return f"expected {self.describe()}"
        too_low = self.low is not None and (value <= self.low if self.low_open else value < self.low)
        too_high = self.high is not None and value > self.high
        return f"expected {self.describe()}" if too_low or too_high else None

    def describe(self) -> str:
        noun = "a whole number" if self.kind is int else "a number"
        parts = []
        if self.low is not None:
            parts.append(f"{'>' if self.low_open else '>='} {self.low:g}")
        if self.high is not None:
            parts.append(f"<= {self.high:g}")
        return f"{noun} {' and '.join(parts)}".strip()


@dataclass(frozen=True)
class Options:
    """One of a fixed set of values."""

    values: tuple

    def problem(self, value: Any) -> str | None:
        return None if value in self.values else f"expected one of {', '.join(map(repr, self.values))}"


@dataclass(frozen=True)
class Boolean:
    def problem(self, value: Any) -> str | None:
        return None if isinstance(value, bool) else "expected true or false"


#: name: (default, constraint)
TRAINING: dict[str, tuple[Any, Any]] = {
    "epochs": (30, Interval(int, 1)),
    "batch_size": (128, Interval(int, 1)),
    "learning_rate": (1.0e-4, Interval(float, 0.0, low_open=True)),
    # "step": divide the rate by lr_drop_factor at half the run (Lin et al. 2022).
    "lr_schedule": ("step", Options(("constant", "step", "cosine"))),
    "lr_drop_factor": (5.0, Interval(float, 1.0)),
    # The 8 symmetries of the square, drawn per image at every step.
    "augment": (True, Boolean()),
    # Width (in z) of a Gaussian spread over the bins as the training target;
    # 0 trains on the one-hot bin of z_spec, as Pasquet et al. 2019 did. A
    # width of about two bins lets a few thousand galaxies teach every bin
    # its neighbours and speeds learning several-fold.
    "label_sigma": (0.0, Interval(float, 0.0)),
}
DEFAULTS: dict[str, Any] = {name: default for name, (default, _) in TRAINING.items()}


def check(name: str, value: Any) -> str | None:
    """What is wrong with ``value`` for the training hyperparameter ``name`` (None: nothing,
    or not a training hyperparameter)."""
    if name not in TRAINING:
        return None
    return TRAINING[name][1].problem(value)

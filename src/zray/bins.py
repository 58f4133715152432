"""Redshift binning shared by models, metrics, data validation and export."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


def edge_above(z: float) -> float:
    """The smallest upper bin edge in hundredths that holds ``z`` (``z < edge``), for a hint:
    0.57 gives 0.58 (0.57 * 100 is 56.99999999999999 in floating point: a floor of it would give
    back 0.57, which does not hold 0.57)."""
    edge = math.floor(round(z * 100, 6)) / 100 + 0.01
    while edge <= z:  # the float32 a shard keeps can sit a hair above its decimal
        edge = round(edge + 0.01, 2)
    return round(edge, 2)


def edge_below(z: float) -> float:
    """The largest lower bin edge in hundredths, at least 0, that holds ``z`` (``edge <= z``)."""
    edge = math.floor(round(z * 100, 6)) / 100
    while edge > z:
        edge = round(edge - 0.01, 2)
    return max(round(edge, 2), 0.0)


@dataclass(frozen=True)
class RedshiftBins:
    """``n_bins`` equal-width bins over ``z_min <= z < z_max`` (Pasquet: 180 over 0-0.4)."""

    z_min: float = 0.0
    z_max: float = 0.4
    n_bins: int = 180

    @property
    def width(self) -> float:
        return (self.z_max - self.z_min) / self.n_bins

    @property
    def edges(self) -> np.ndarray:
        return np.linspace(self.z_min, self.z_max, self.n_bins + 1)

    @property
    def centres(self) -> np.ndarray:
        """Bin centres: point estimates use these, not left edges (a half-bin bias)."""
        return self.z_min + (np.arange(self.n_bins) + 0.5) * self.width

    def index(self, z: np.ndarray) -> np.ndarray:
        """Bin index of each redshift; values at or beyond the range are clipped."""
        idx = np.floor((np.asarray(z, dtype=np.float64) - self.z_min) / self.width).astype(np.int64)
        return np.clip(idx, 0, self.n_bins - 1)

    def contains(self, z: np.ndarray) -> np.ndarray:
        z = np.asarray(z, dtype=np.float64)
        return (z >= self.z_min) & (z < self.z_max)

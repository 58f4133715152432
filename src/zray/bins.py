"""Redshift binning shared by models, metrics, data validation and export."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


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

"""Photo-z metrics, defined once (docs/architecture.md, section 6); numpy only, no TensorFlow.

Training (every epoch), tuning, evaluate and the benchmarks all call these,
so a figure means the same thing everywhere.

A binned PDF is treated as a histogram: probability uniform within each bin,
so its CDF is piecewise linear between bin edges. Point values use bin
centres (the reference code used left edges, a half-bin bias of 0.0011 at
180 bins over 0-0.4); quantiles (median, 68% interval), PIT and CRPS use the
piecewise-linear CDF, so they are exact for that histogram, not rounded to a
bin.

Conventions: ``pdf`` is ``(N, n_bins)`` (or one ``(n_bins,)`` row), rows are
renormalised to sum to 1; ``dz = (z_phot - z_spec) / (1 + z_spec)``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from zray.bins import RedshiftBins

__all__ = ["FROM_ROW_FIGURES", "ODDS_WINDOW", "POINT_ESTIMATES", "REPORTED_METRICS", "VALIDATION_METRICS",
           "bias_mean", "bias_median", "cdf", "crps", "crps_values", "direction", "dz", "log_loss_values",
           "outlier_fraction", "pit", "pit_ks", "point_estimates", "probability_within", "quantile",
           "rail_outlier_rate", "random_draws", "row_figures", "sigma_iqr", "sigma_mad", "summary",
           "validation_metrics"]

#: Central 68.27% interval (Gaussian 1 sigma) for ``lo68``/``hi68``.
_LO68, _HI68 = 0.5 - 0.682689492 / 2, 0.5 + 0.682689492 / 2
#: Central 95% interval for ``lo95``/``hi95``.
_LO95, _HI95 = 0.025, 0.975
#: ODDS: the probability within ``z_mode +- ODDS_WINDOW * (1 + z_mode)``. 0.03 is about twice the
#: scatter of a good photo-z at these redshifts, so a galaxy whose PDF is one clean peak has ODDS
#: near 1 and a double-peaked or flat one much less (the cut BPZ users make on ODDS).
ODDS_WINDOW = 0.03
POINT_ESTIMATES = ("mean", "median", "mode")

#: What training reports on the validation split every epoch, and which way is
#: better: the one list that config validation (``tune.metric``), checkpoint
#: scoring, ranking, export and display read. ``val_bias`` and
#: ``val_bias_median`` are signed (0 is best), so they are reported, not ranked by.
VALIDATION_METRICS: dict[str, str] = {
    "val_sigma_mad": "min",
    "val_outlier_fraction": "min",
    "val_crps": "min",
    "val_loss": "min",
}
REPORTED_METRICS = ("val_sigma_mad", "val_bias", "val_bias_median", "val_outlier_fraction", "val_crps",
                    "val_loss")


def _rows(pdf, bins: RedshiftBins) -> np.ndarray:
    p = np.atleast_2d(np.asarray(pdf, dtype=np.float64))
    if p.shape[-1] != bins.n_bins:
        raise ValueError(f"pdf has {p.shape[-1]} bins; expected {bins.n_bins}")
    total = p.sum(axis=1, keepdims=True)
    if np.any(total <= 0) or not np.all(np.isfinite(total)):
        raise ValueError("every pdf row must have a positive, finite sum")
    return p / total


def _cdf_at_edges(p: np.ndarray) -> np.ndarray:
    """CDF at the n_bins + 1 edges: 0 at the first, 1 at the last."""
    cdf = np.zeros((p.shape[0], p.shape[1] + 1))
    np.cumsum(p, axis=1, out=cdf[:, 1:])
    cdf[:, -1] = 1.0  # remove round-off so quantiles near 1 stay inside the range
    return cdf


def quantile(pdf, bins: RedshiftBins, q) -> np.ndarray:
    """Redshift at which each row's piecewise-linear CDF reaches ``q`` (0 < q < 1).

    ``q`` is one level for every row, or one level per row (``random_draws`` uses that).
    """
    p = _rows(pdf, bins)
    cum = _cdf_at_edges(p)
    q = np.asarray(q, dtype=np.float64).reshape(-1, 1) if np.ndim(q) else q
    # k: the bin where the CDF crosses q (cdf[k] < q <= cdf[k+1]); empty bins are skipped.
    k = np.clip((cum[:, 1:-1] < q).sum(axis=1), 0, bins.n_bins - 1)
    rows = np.arange(p.shape[0])
    mass = p[rows, k]
    q = np.reshape(q, -1) if np.ndim(q) else q
    frac = np.where(mass > 0, (q - cum[rows, k]) / np.where(mass > 0, mass, 1.0), 0.5)
    return bins.edges[k] + np.clip(frac, 0.0, 1.0) * bins.width


def point_estimates(pdf, bins: RedshiftBins) -> dict[str, np.ndarray]:
    """Per-object ``mean``, ``median``, ``mode``, ``std``, ``lo68``, ``hi68``, ``lo95``, ``hi95``, ``odds``.

    Mean, std and mode use bin centres; the median and the central 68.27% and
    95% intervals interpolate the CDF within a bin; ``odds`` is the
    probability within ``mode +- ODDS_WINDOW * (1 + mode)``.
    """
    p = _rows(pdf, bins)
    c = bins.centres
    mean = p @ c
    mode = c[np.argmax(p, axis=1)]
    return {
        "mean": mean,
        "median": quantile(p, bins, 0.5),
        "mode": mode,
        "std": np.sqrt(np.sum(p * (c - mean[:, None]) ** 2, axis=1)),
        "lo68": quantile(p, bins, _LO68),
        "hi68": quantile(p, bins, _HI68),
        "lo95": quantile(p, bins, _LO95),
        "hi95": quantile(p, bins, _HI95),
        "odds": probability_within(p, bins, mode - ODDS_WINDOW * (1 + mode), mode + ODDS_WINDOW * (1 + mode)),
    }


def cdf(pdf, bins: RedshiftBins, z) -> np.ndarray:
    """Each row's piecewise-linear CDF at its own ``z`` (0 below the bins, 1 above)."""
    p = _rows(pdf, bins)
    cum = _cdf_at_edges(p)
    z = np.asarray(z, dtype=np.float64).reshape(-1)
    pos = np.clip((z - bins.z_min) / bins.width, 0.0, bins.n_bins)  # position in bins
    k = np.minimum(np.floor(pos).astype(np.int64), bins.n_bins - 1)
    rows = np.arange(p.shape[0])
    return np.clip(cum[rows, k] + p[rows, k] * (pos - k), 0.0, 1.0)


def probability_within(pdf, bins: RedshiftBins, lo, hi) -> np.ndarray:
    """Each row's probability between its own ``lo`` and ``hi``."""
    return cdf(pdf, bins, hi) - cdf(pdf, bins, lo)


def random_draws(pdf, bins: RedshiftBins, ids, seed: int = 0) -> np.ndarray:
    """One redshift drawn from each row's PDF, the same for the same (``id``, ``seed``) in any batch.

    The uniform number behind each draw is a hash of the id (SplitMix64), so
    a galaxy keeps its draw however the input is split or ordered; the
    draws of many galaxies stack into n(z) with the PDFs' own spread.
    """
    x = np.asarray(ids).astype(np.uint64) + np.uint64(seed) * np.uint64(0x9E3779B97F4A7C15)
    with np.errstate(over="ignore"):
        x = x + np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        x = x ^ (x >> np.uint64(31))
    u = ((x >> np.uint64(11)).astype(np.float64) + 0.5) / float(1 << 53)  # in (0, 1)
    return quantile(pdf, bins, u)


def dz(z_phot, z_spec) -> np.ndarray:
    """Normalised residual ``(z_phot - z_spec) / (1 + z_spec)``."""
    z_spec = np.asarray(z_spec, dtype=np.float64)
    return (np.asarray(z_phot, dtype=np.float64) - z_spec) / (1.0 + z_spec)


def bias_mean(dz_values) -> float:
    """Mean of dz (Pasquet et al.'s bias)."""
    return float(np.mean(dz_values))


def bias_median(dz_values) -> float:
    """Median of dz (RAIL's bias)."""
    return float(np.median(dz_values))


def sigma_mad(dz_values) -> float:
    """``1.4826 * median(|dz - median(dz)|)``: a Gaussian sigma robust to outliers."""
    d = np.asarray(dz_values, dtype=np.float64)
    return float(1.4826 * np.median(np.abs(d - np.median(d))))


def outlier_fraction(dz_values, threshold: float = 0.05) -> float:
    """Fraction with ``|dz| > threshold`` (Pasquet's eta uses 0.05)."""
    return float(np.mean(np.abs(np.asarray(dz_values, dtype=np.float64)) > threshold))


def sigma_iqr(dz_values) -> float:
    """Interquartile range of dz / 1.349 (a Gaussian sigma; RAIL's scatter)."""
    q25, q75 = np.percentile(np.asarray(dz_values, dtype=np.float64), [25, 75])
    return float((q75 - q25) / 1.349)


def rail_outlier_rate(dz_values) -> float:
    """RAIL's outlier rate: fraction with ``|dz| > max(0.06, 3 sigma_IQR)``."""
    return outlier_fraction(dz_values, max(0.06, 3.0 * sigma_iqr(dz_values)))


def pit(pdf, bins: RedshiftBins, z_spec) -> np.ndarray:
    """Probability integral transform: each row's CDF at its ``z_spec``.

    Linear within the bin holding ``z_spec``; 0 below the range, 1 above it.
    A calibrated set of PDFs gives PIT values uniform on [0, 1].
    """
    return cdf(pdf, bins, z_spec)


def crps_values(pdf, bins: RedshiftBins, z_spec) -> np.ndarray:
    """Per-object CRPS, ``integral (F(z) - H(z - z_spec))^2 dz``, exact for the binned CDF.

    Within a bin F is linear, so the integral of F^2 (left of ``z_spec``) and
    of (1 - F)^2 (right of it) over a piece with end values a, b and length L
    is ``L (a^2 + a b + b^2) / 3`` in F or 1 - F. A ``z_spec`` outside the bin
    range adds the distance to the range, where F is 0 or 1.
    """
    p = _rows(pdf, bins)
    cum = _cdf_at_edges(p)
    z = np.asarray(z_spec, dtype=np.float64).reshape(-1, 1)
    w = bins.width
    left_len = np.clip(z - bins.edges[:-1], 0.0, w)  # part of each bin below z_spec
    a, b = cum[:, :-1], cum[:, 1:]
    c = a + (b - a) * left_len / w  # F at the split point
    below = left_len * (a * a + a * c + c * c) / 3.0
    uc, ub = 1.0 - c, 1.0 - b
    above = (w - left_len) * (uc * uc + uc * ub + ub * ub) / 3.0
    outside = np.maximum(z - bins.z_max, 0.0) + np.maximum(bins.z_min - z, 0.0)
    return (below + above).sum(axis=1) + outside[:, 0]


def crps(pdf, bins: RedshiftBins, z_spec) -> float:
    """Mean CRPS over the objects (lower is better; in units of redshift)."""
    return float(np.mean(crps_values(pdf, bins, z_spec)))


def pit_ks(pit_values) -> float:
    """Kolmogorov-Smirnov statistic of PIT values against the uniform distribution."""
    u = np.sort(np.asarray(pit_values, dtype=np.float64).reshape(-1))
    n = u.size
    i = np.arange(1, n + 1)
    return float(max(np.max(i / n - u), np.max(u - (i - 1) / n)))


def summary(pdf, bins: RedshiftBins, z_spec, point: str = "median") -> dict[str, float]:
    """Headline metrics of a set of PDFs against spectroscopic redshifts.

    ``point`` picks the point estimate behind the dz-based figures. The
    default is the median: unlike the mode it is not quantised to bin
    centres, and unlike the mean it is not dragged by a secondary peak, so it
    gives the most stable sigma_MAD; "mean" and "mode" are there to compare
    with papers that use them.
    """
    if point not in POINT_ESTIMATES:
        raise ValueError(f"point must be one of {', '.join(POINT_ESTIMATES)}; got {point!r}")
    z_spec = np.asarray(z_spec, dtype=np.float64).reshape(-1)
    z_phot = point_estimates(pdf, bins)[point]
    d = dz(z_phot, z_spec)
    return {
        "n": int(d.size),
        "sigma_mad": sigma_mad(d),
        "bias_mean": bias_mean(d),
        "bias_median": bias_median(d),
        "outlier_fraction": outlier_fraction(d),
        "sigma_iqr": sigma_iqr(d),
        "rail_outlier_rate": rail_outlier_rate(d),
        "crps": crps(pdf, bins, z_spec),
        "pit_ks": pit_ks(pit(pdf, bins, z_spec)),
    }


def log_loss_values(pdf, bins: RedshiftBins, z_spec) -> np.ndarray:
    """Per-galaxy -log of the probability in z_spec's bin (training's loss, one-hot targets)."""
    z = np.asarray(z_spec, dtype=np.float64).reshape(-1)
    p_true = _rows(pdf, bins)[np.arange(len(z)), bins.index(z)]
    return -np.log(np.clip(p_true, 1e-7, 1.0))


def row_figures(pdf, bins: RedshiftBins, z_spec) -> dict[str, np.ndarray]:
    """Per-galaxy figures behind the ranking metrics (:data:`FROM_ROW_FIGURES`): the dz of
    the median, the CRPS and the log loss, for recomputing a metric on resampled galaxies."""
    pdf = np.asarray(pdf, dtype=np.float64)
    z = np.asarray(z_spec, dtype=np.float64).reshape(-1)
    return {"dz": dz(point_estimates(pdf, bins)["median"], z), "crps": crps_values(pdf, bins, z),
            "log_loss": log_loss_values(pdf, bins, z)}


#: Each ranking metric of :data:`VALIDATION_METRICS` as a function of :func:`row_figures`'
#: per-galaxy figures, and the one figure it reads.
FROM_ROW_FIGURES: dict[str, tuple[str, Callable[[np.ndarray], float]]] = {
    "val_sigma_mad": ("dz", sigma_mad),
    "val_outlier_fraction": ("dz", outlier_fraction),
    "val_crps": ("crps", lambda v: float(np.mean(v))),
    "val_loss": ("log_loss", lambda v: float(np.mean(v))),
}


def validation_metrics(pdf, bins: RedshiftBins, z_spec) -> dict[str, float]:
    """The ``val_*`` figures of :data:`REPORTED_METRICS` (plus ``val_rows``) for PDFs on the validation split."""
    pdf = np.asarray(pdf, dtype=np.float64)
    z = np.asarray(z_spec, dtype=np.float64)
    s = summary(pdf, bins, z)
    return {
        "val_loss": float(np.mean(log_loss_values(pdf, bins, z))),
        "val_sigma_mad": s["sigma_mad"],
        "val_bias": s["bias_mean"],
        "val_bias_median": s["bias_median"],
        "val_outlier_fraction": s["outlier_fraction"],
        "val_crps": s["crps"],
        "val_rows": int(len(z)),
    }


def direction(metric: str) -> str:
    """``min`` or ``max``: which way ``metric`` (one of :data:`VALIDATION_METRICS`) is better."""
    try:
        return VALIDATION_METRICS[metric]
    except KeyError:
        raise ValueError(f"{metric!r} is not a ranking metric; expected one of "
                         f"{', '.join(VALIDATION_METRICS)}") from None

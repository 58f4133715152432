"""The evaluation report's figures, drawn with matplotlib's Agg backend (no display).

Each function draws one figure from plain arrays and writes one PNG; the
figures follow the photo-z literature (Pasquet et al. 2019, RAIL): redshift
on both axes of the scatter, dz = (z_phot - z_spec) / (1 + z_spec) in the
binned panels.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

DPI = 110


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=DPI, format="png")
    _pyplot().close(fig)
    return path


def density(z_spec, z_phot, path, *, upper: float, outlier: float = 0.05, label: str = "median") -> Path:
    """z_phot against z_spec as a 2-D histogram (log colour), with the 1:1 line and
    the outlier limits |dz| = ``outlier``."""
    from matplotlib.colors import LogNorm

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.6, 5))
    edges = np.linspace(0.0, upper, 81)
    h, _, _ = np.histogram2d(z_spec, z_phot, bins=[edges, edges])
    mesh = ax.pcolormesh(edges, edges, np.ma.masked_equal(h.T, 0), norm=LogNorm(vmin=1, vmax=max(h.max(), 2)),
                         cmap="viridis", shading="flat")
    fig.colorbar(mesh, ax=ax, label="galaxies per cell")
    z = np.array([0.0, upper])
    ax.plot(z, z, color="k", lw=0.8)
    for sign in (1, -1):
        ax.plot(z, z + sign * outlier * (1 + z), color="tab:red", lw=0.8, ls="--")
    ax.set(xlim=(0, upper), ylim=(0, upper), xlabel="spectroscopic z",
           ylabel=f"photometric z (PDF {label})", title=f"z_phot vs z_spec ({len(z_spec)} galaxies)")
    return _save(fig, Path(path))


def confusion(z_spec, z_phot, edges, path) -> Path:
    """Confusion matrix over redshift bins: each row (true bin) normalised to 1."""
    plt = _pyplot()
    k = len(edges) - 1
    t = np.clip(np.digitize(z_spec, edges) - 1, 0, k - 1)
    p = np.clip(np.digitize(z_phot, edges) - 1, 0, k - 1)
    counts = np.zeros((k, k), dtype=np.int64)
    np.add.at(counts, (t, p), 1)
    rows = counts.sum(axis=1, keepdims=True)
    frac = np.divide(counts, rows, out=np.zeros_like(counts, dtype=float), where=rows > 0)
    fig, ax = plt.subplots(figsize=(6.4, 5.4))
    im = ax.imshow(frac, origin="lower", cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(im, ax=ax, label="fraction of the true bin")
    for i in range(k):
        for j in range(k):
            if counts[i, j]:
                ax.text(j, i, str(counts[i, j]), ha="center", va="center", fontsize=6,
                        color="white" if frac[i, j] > 0.5 else "black")
    ticks = [f"{edges[i]:.2f}-{edges[i + 1]:.2f}" for i in range(k)]
    ax.set_xticks(range(k), ticks, rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(k), ticks, fontsize=7)
    ax.set(xlabel="photometric z bin", ylabel="spectroscopic z bin",
           title="Confusion matrix (counts; colour: row fraction)")
    return _save(fig, Path(path))


def pit_histogram(pit_values, path, *, ks: float, n_bins: int = 20) -> Path:
    """PIT histogram; flat at 1 (dashed) for calibrated PDFs."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.6, 4))
    ax.hist(pit_values, bins=n_bins, range=(0, 1), density=True, color="tab:blue", alpha=0.8)
    ax.axhline(1.0, color="k", ls="--", lw=0.8)
    ax.set(xlim=(0, 1), xlabel="PIT", ylabel="density", title=f"PIT histogram (KS statistic {ks:.3f})")
    return _save(fig, Path(path))


def binned(rows: list[dict], path, *, xlabel: str) -> Path:
    """sigma_MAD (top) and bias, mean and median (bottom), per bin of ``rows``."""
    plt = _pyplot()
    x = np.array([r["centre"] for r in rows])
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(5.6, 5.6), sharex=True)
    top.plot(x, [r["sigma_mad"] for r in rows], "o-", color="tab:blue")
    top.set(ylabel="sigma_MAD", title=f"Scatter and bias against {xlabel}")
    top.set_ylim(bottom=0)
    bottom.plot(x, [r["bias_mean"] for r in rows], "o-", color="tab:orange", label="bias (mean dz)")
    bottom.plot(x, [r["bias_median"] for r in rows], "s--", color="tab:green", label="bias (median dz)")
    bottom.axhline(0.0, color="k", lw=0.8)
    bottom.set(xlabel=xlabel, ylabel="bias")
    bottom.legend(fontsize=8)
    return _save(fig, Path(path))

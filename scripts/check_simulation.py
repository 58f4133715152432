"""Is the simulation realistic? Three checks anyone can look at.

1. Colour versus redshift (PNG): measured aperture g-r and r-i against the
   true z, with the CWW E and Sbc template tracks; red galaxies' g-r should
   rise from about 0.8 at z~0.02 to about 1.4 at z~0.2.
2. A gri composite grid of galaxies ordered by redshift (PNG).
3. sigma_MAD of a k-nearest-neighbours regressor on dereddened aperture
   colours, trained on the train split and scored on val+test; SDSS-like
   data gives about 0.015-0.02.

    python scripts/check_simulation.py                       # simulates 3000 at 32x32 (~20 s on 2 cores)
    python scripts/check_simulation.py --data data/sim --out report/sim_check
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from zray.baselines import knn_predict
from zray.data import BANDS, load_arrays, read_manifest
from zray.data.simulate import catalog_path, simulate
from zray.data.templates import colour_grid
from zray.metrics import dz, outlier_fraction, sigma_mad
from zray.photometry import aperture_magnitudes


def colour_plot(z, mags, red, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid = colour_grid()
    zt = np.linspace(0.0, 0.4, 81)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    for ax, (a, b) in zip(axes, [("g", "r"), ("r", "i")]):
        ia, ib = BANDS.index(a), BANDS.index(b)
        colour = mags[:, ia] - mags[:, ib]
        ax.scatter(z[red], colour[red], s=3, c="tab:red", alpha=0.5, label="red (true type)")
        ax.scatter(z[~red], colour[~red], s=3, c="tab:blue", alpha=0.5, label="blue")
        for t, name, style in [(0.0, "E template", "k-"), (1.0, "Sbc template", "k--")]:
            track = grid.colour_terms(zt, np.full(zt.size, t))
            ax.plot(zt, track[:, ia] - track[:, ib], style, label=name)
        ax.set_xlabel("true redshift")
        ax.set_ylabel(f"aperture {a}-{b} (dereddened)")
        ax.set_xlim(0, 0.35)
        ax.set_ylim(-0.2, 2.2 if a == "g" else 1.2)
    axes[0].legend(loc="upper left", markerscale=3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def image_grid(images, z, path: Path, n_side: int = 6) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from astropy.visualization import make_lupton_rgb

    pick = np.argsort(z)[np.linspace(0, len(z) - 1, n_side * n_side).astype(int)]
    fig, axes = plt.subplots(n_side, n_side, figsize=(1.6 * n_side, 1.6 * n_side))
    for ax, i in zip(axes.flat, pick):
        g, r, ii = (images[i, BANDS.index(x)] for x in "gri")
        ax.imshow(make_lupton_rgb(ii, r, g, stretch=0.5, Q=8), origin="lower")
        ax.set_title(f"z={z[i]:.3f}", fontsize=8)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, help="existing dataset (default: simulate one into --out/data)")
    ap.add_argument("--n", type=int, default=3000, help="galaxies to simulate when --data is not given")
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--k", type=int, default=10, help="neighbours in the kNN")
    ap.add_argument("--out", type=Path, default=Path("report/sim_check"))
    args = ap.parse_args()

    args.out.mkdir(parents=True, exist_ok=True)
    data = args.data or args.out / "data"
    if not (data / "manifest.json").exists():
        t0 = time.perf_counter()
        simulate(data, args.n, size=args.size, seed=args.seed, workers=args.workers)
        print(f"simulated {args.n} galaxies in {time.perf_counter() - t0:.0f} s")
    manifest = read_manifest(data)
    parts = {s: load_arrays(data, s) for s in manifest.splits if manifest.rows[s]}
    mags = {s: aperture_magnitudes(p["image"], p["ebv"]) for s, p in parts.items()}
    train_x = -np.diff(mags["train"], axis=1)
    test = [s for s in ("val", "test") if s in parts]
    test_x = np.concatenate([-np.diff(mags[s], axis=1) for s in test])
    test_z = np.concatenate([parts[s]["z_spec"] for s in test])
    z_knn = knn_predict(train_x, parts["train"]["z_spec"], test_x, args.k)
    d = dz(z_knn, test_z)
    with_r = [np.column_stack([-np.diff(mags[s], axis=1), mags[s][:, 2]]) for s in ("train", *test)]
    d_r = dz(knn_predict(with_r[0], parts["train"]["z_spec"], np.concatenate(with_r[1:]), args.k), test_z)

    all_z = np.concatenate([p["z_spec"] for p in parts.values()])
    all_ids = np.concatenate([p["id"] for p in parts.values()])
    all_mags = np.concatenate(list(mags.values()))
    red = np.zeros(all_z.size, bool)
    cat = catalog_path(data)
    if cat.exists():
        import pyarrow.parquet as pq

        truth = pq.read_table(cat, columns=["id", "red"]).to_pandas().set_index("id")
        red = truth.loc[all_ids, "red"].to_numpy()
    colour_plot(all_z, all_mags, red, args.out / "colour_vs_z.png")
    images = np.concatenate([p["image"] for p in parts.values()])
    image_grid(images, all_z, args.out / "gri_grid.png")

    print(f"dataset: {data} ({manifest.total_rows} galaxies, {manifest.image_shape[1]}x{manifest.image_shape[2]} px)")
    print(f"median z: {np.median(all_z):.4f}  (SDSS MGS: about 0.09-0.10)")
    print(f"red fraction (true type): {red.mean():.2f}")
    print(
        f"kNN (k={args.k}) on aperture colours, train {len(train_x)} -> val+test {len(test_x)}: "
        f"sigma_MAD {sigma_mad(d):.4f}, outliers(|dz|>0.05) {outlier_fraction(d):.3f}  "
        f"(expected about 0.015-0.02)"
    )
    print(f"kNN on colours + aperture r: sigma_MAD {sigma_mad(d_r):.4f}, outliers {outlier_fraction(d_r):.3f}")
    print(f"plots: {args.out / 'colour_vs_z.png'}, {args.out / 'gri_grid.png'}")


if __name__ == "__main__":
    main()

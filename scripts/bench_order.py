"""Row order never matters: a catalogue sorted by redshift trains as well as one in any other order.

One seeded protocol, the quickstart's recipe (`cnn_phot`, 15 epochs, batch 32,
cosine schedule, 32x32 crop) on the same galaxies written three ways:

1. A catalogue (id, z, dereddened magnitudes, E(B-V)) of ``--n`` simulated
   galaxies, rendered by ``zray simulate --catalog`` once in the catalogue's
   own order and once sorted by redshift: zray writes both in the order of a
   hash of the id and seeds each galaxy from its id, so the two datasets must
   be identical (same content hash).
2. The same rows written sorted by redshift, as another tool would write them
   (``DatasetWriter`` keeps the order rows are added in): ``zray inspect``
   warns about it, and training must not care.
3. Training on (1) and on (2), with 1 and 2 workers, with the training split
   in memory and, for (2), streamed from Parquet as a split too large for the
   object store is. Validation galaxies are the same in every run (the split
   is by id).

It prints one table (validation sigma_MAD, outlier fraction, ratio to the
constant predictor) and, per worker count, the ratio of the sorted files'
sigma_MAD to the zray-written one's (the goal: within 5%).

    python scripts/bench_order.py                   # 5,000 galaxies at 64x64: ~15 min on 2 cores
    python scripts/bench_order.py --n 2000 --epochs 3   # a few minutes: checks the protocol
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np


def write_catalogues(sim: Path, out: Path) -> tuple[Path, Path]:
    """The simulated galaxies' catalogue as CSV: in its own order, and sorted by redshift."""
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    from zray.data.shards import BANDS

    cat = pq.read_table(sim / "catalog.parquet", columns=["id", "z", *(f"mag_{b}" for b in BANDS), "ebv"])
    own, by_z = out / "catalogue.csv", out / "catalogue-by-z.csv"
    pcsv.write_csv(cat, own)
    pcsv.write_csv(cat.take(np.argsort(cat.column("z").to_numpy(), kind="stable")), by_z)
    return own, by_z


def write_sorted_by_other_tool(data: Path, out: Path) -> None:
    """``data``'s rows rewritten in redshift order, shards and all."""
    from zray.data import load_arrays
    from zray.data.writer import DatasetWriter

    parts = [load_arrays(data, s) for s in ("train", "val", "test")]
    rows = {k: np.concatenate([p[k] for p in parts]) for k in ("id", "image", "z_spec", "ebv")}
    order = np.argsort(rows["z_spec"], kind="stable")
    with DatasetWriter(out, label="other tool") as writer:
        for at in range(0, len(order), 1000):
            sl = order[at: at + 1000]
            writer.add(*(rows[k][sl] for k in ("id", "image", "z_spec", "ebv")))


def train_once(data: Path, runs: Path, name: str, workers: int, epochs: int, streamed: bool) -> dict:
    from zray import config, train
    from zray.train import driver

    overrides = [f"data.path={data}", f"fixed.epochs={epochs}", f"resources.num_workers={workers}",
                 f"resources.cpus_per_worker={0.9 / workers:.2f}"]
    space = config.load(Path(__file__).resolve().parents[1] / "search_spaces" / "quickstart.yaml", overrides)
    fraction = driver.MATERIALIZE_FRACTION
    driver.MATERIALIZE_FRACTION = 0.0 if streamed else fraction
    try:
        summary = train.run(space, runs_dir=runs, name=name)
    finally:
        driver.MATERIALIZE_FRACTION = fraction
    best = min(summary["history"], key=lambda h: h["val_sigma_mad"])
    return {"sigma_mad": best["val_sigma_mad"], "outliers": best["val_outlier_fraction"],
            "constant": (summary["baselines"]["splits"]["val"]["constant"]["sigma_mad"]
                         if summary["baselines"] else None),
            "wall_s": summary["wall_time_s"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=5000, help="galaxies")
    ap.add_argument("--size", type=int, default=64, help="rendered cutout size (training crops 32x32)")
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--workers", default="1,2", help="worker counts to train with")
    ap.add_argument("--keep", type=Path, default=None, help="keep the datasets and runs in this folder")
    args = ap.parse_args()

    from zray.data import read_manifest, simulate, simulate_from_catalog
    from zray.data.validate import inspect_dataset

    t0 = time.perf_counter()
    tmp = args.keep or Path(tempfile.mkdtemp(prefix="zray-order-"))
    tmp.mkdir(parents=True, exist_ok=True)

    def made(name: str) -> bool:  # kept from an earlier run with the same --keep
        return (tmp / name / "manifest.json").is_file()

    if not made("sim"):
        simulate(tmp / "sim", args.n, size=args.size, seed=1, progress=False)
    own, by_z = write_catalogues(tmp / "sim", tmp)
    for name, cat in (("from-catalogue", own), ("from-catalogue-by-z", by_z)):
        if not made(name):
            simulate_from_catalog(cat, tmp / name, size=args.size, progress=False)
    a, b = read_manifest(tmp / "from-catalogue"), read_manifest(tmp / "from-catalogue-by-z")
    print(f"zray simulate --catalog, catalogue in its own order vs sorted by z: "
          f"{'identical shards' if a.hash == b.hash else 'DIFFERENT shards'} ({a.hash[:19]}..., {b.hash[:19]}...)")
    if not made("sorted-by-other-tool"):
        write_sorted_by_other_tool(tmp / "from-catalogue-by-z", tmp / "sorted-by-other-tool")
    for name in ("from-catalogue-by-z", "sorted-by-other-tool"):
        warnings = inspect_dataset(tmp / name).warnings
        print(f"zray inspect {name}: {warnings[0] if warnings else 'no order warning'}")
    print(f"data ready in {time.perf_counter() - t0:.0f} s; training rows {read_manifest(tmp / 'from-catalogue').rows}")

    shutil.rmtree(tmp / "runs", ignore_errors=True)  # a run of the same name would resume
    rows = []
    for workers in (int(w) for w in args.workers.split(",")):
        for label, data, streamed in (("zray-written (from the z-sorted catalogue)", "from-catalogue-by-z", False),
                                      ("sorted by z (other tool), in memory", "sorted-by-other-tool", False),
                                      ("sorted by z (other tool), streamed", "sorted-by-other-tool", True)):
            name = f"{data}-w{workers}{'-streamed' if streamed else ''}"
            result = train_once(tmp / data, tmp / "runs", name, workers, args.epochs, streamed)
            rows.append((label, workers, result))
            print(f"  trained {name}: val sigma_MAD {result['sigma_mad']:.4f} in {result['wall_s']:.0f} s", flush=True)

    print(f"\n{'training rows':<45} {'workers':>7} {'val sigma_MAD':>13} {'outliers':>9} {'vs constant':>11}")
    for label, workers, r in rows:
        vs = f"{r['sigma_mad'] / r['constant']:.2f}x" if r["constant"] else "-"
        print(f"{label:<45} {workers:>7} {r['sigma_mad']:>13.4f} {100 * r['outliers']:>8.1f}% {vs:>11}")
    for workers in sorted({w for _, w, _ in rows}):
        mine = {label: r["sigma_mad"] for label, w, r in rows if w == workers}
        ref = mine["zray-written (from the z-sorted catalogue)"]
        ratios = ", ".join(f"{label.split(', ')[-1]} {v / ref:.3f}x" for label, v in mine.items()
                           if label.startswith("sorted"))
        print(f"{workers} worker(s): sorted files against zray-written: {ratios}")
    print(f"total {time.perf_counter() - t0:.0f} s; data in {tmp}")


if __name__ == "__main__":
    main()

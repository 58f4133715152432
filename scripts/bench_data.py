"""Data throughput: the simulator, and the zray reader against plain pyarrow.

1. Simulator: galaxies per second on one core (rendering with GalSim plus
   noise; the population draw is excluded and reported separately).
2. Reader: rows per second read and preprocessed (channels-last, pixel
   scaling) through the zray Ray Data reader, versus pyarrow reading the same
   files into numpy and applying the same preprocess_batch, in the same run.
   The ratio shows what Ray Data's streaming costs (or gains from parallel
   read tasks) over the plain in-process path.

    python scripts/bench_data.py                      # ~1 min on 2 cores
    python scripts/bench_data.py --rows 8000 --size 64 --render 100
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np


def bench_simulator(n: int, size: int) -> tuple[float, float]:
    """(galaxies/s for the population draw, galaxies/s/core for rendering)."""
    from zray.data.population import draw_population
    from zray.data.render import render_chunk
    from zray.data.simulate import _RENDER_KEYS
    from zray.data.templates import colour_grid

    colour_grid()  # one-off synthetic photometry, cached
    t0 = time.perf_counter()
    params = draw_population(n, seed=1)
    draw = n / (time.perf_counter() - t0)
    params["id"] = np.arange(n)
    chunk = {k: params[k] for k in _RENDER_KEYS}
    render_chunk({k: v[:5] for k, v in chunk.items()}, size, 1)  # warm-up: GalSim caches
    t0 = time.perf_counter()
    render_chunk(chunk, size, 1)
    return draw, n / (time.perf_counter() - t0)


def make_files(root: Path, rows: int, size: int) -> None:
    """Synthetic rows (content does not matter for reading speed), all in train."""
    from zray.data import DatasetWriter

    rng = np.random.default_rng(0)
    with DatasetWriter(root, fractions=(1.0, 0.0, 0.0), rows_per_shard=1000) as w:
        for start in range(0, rows, 1000):
            n = min(1000, rows - start)
            w.add(np.arange(start, start + n), rng.normal(0, 1, (n, 5, size, size)).astype(np.float32),
                  rng.uniform(0.01, 0.3, n), rng.uniform(0, 0.1, n))


def pyarrow_rate(root: Path, batch: int) -> float:
    """Rows/s: pyarrow reads each shard into numpy, then preprocess_batch per batch."""
    import pyarrow.parquet as pq

    from zray.data import preprocess_batch, read_manifest

    t0 = time.perf_counter()
    rows = 0
    for path in read_manifest(root).files("train"):
        for rb in pq.ParquetFile(path).iter_batches(batch_size=batch, columns=["id", "image", "z_spec", "ebv"]):
            out = preprocess_batch({
                "id": rb.column("id").to_numpy(),
                "image": rb.column("image").to_numpy_ndarray(),
                "z_spec": rb.column("z_spec").to_numpy(),
                "ebv": rb.column("ebv").to_numpy(),
            })
            rows += len(out["image"])
    return rows / (time.perf_counter() - t0)


def ray_rate(root: Path, batch: int, prefetch: int = 1) -> float:
    """Rows/s through read_split + map_batches(preprocess_batch) + iter_batches."""
    from zray.data import preprocess_batch, read_split

    t0 = time.perf_counter()
    ds = read_split(root, "train").map_batches(
        preprocess_batch, batch_format="numpy", batch_size=batch
    )
    batches = ds.iter_batches(batch_size=batch, batch_format="numpy", prefetch_batches=prefetch)
    rows = sum(len(b["image"]) for b in batches)
    return rows / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--render", type=int, default=100, help="galaxies rendered for the simulator rate")
    ap.add_argument("--rows", type=int, default=6000, help="rows in the reader benchmark")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--cpus", type=int, default=os.cpu_count() or 2, help="CPUs given to Ray")
    args = ap.parse_args()

    draw, render = bench_simulator(args.render, args.size)
    render32 = bench_simulator(args.render, 32)[1] if args.size != 32 else render
    print(f"simulator: population draw {draw:,.0f} galaxies/s; rendering "
          f"{render:.0f} galaxies/s/core at {args.size}x{args.size} ({1000 / render:.1f} ms each), "
          f"{render32:.0f}/s/core at 32x32")

    import ray

    with tempfile.TemporaryDirectory(prefix="zrb") as tmp:
        root = Path(tmp) / "bench"
        make_files(root, args.rows, args.size)
        mb = sum(p.stat().st_size for p in root.glob("*.parquet")) / 2**20
        ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False,
                 configure_logging=False, _temp_dir=tempfile.mkdtemp(prefix="zr"))
        ray.data.DataContext.get_current().enable_progress_bars = False
        ray_rate(root, args.batch)  # warm-up: worker start, imports
        pa_rate = max(pyarrow_rate(root, args.batch) for _ in range(2))
        ry_rate = max(ray_rate(root, args.batch) for _ in range(2))
        ry_prefetch = max(ray_rate(root, args.batch, prefetch=4) for _ in range(2))
        ray.shutdown()
    print(f"reader on {args.rows} rows of 5x{args.size}x{args.size} ({mb:.0f} MiB), batch {args.batch}, "
          f"with preprocess:")
    print(f"  pyarrow -> numpy (1 process): {pa_rate:,.0f} rows/s")
    print(f"  zray reader (Ray Data, {args.cpus} CPUs): {ry_rate:,.0f} rows/s; "
          f"with prefetch_batches=4: {ry_prefetch:,.0f} rows/s")
    print(f"  ratio zray/pyarrow: {ry_rate / pa_rate:.2f} ({ry_prefetch / pa_rate:.2f} with prefetch)")


if __name__ == "__main__":
    main()

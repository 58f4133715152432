"""Data throughput: the simulator, and what a training worker is fed, against plain pyarrow.

1. Simulator: galaxies per second on one core (rendering with GalSim plus
   noise; the population draw is excluded and reported separately).
2. Reader: images per second delivered to one training worker, scaled and
   centre-cropped, in a fresh order for the epoch (zray.data.epochs):
   - streamed: the split's Parquet row groups in the epoch's order, read
     with pyarrow in a background thread, mixed in the shuffle buffer;
   - in memory: the split's arrays in Ray's object store, gathered by index;
   - plain pyarrow: the same files read in order into numpy with the same
     scaling and crop, no shuffle (the baseline, in the same process).
   The epoch shuffle's cost is each path's rate in its epoch order against
   the same path in storage order. Peak resident memory of this process is
   printed for the streamed reader and the baseline.
3. With ``--cutouts N`` (and nothing else): ``zray cutouts`` on N galaxies in simulated
   frames (2x2 fields of 512 pixels, with noise), one worker: cutouts per second per core
   (the cutting itself, and end to end with planning and writing), against the baseline of
   reproject_exact alone on the same galaxies' bands (a crop of the frame, onto the same
   grid), in the same run.
4. With ``--train-epochs N``: ``zray train`` on the same files with a 500 MB
   object store (the split streamed, as a split larger than the store is),
   and the peak resident memory of every process on the machine.
5. With ``--prepare N`` (and nothing else): the time a search takes to prepare its
   splits (``zray.train.prepare_datasets``: train and val read by Ray Data, scaled,
   cropped and kept in the object store) for N simulated galaxies, with the Parquet
   reader zray picks (``zray.runtime.choose_parquet_reader``) against Ray Data's
   default reader (the baseline), alternating in one Ray.

    python scripts/bench_data.py                          # ~1 min on 2 cores
    python scripts/bench_data.py --rows 8000 --size 64 --render 100
    python scripts/bench_data.py --rows 50000 --size 64 --render 0 --memory-rows 8000 --train-epochs 1  # at scale
    python scripts/bench_data.py --cutouts 200 --size 64                # zray cutouts
    python scripts/bench_data.py --prepare 2000 --size 32               # a search's data preparation
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
    """Synthetic rows (content does not matter for reading speed), 95% in train, 5% in val."""
    from zray.data import DatasetWriter

    rng = np.random.default_rng(0)
    with DatasetWriter(root, fractions=(0.95, 0.05, 0.0), rows_per_shard=1000) as w:
        for start in range(0, rows, 1000):
            n = min(1000, rows - start)
            w.add(np.arange(start, start + n), rng.normal(0, 1, (n, 5, size, size)).astype(np.float32),
                  rng.uniform(0.01, 0.3, n), rng.uniform(0, 0.1, n))


def pyarrow_rate(root: Path, batch: int, size: int) -> float:
    """Rows/s: pyarrow reads each shard in order into numpy, then the same scaling and crop."""
    import pyarrow.parquet as pq

    from zray.data import preprocess_batch, read_manifest
    from zray.data.cutouts import crop_centre

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
            image = np.ascontiguousarray(crop_centre(out["image"], size, axes=(1, 2)))
            rows += len(image)
    return rows / (time.perf_counter() - t0)


def epoch_rate(split, batch: int, shuffle: bool = True, epoch: int = 0) -> float:
    """Rows/s of one worker's epoch (the whole split: one worker)."""
    t0 = time.perf_counter()
    rows = sum(len(b["id"]) for b in split.epoch_batches(epoch=epoch, rank=0, world=1, batch_size=batch,
                                                          seed=0, shuffle=shuffle))
    return rows / (time.perf_counter() - t0)


def in_memory_split(root: Path, size: int, rows: int):
    """The first ``rows`` of the split through zray's in-memory path (Ray Data read,
    scale and crop, materialised, kept as arrays by block)."""
    from zray.data import read_manifest
    from zray.data.epochs import InMemorySplit
    from zray.data.pipeline import read_split
    from zray.train.driver import _scale_and_crop

    files = read_manifest(root).files("train")[: max(1, rows // 1000)]
    ds = read_split(root, "train", files=files).map_batches(
        _scale_and_crop, fn_kwargs={"image_size": size}, batch_format="numpy", batch_size=256).materialize()
    return InMemorySplit.from_dataset(ds)


def rss_mb(pids=None) -> float:
    """Resident memory (MB) of this process, or, with ``pids="all"``, of every process on the
    machine as proportional set size (a page shared by n processes, such as Ray's object
    store, counts 1/n in each, so the sum counts it once)."""
    if pids is None:
        paths, key = [Path("/proc/self/status")], "VmRSS:"
    else:
        paths, key = list(Path("/proc").glob("[0-9]*/smaps_rollup")), "Pss:"
    total = 0
    for path in paths:
        try:
            line = next(x for x in path.read_text().splitlines() if x.startswith(key))
        except (OSError, StopIteration):
            continue  # a process that ended, or a kernel thread
        total += int(line.split()[1])
    return total / 1024


class PeakMemory:
    """Samples resident memory every ``every`` s in a thread; ``peak`` is the highest seen
    (of this process, or of all processes on the machine, shared pages once, with ``everything``)."""

    def __init__(self, everything: bool = False, every: float = 0.05) -> None:
        import threading

        self.pids = "all" if everything else None
        self.every, self.peak = every, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_mb(self.pids))
            self._stop.wait(self.every)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def train_run(root: Path, crop: int, epochs: int) -> tuple[str, float, float]:
    """``zray train`` (cnn_phot, one worker) on the files, streamed as a split larger than
    the object store is; the last epoch line, and the peak and starting resident memory
    of every process on the machine (MB)."""
    import subprocess
    import sys

    import yaml

    space = root.parent / "space.yaml"
    space.write_text(yaml.safe_dump({
        "name": "bench", "model": "cnn_phot", "data": {"path": str(root), "image_size": crop},
        "fixed": {"epochs": epochs, "batch_size": 64, "filters": 16, "dense_units": 64},
        "resources": {"num_workers": 1, "cpus_per_worker": 0.9},
    }))
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["RAY_DEFAULT_OBJECT_STORE_MAX_MEMORY_BYTES"] = str(500 * 2**20)  # the split is several times this
    before = rss_mb("all")
    with PeakMemory(everything=True, every=0.5) as mem:
        proc = subprocess.run([sys.executable, "-m", "zray", "train", str(space), "--runs", str(root.parent / "runs")],
                              capture_output=True, text=True, env=env, cwd=root.parent)
    if proc.returncode:
        raise SystemExit(f"zray train failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    lines = [x for x in proc.stdout.splitlines() if x.startswith("zray: epoch") or "streamed" in x]
    return "\n".join(f"    {x}" for x in lines), mem.peak, before


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--render", type=int, default=100, help="galaxies rendered for the simulator rate")
    ap.add_argument("--rows", type=int, default=6000, help="rows in the reader benchmark")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--cpus", type=int, default=os.cpu_count() or 2, help="CPUs given to Ray")
    ap.add_argument("--crop", type=int, default=0, help="centre crop the worker gets (default: --size)")
    ap.add_argument("--memory-rows", type=int, default=0, help="rows for the in-memory path (default: --rows)")
    ap.add_argument("--repeat", type=int, default=3, help="epochs timed per path (the best is kept)")
    ap.add_argument("--train-epochs", type=int, default=0,
                    help="also run zray train for this many epochs on the files, streamed, measuring the "
                         "memory of every process")
    ap.add_argument("--cutouts", type=int, default=0,
                    help="only benchmark zray cutouts, on this many galaxies in simulated frames")
    ap.add_argument("--prepare", type=int, default=0,
                    help="only benchmark a search's data preparation, on this many simulated galaxies")
    args = ap.parse_args()

    if args.cutouts:
        cutouts(args)
        return
    if args.prepare:
        prepare(args)
        return
    if args.render:
        simulator(args)
    readers(args)


def simulator(args) -> None:
    draw, render = bench_simulator(args.render, args.size)
    render32 = bench_simulator(args.render, 32)[1] if args.size != 32 else render
    print(f"simulator: population draw {draw:,.0f} galaxies/s; rendering "
          f"{render:.0f} galaxies/s/core at {args.size}x{args.size} ({1000 / render:.1f} ms each), "
          f"{render32:.0f}/s/core at 32x32")


def cutouts(args) -> None:
    """zray cutouts (one worker) against reproject_exact alone on the same galaxies' bands."""
    from reproject import reproject_exact

    from zray.data.frames import CATALOG_NAME, simulate_frames
    from zray.data.survey import _frame_data, grid_wcs, make_cutouts, plan_cutouts, read_frames, read_survey_catalog

    size = args.size
    with tempfile.TemporaryDirectory(prefix="zrc") as tmp:
        frames_dir = Path(tmp) / "frames"
        t0 = time.perf_counter()
        simulate_frames(frames_dir, args.cutouts, fields="2x2", frame_size=512, overlap=128, seed=1, progress=False)
        print(f"rendered 20 frames of 512x512 holding {args.cutouts} galaxies in {time.perf_counter() - t0:.0f} s")
        t0 = time.perf_counter()
        report = make_cutouts(frames_dir / CATALOG_NAME, frames_dir, Path(tmp) / "data", size=size, workers=1,
                              progress=False)
        total = time.perf_counter() - t0
        # the baseline: each written galaxy's five bands with reproject_exact alone
        cat = read_survey_catalog(frames_dir / CATALOG_NAME)
        frames = read_frames(frames_dir)
        plan = plan_cutouts(frames, cat.ra, cat.dec, size)
        data = {f: (_frame_data(frames[f]), frames[f].wcs()) for f in set(plan.choice[plan.choice >= 0].tolist())}
        todo = [i for i, r in enumerate(plan.reason) if r is None]
        half = int(size * 0.75) + 2
        t0 = time.perf_counter()
        for i in todo:
            out = grid_wcs(cat.ra[i], cat.dec[i], size)
            for f in plan.choice[i]:
                image, w = data[int(f)]
                x, y = (int(round(float(v))) for v in w.world_to_pixel_values(cat.ra[i], cat.dec[i]))
                y0, x0 = max(y - half, 0), max(x - half, 0)
                reproject_exact((image[y0: y + half, x0: x + half], w[y0: y + half, x0: x + half]), out,
                                shape_out=(size, size), parallel=False)
        base = len(todo) / (time.perf_counter() - t0)
    rate = report.cut / report.cut_seconds
    print(f"zray cutouts, {size}x{size}, 1 worker: {report.written} written, {len(report.skipped)} skipped "
          f"({', '.join(f'{v} {k}' for k, v in report.counts.most_common())})")
    print(f"  reproject_exact alone        {base:7.1f} cutouts/s/core   1.00x")
    print(f"  zray cutouts, cutting        {rate:7.1f} cutouts/s/core   {rate / base:.2f}x")
    print(f"  zray cutouts, end to end     {report.written / total:7.1f} cutouts/s/core   "
          f"{report.written / total / base:.2f}x   (planning, cutting, writing shards; {total:.1f} s)")


def prepare(args) -> None:
    """Seconds to prepare a search's splits, zray's Parquet reader against Ray Data's default."""
    import ray
    from ray.data import DataContext

    from zray.data.simulate import simulate
    from zray.runtime import choose_parquet_reader, init_ray
    from zray.train import prepare_datasets

    with tempfile.TemporaryDirectory(prefix="zrb") as tmp:
        root = Path(tmp) / "data"
        simulate(root, args.prepare, size=args.size, seed=0, workers=1, progress=False)
        ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False,
                 configure_logging=False, _temp_dir=tempfile.mkdtemp(prefix="zr"))
        init_ray()  # zray's settings on this Ray (progress bars off, its reader)
        ctx = DataContext.get_current()
        prepare_datasets(root, args.size)  # warm-up: Ray Data's own actors, imports
        times = {"default": [], "zray": []}
        for _ in range(args.repeat):  # interleaved, so a slow minute of the machine hits both
            for name in times:
                ctx.use_datasource_v2 = True  # Ray Data's default
                if name == "zray":
                    choose_parquet_reader()
                t0 = time.perf_counter()
                prepare_datasets(root, args.size)
                times[name].append(time.perf_counter() - t0)
        ray.shutdown()
        base, ours = (sorted(times[k])[len(times[k]) // 2] for k in ("default", "zray"))
        print(f"preparing the splits of {args.prepare} galaxies at {args.size}x{args.size} (median of "
              f"{args.repeat}): Ray Data's default Parquet reader {base:.2f} s, zray's {ours:.2f} s: "
              f"{ours / base:.2f}x")


def readers(args) -> None:
    from zray.data import read_manifest
    from zray.data.epochs import StreamedSplit

    crop = args.crop or args.size
    with tempfile.TemporaryDirectory(prefix="zrb") as tmp:
        root = Path(tmp) / "bench"
        t0 = time.perf_counter()
        make_files(root, args.rows, args.size)
        mb = sum(p.stat().st_size for p in root.glob("*.parquet")) / 2**20
        print(f"wrote {args.rows} rows of 5x{args.size}x{args.size} ({mb:,.0f} MiB) in "
              f"{time.perf_counter() - t0:.0f} s; batch {args.batch}, crop {crop}x{crop}, one worker's epoch")
        streamed = StreamedSplit.from_files(read_manifest(root).files("train"), crop)
        pyarrow_rate(root, args.batch, crop)  # warm-up: page cache, imports
        rates = {"pyarrow": [], "streamed": [], "streamed, storage order": []}
        peaks = {"pyarrow": 0.0, "streamed": 0.0}
        for rep in range(args.repeat):  # interleaved, so a slow minute of the machine hits all three
            with PeakMemory() as mem:
                rates["pyarrow"].append(pyarrow_rate(root, args.batch, crop))
            peaks["pyarrow"] = max(peaks["pyarrow"], mem.peak)
            with PeakMemory() as mem:
                rates["streamed"].append(epoch_rate(streamed, args.batch, epoch=rep))
            peaks["streamed"] = max(peaks["streamed"], mem.peak)
            rates["streamed, storage order"].append(epoch_rate(streamed, args.batch, shuffle=False))

        import ray

        ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False,
                 configure_logging=False, _temp_dir=tempfile.mkdtemp(prefix="zr"))
        ray.data.DataContext.get_current().enable_progress_bars = False
        memory = in_memory_split(root, crop, args.memory_rows or args.rows)
        epoch_rate(memory, args.batch)  # warm-up: the worker's first fetch of the blocks
        rates["in memory"] = [epoch_rate(memory, args.batch, epoch=rep) for rep in range(args.repeat)]
        rates["in memory, storage order"] = [epoch_rate(memory, args.batch, shuffle=False)
                                             for _ in range(args.repeat)]
        ray.shutdown()

        best = {k: max(v) for k, v in rates.items()}
        base = best["pyarrow"]
        print(f"  plain pyarrow, file order   {base:9,.0f} img/s   1.00x   (peak memory of the process "
              f"{peaks['pyarrow']:,.0f} MB)")
        print(f"  zray streamed, epoch order  {best['streamed']:9,.0f} img/s   {best['streamed'] / base:.2f}x"
              f"   (peak memory of the process {peaks['streamed']:,.0f} MB; buffer {streamed.buffer_rows} rows)")
        print(f"  zray in memory, epoch order {best['in memory']:9,.0f} img/s   {best['in memory'] / base:.2f}x"
              f"   ({memory.n_rows} rows)")
        for name in ("streamed", "in memory"):
            cost = 1 - best[name] / best[f"{name}, storage order"]
            print(f"  epoch shuffle costs {name}: {100 * cost:+.1f}% of an epoch "
                  f"({best[name]:,.0f} vs {best[name + ', storage order']:,.0f} img/s in storage order)")
        if args.train_epochs:
            lines, peak, before = train_run(root, crop, args.train_epochs)
            print(f"zray train, cnn_phot, 1 worker, {args.train_epochs} epoch(s) on these files "
                  f"(object store 500 MB):\n{lines}")
            print(f"  peak memory of all processes (PSS): {peak:,.0f} MB ({peak - before:+,.0f} MB over the "
                  f"{before:,.0f} MB before the run; data {mb:,.0f} MiB)")


if __name__ == "__main__":
    main()

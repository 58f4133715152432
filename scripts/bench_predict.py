"""Throughput of `zray predict`'s streaming path against the model's own predict.

Simulates a few thousand 32x32 galaxies into a temporary folder, writes a
randomly initialised `cnn` as a training checkpoint and exports it with
`zray export`'s code, then times:

- `zray predict` as a user runs it (zray.predict.predict with no Ray running:
  in this process up to 20,000 galaxies, Ray Data read tasks -> actor holding
  the bundle -> Parquet beyond), end to end and after its first batch;
- in memory: the Keras model's own ``predict`` on the same, already
  preprocessed arrays.

Run: .venv/bin/python scripts/bench_predict.py [--n 4000]; --n 100000 --random for the streaming path
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")


def random_checkpoint(directory: Path, data: Path, image_size: int, manifest_hash: str) -> Path:
    """A `zray train`-style checkpoint of an untrained cnn (weights from random init)."""
    import tensorflow as tf

    from zray.models import ModelSpec, build_model
    from zray.train import STATE_FILE, WEIGHTS_PREFIX, TrainJob

    hp = {"filters": 16, "blocks": 2, "dense_units": 64, "dropout": 0.0}
    job = TrainJob(model="cnn", hyperparameters={**hp, "epochs": 1, "batch_size": 64, "learning_rate": 1e-3},
                   data_path=str(data), image_size=image_size, z_min=0.0, z_max=0.4, n_bins=180,
                   manifest_hash=manifest_hash)
    model = build_model("cnn", hp, ModelSpec(image_size=image_size, bins=job.bins))
    directory.mkdir(parents=True)
    tf.train.Checkpoint(model=model).write(str(directory / WEIGHTS_PREFIX))
    state = {"epoch": 0, "history": [], "job": asdict(job), "metrics": {"epoch": 1}}
    (directory / STATE_FILE).write_text(json.dumps(state))
    return directory


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=4000, help="galaxies")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="galaxies per model call (default: zray predict's own choice)")
    parser.add_argument("--random", action="store_true",
                        help="random 32x32 cutouts instead of simulated ones (fast to make; for large --n)")
    args = parser.parse_args()

    import numpy as np
    import ray

    from zray.bundle import load
    from zray.data import load_arrays, simulate, write_dataset
    from zray.export import export
    from zray.predict import IN_PROCESS_ROWS, predict

    with tempfile.TemporaryDirectory(prefix="zray-bench-") as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        if args.random:
            rng = np.random.default_rng(1)
            images = rng.normal(0, 1, (args.n, 5, 32, 32)).astype("float32")
            manifest = write_dataset(tmp / "data", np.arange(args.n), images,
                                     rng.uniform(0.01, 0.39, args.n), rng.uniform(0, 0.1, args.n))
        else:
            manifest = simulate(tmp / "data", args.n, size=32, seed=1, workers=os.cpu_count(), progress=False)
        print(f"made {manifest.total_rows} galaxies in {time.perf_counter() - t0:.0f} s")
        ckpt = random_checkpoint(tmp / "ckpt", tmp / "data", 32, manifest.hash)
        export(ckpt, tmp / "bundle", calibrate=False)

        # What `zray predict` does for a user: no Ray running in this process, so up
        # to IN_PROCESS_ROWS galaxies are predicted here, more stream through Ray Data.
        user = predict(tmp / "bundle", tmp / "data", tmp / "pz.parquet", batch_size=args.batch_size, progress=False)
        # The other rows use the batch zray predict used.
        from zray.predict import IN_PROCESS_BATCH, IN_PROCESS_ROWS, STREAMING_BATCH

        n = user["rows"]
        args.batch_size = args.batch_size or (IN_PROCESS_BATCH if n <= IN_PROCESS_ROWS else STREAMING_BATCH)
        path = "in process" if manifest.total_rows <= IN_PROCESS_ROWS else "Ray Data streaming"

        # In memory: the model's own predict on the same preprocessed arrays.
        bundle = load(tmp / "bundle")
        arrays = {s: load_arrays(tmp / "data", s) for s in ("train", "val", "test")}
        images = np.concatenate([a["image"] for a in arrays.values()])
        ebv = np.concatenate([a["ebv"] for a in arrays.values()]).reshape(-1, 1)
        x = bundle.preprocess(images)
        model = bundle.models[0]
        model.predict([x[:512], ebv[:512]], batch_size=args.batch_size, verbose=0)  # warm up
        t0 = time.perf_counter()
        model.predict([x, ebv], batch_size=args.batch_size, verbose=0)
        in_memory_s = time.perf_counter() - t0
        # The Python API on raw arrays (preprocessing included).
        t0 = time.perf_counter()
        bundle.predict(images, ebv, batch_size=args.batch_size)
        api_s = time.perf_counter() - t0
        if ray.is_initialized():
            ray.shutdown()

    rate_mem = n / in_memory_s
    print(f"galaxies: {n} (32x32x5), cnn filters 16 blocks 2 dense 64, batch {args.batch_size}, "
          f"{os.cpu_count()} CPUs, PDFs written")
    print(f"zray predict ({path}), end to end: {user['galaxies_per_s']:8.0f} galaxies/s ({user['seconds']:.1f} s)")
    print(f"zray predict, after first batch:     {user['steady_galaxies_per_s']:8.0f} galaxies/s "
          f"(first batch after {user['first_batch_s']:.1f} s)")
    print(f"zray.load(...).predict, raw arrays:  {n / api_s:8.0f} galaxies/s ({api_s:.1f} s)")
    print(f"model.predict, in memory:            {rate_mem:8.0f} galaxies/s ({in_memory_s:.1f} s)")
    print(f"ratio zray predict / in-memory: end to end {user['galaxies_per_s'] / rate_mem:.2f}, "
          f"after first batch {user['steady_galaxies_per_s'] / rate_mem:.2f}")


if __name__ == "__main__":
    main()

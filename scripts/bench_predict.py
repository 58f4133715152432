"""Throughput of `zray predict`'s streaming path against the model's own predict.

Simulates a few thousand 32x32 galaxies into a temporary folder, writes a
randomly initialised `cnn` as a training checkpoint and exports it with
`zray export`'s code, then times:

- streaming: zray.predict.predict (Ray Data read tasks -> actor holding the
  bundle -> Parquet), end to end and after its first batch (actor start-up,
  TensorFlow import and model load excluded);
- in memory: the Keras model's own ``predict`` on the same, already
  preprocessed arrays.

Run: flock /tmp/zray-heavy.lock .venv/bin/python scripts/bench_predict.py [--n 4000]
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
    parser.add_argument("--n", type=int, default=4000, help="simulated galaxies")
    parser.add_argument("--batch-size", type=int, default=256)
    args = parser.parse_args()

    import numpy as np
    import ray

    from zray.data import load_arrays, simulate
    from zray.export import export, load
    from zray.predict import predict

    with tempfile.TemporaryDirectory(prefix="zray-bench-") as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        manifest = simulate(tmp / "data", args.n, size=32, seed=1, workers=os.cpu_count(), progress=False)
        print(f"simulated {manifest.total_rows} galaxies in {time.perf_counter() - t0:.0f} s")
        ckpt = random_checkpoint(tmp / "ckpt", tmp / "data", 32, manifest.hash)
        export(ckpt, tmp / "bundle")

        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False,
                 _temp_dir=tempfile.mkdtemp(prefix="zrb"),
                 runtime_env={"env_vars": {"TF_CPP_MIN_LOG_LEVEL": "2", "TF_USE_LEGACY_KERAS": "1"}})

        # Streaming path (what `zray predict` runs), end to end, twice: the
        # second run has Ray's worker processes warm.
        first = predict(tmp / "bundle", tmp / "data", tmp / "pz.parquet", batch_size=args.batch_size, progress=False)
        stream = predict(tmp / "bundle", tmp / "data", tmp / "pz.parquet", batch_size=args.batch_size,
                         progress=False, overwrite=True)
        n = stream["rows"]

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
        ray.shutdown()

    rate_mem = n / in_memory_s
    print(f"galaxies: {n} (32x32x5), cnn filters 16 blocks 2 dense 64, batch {args.batch_size}, "
          f"{os.cpu_count()} CPUs, PDFs written")
    print(f"zray predict, streaming, first run:  {first['galaxies_per_s']:8.0f} galaxies/s ({first['seconds']:.1f} s)")
    print(f"zray predict, streaming, warm run:   {stream['galaxies_per_s']:8.0f} galaxies/s ({stream['seconds']:.1f} s)")
    print(f"zray.load(...).predict, raw arrays:  {n / api_s:8.0f} galaxies/s ({api_s:.1f} s)")
    print(f"zray predict, after first batch:     {stream['steady_galaxies_per_s']:8.0f} galaxies/s "
          f"(first batch after {stream['first_batch_s']:.1f} s)")
    print(f"model.predict, in memory:            {rate_mem:8.0f} galaxies/s ({in_memory_s:.1f} s)")
    print(f"ratio streaming/in-memory: first {first['galaxies_per_s'] / rate_mem:.2f}, "
          f"warm {stream['galaxies_per_s'] / rate_mem:.2f}, "
          f"after first batch {stream['steady_galaxies_per_s'] / rate_mem:.2f}")


if __name__ == "__main__":
    main()

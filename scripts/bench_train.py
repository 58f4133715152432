"""Training throughput: `zray train` (Ray Data -> Ray Train, one worker) vs plain tf_keras.

Both run in this process's command on the same simulated data, same model,
same batch size and the same number of TensorFlow threads; the first epoch of
each (graph tracing, warm-up) is left out. Ray's start-up (ray.init, worker
start, dataset materialisation, TF import in the worker) is reported apart.

    python scripts/bench_train.py                      # cnn at 32x32
    python scripts/bench_train.py --model inception --size 64 --n 600 --epochs 3
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def plain_keras(data: Path, model: str, hp: dict, size: int, epochs: int, threads: int) -> float:
    """Images/s of model.fit on in-memory arrays, epochs after the first."""
    from zray.bins import RedshiftBins
    from zray.data.pipeline import load_arrays, preprocess_batch
    from zray.models import ModelSpec, build_model, keras

    k = keras()
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(max(2, threads))
    arrays = preprocess_batch(load_arrays(data, "train"))
    x, ebv = arrays["image"][:, :size, :size], arrays["ebv"].reshape(-1, 1)
    bins = RedshiftBins()
    y = bins.index(arrays["z_spec"])
    net = build_model(model, {k_: v for k_, v in hp.items() if k_ in _model_keys(model)}, ModelSpec(size, bins=bins))
    net.compile(optimizer=k.optimizers.Adam(hp["learning_rate"]), loss="sparse_categorical_crossentropy")
    times = []

    class Timer(k.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.t0 = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            times.append(time.perf_counter() - self.t0)

    n = (len(x) // hp["batch_size"]) * hp["batch_size"]
    net.fit([x[:n], ebv[:n]], y[:n], batch_size=hp["batch_size"], epochs=epochs, verbose=0,
            shuffle=True, callbacks=[Timer()])
    return n * (len(times) - 1) / sum(times[1:])


def _model_keys(model: str) -> set[str]:
    from zray.models import model_hyperparameters

    return set(model_hyperparameters(model))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="cnn")
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--n", type=int, default=3000, help="galaxies to simulate")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--cpus", type=float, default=2.0, help="CPUs of the one Ray Train worker")
    args = parser.parse_args()

    from zray import config
    from zray import train as training
    from zray.data.simulate import simulate

    work = Path(tempfile.mkdtemp(prefix="zray-bench-train-"))
    data = work / "data"
    simulate(data, args.n, size=args.size, seed=0, progress=False)
    space_file = work / "space.yaml"
    space_file.write_text(yaml.safe_dump({
        "name": "bench", "model": args.model,
        "data": {"path": str(data), "image_size": args.size},
        "fixed": {"epochs": args.epochs, "batch_size": args.batch_size, "augment": False,
                  "lr_schedule": "constant", "learning_rate": 1e-3},
        "resources": {"num_workers": 1, "cpus_per_worker": args.cpus},
    }))
    space = config.load(space_file)
    hp = space.default_hyperparameters()
    threads = max(1, int(round(args.cpus)))

    t0 = time.perf_counter()
    from zray.runtime import init_ray

    init_ray()
    ray_init_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    summary = training.run(space, runs_dir=work / "runs")
    fit_wall = time.perf_counter() - t0
    history = summary["history"]
    zray_rate = float(np.mean([h["train_images_per_s"] for h in history[1:]]))
    in_epochs = sum(h["epoch_time_s"] for h in history)
    startup = fit_wall - in_epochs

    keras_rate = plain_keras(data, args.model, hp, args.size, args.epochs, threads)
    print(f"model {args.model} at {args.size}x{args.size}, batch {args.batch_size}, "
          f"{summary['history'][0]['train_rows']} training images, {args.epochs} epochs, {threads} TF thread(s)")
    print(f"ray.init                          {ray_init_s:8.1f} s")
    print(f"zray train start-up + validation  {startup:8.1f} s  (fit wall {fit_wall:.1f} s minus time in epochs)")
    print(f"zray train (1 worker)             {zray_rate:8.0f} images/s")
    print(f"plain tf_keras model.fit          {keras_rate:8.0f} images/s")
    print(f"ratio zray / keras                {zray_rate / keras_rate:8.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

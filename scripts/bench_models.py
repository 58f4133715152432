"""Forward and training throughput of each registered model with plain tf_keras.

Random images in memory, so the figures are the model's own cost on this
machine: the ceiling that the Ray pipeline (scripts/bench_train.py) is
measured against. Each measurement runs one warm-up call (graph tracing,
oneDNN kernel selection), then times two calls over ``--steps`` batches
and keeps the faster.

    python scripts/bench_models.py                    # every model, ~1-2 min on 2 cores
    python scripts/bench_models.py --models cnn --steps 50 --image-size 64
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from zray.bins import RedshiftBins
from zray.models import ModelSpec, available_models, build_model, count_parameters, keras

# Inception at the paper's 64x64; the CNN at the quickstart's 32x32, its laptop use.
DEFAULT_SIZE = {"inception": 64, "cnn": 32}


def _data(n: int, spec: ModelSpec, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = {
        "image": rng.normal(size=(n, spec.image_size, spec.image_size, spec.n_bands)).astype(
            "float32"
        ),
        "ebv": rng.uniform(0.0, 0.1, size=(n, 1)).astype("float32"),
    }
    y = np.eye(spec.bins.n_bins, dtype="float32")[rng.integers(0, spec.bins.n_bins, n)]
    return x, y


def _rate(call, n_images: int, repeats: int = 2) -> float:
    """Images/s of the best of ``repeats`` timed calls, after one warm-up call.

    Best-of rather than mean: on a shared machine other processes only ever
    slow a run down, so the fastest run is closest to the model's own cost.
    """
    call()  # warm-up: tracing and kernel selection are not throughput
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - start)
    return n_images / best


def bench(name: str, image_size: int, batch_size: int, steps: int) -> dict:
    k = keras()
    spec = ModelSpec(image_size=image_size, bins=RedshiftBins())
    model = build_model(name, None, spec)
    model.compile(optimizer=k.optimizers.Adam(1e-4), loss="categorical_crossentropy")
    n = batch_size * steps
    x, y = _data(n, spec)
    forward = _rate(lambda: model.predict(x, batch_size=batch_size, verbose=0), n)
    train = _rate(lambda: model.fit(x, y, batch_size=batch_size, epochs=1, verbose=0), n)
    result = {
        "model": name,
        "size": f"{image_size}x{image_size}x{spec.n_bands}",
        "params": count_parameters(model),
        "forward": forward,
        "train": train,
    }
    k.backend.clear_session()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=available_models())
    parser.add_argument("--image-size", type=int, help="override every model's default size")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument(
        "--steps", type=int, help="timed batches (default: 10 inception, 50 others)"
    )
    args = parser.parse_args()

    rows = []
    for name in args.models:
        size = args.image_size or DEFAULT_SIZE.get(name, 64)
        steps = args.steps or (10 if name == "inception" else 50)
        print(
            f"benchmarking {name} at {size}x{size}, batch {args.batch_size}, {steps} steps ...",
            flush=True,
        )
        rows.append(bench(name, size, args.batch_size, steps))

    print(f"\n{'model':<10} {'input':<9} {'params':>12} {'forward img/s':>14} {'train img/s':>12}")
    for r in rows:
        print(
            f"{r['model']:<10} {r['size']:<9} {r['params']:>12,} {r['forward']:>14.1f} {r['train']:>12.1f}"
        )


if __name__ == "__main__":
    main()

"""A dataset several times larger than Ray's object store trains by streaming."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import yaml

from zray.data import read_manifest, write_dataset
from zray.train import read_state

pytestmark = pytest.mark.slow

STORE_BYTES = 80_000_000  # Ray's object store for this run: 80 MB
N, SIZE = 16_000, 32  # 16,000 x 5 x 32 x 32 float32 = 328 MB of pixels


def test_dataset_three_times_the_object_store_trains_by_streaming(tmp_path):
    rng = np.random.default_rng(0)
    data = tmp_path / "big"
    writer_rows = 2000
    images = rng.normal(0.0, 1.0, size=(N, 5, SIZE, SIZE)).astype(np.float32)
    write_dataset(data, np.arange(N), images, rng.uniform(0.01, 0.39, N), rng.uniform(0, 0.1, N),
                  rows_per_shard=writer_rows)
    del images
    manifest = read_manifest(data)
    assert manifest.rows["train"] * SIZE * SIZE * 5 * 4 > 3 * STORE_BYTES
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump({
        "name": "big", "model": "cnn", "data": {"path": str(data), "image_size": SIZE},
        "fixed": {"epochs": 1, "batch_size": 256, "blocks": 1, "filters": 4, "dense_units": 16},
        "resources": {"num_workers": 1, "cpus_per_worker": 1.0},
    }))
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["RAY_DEFAULT_OBJECT_STORE_MAX_MEMORY_BYTES"] = str(STORE_BYTES)
    proc = subprocess.run(
        [sys.executable, "-m", "zray", "train", str(space), "--runs", str(tmp_path / "runs")],
        capture_output=True, text=True, timeout=900, env=env, cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "train split" in proc.stdout and "streamed from Parquet each epoch" in proc.stdout
    run_dir = next((tmp_path / "runs").iterdir())
    state = read_state(max(run_dir.glob("checkpoint_*/"), key=lambda d: d.name))
    # Every training row went through the one worker.
    assert state["metrics"]["train_rows"] == manifest.rows["train"]
    assert state["metrics"]["epoch"] == 1

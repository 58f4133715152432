"""Shared fixtures: one real local Ray per test session, tiny simulated data."""

from __future__ import annotations

import os
import shutil
import tempfile

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")


@pytest.fixture(scope="session")
def ray_session():
    """A real local Ray with this machine's CPUs and its own short temp folder."""
    import ray

    from zray.ray_workarounds import local_ray_options
    from zray.runtime import TRAIN_ENV, WORKER_ENV

    os.environ.update({**WORKER_ENV, **TRAIN_ENV})  # inherited by the Ray's processes, as zray's own
    temp_dir = tempfile.mkdtemp(prefix="zr")  # short: Ray's socket paths have a length limit
    ray.init(
        num_cpus=os.cpu_count() or 2,
        _temp_dir=temp_dir,
        include_dashboard=True,
        dashboard_host="127.0.0.1",
        log_to_driver=False,
        configure_logging=False,
        **local_ray_options(),  # as zray starts a Ray: its processes find their own state API
    )
    yield ray
    ray.shutdown()
    shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def sim_data(tmp_path_factory):
    """~300 simulated galaxies at 32x32, made once per session (about 2 s).

    Returns the dataset directory (shards, manifest.json, catalog.parquet).
    Treat it as read-only: many tests share it.
    """
    from zray.data.simulate import simulate

    out = tmp_path_factory.mktemp("sim") / "data"
    simulate(out, 300, size=32, seed=0, workers=1, rows_per_shard=100, progress=False)
    return out

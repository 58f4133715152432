"""Shared fixtures: one real local Ray per test session, tiny simulated data."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

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


# A Ray in a process of its own, started as zray starts one; prints its GCS address and
# the state API address its processes use, then runs until its stdin closes.
_OWN_RAY = """
import os, sys, ray
from zray.ray_workarounds import STATE_API_ENV, local_ray_options
ray.init(address="local", num_cpus=int(sys.argv[2]), object_store_memory=1 << 30, _temp_dir=sys.argv[1],
         include_dashboard=True, dashboard_host="127.0.0.1", log_to_driver=False, configure_logging=False,
         **local_ray_options())
print(ray.get_runtime_context().gcs_address, os.environ[STATE_API_ENV], flush=True)
sys.stdin.read()
ray.shutdown()
"""


@pytest.fixture(scope="module")
def cluster_ray():
    """A Ray that outlives the drivers connected to it, as a cluster's does, for the tests
    that SIGKILL a driver: the environment for a `zray` process to run on it, and the pid
    of the process that started it (its workers are that process's descendants).

    Not the session's Ray: a driver killed at the wrong moment can leave one of Ray Train's
    placement groups behind (registered after Ray cleaned up the dead job), holding CPUs
    that the tests after it need; this Ray goes away with the module.
    """
    from zray.ray_workarounds import STATE_API_ENV

    temp_dir = tempfile.mkdtemp(prefix="zc")  # short: Ray's socket paths have a length limit
    env = {k: v for k, v in os.environ.items() if k not in (STATE_API_ENV, "RAY_ADDRESS")}
    proc = subprocess.Popen([sys.executable, "-c", _OWN_RAY, temp_dir, str(os.cpu_count() or 2)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
    line = proc.stdout.readline().split()
    if len(line) != 2:
        proc.kill()
        pytest.fail(f"the module's own Ray did not start (exit {proc.wait()}); its output: {line}")
    gcs, state_api = line
    yield {"env": {**env, "RAY_ADDRESS": gcs, STATE_API_ENV: state_api}, "pid": proc.pid}
    proc.stdin.close()
    proc.wait(timeout=120)
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


@contextlib.contextmanager
def zray_lines():
    """The messages written to the ``zray`` logger meanwhile (the terminal's lines); for fixtures
    wider than a test, where pytest's caplog cannot go (``from conftest import zray_lines``)."""
    lines: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record):
            lines.append(record.getMessage())

    handler, logger = Keep(level=logging.INFO), logging.getLogger("zray")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield lines
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


@pytest.fixture(scope="session")
def exported(ray_session, sim_data, tmp_path_factory):
    """One tiny real search (2 trials of a small cnn, 1 epoch) exported as a 1-member bundle ``best``,
    a 2-member ``ens`` (the best trial and a second seed of it) and ``trials`` (the two trials, or
    the better alone), then predicted and evaluated with the CLI; shared by the modules that need a
    bundle (about a minute once). Treat its files as read-only."""
    import yaml
    from click.testing import CliRunner

    from zray import config, search
    from zray.cli import main

    def _run(*args):
        result = CliRunner().invoke(main, [str(a) for a in args])
        assert "Traceback" not in result.output, result.output
        return result

    tmp = tmp_path_factory.mktemp("export")
    space = {
        "name": "exp",
        "model": "cnn",
        "data": {"path": str(sim_data), "image_size": 32},
        "fixed": {"epochs": 1, "batch_size": 32, "blocks": 2, "filters": 8, "dense_units": 32},
        "search": {"learning_rate": {"type": "categorical", "choices": [1.0e-3, 3.0e-3]}},
        "tune": {"num_samples": 2, "max_concurrent": 1, "seed": 0},
        "resources": {"num_workers": 1, "cpus_per_worker": 0.9, "trial_cpus": 0.1},
    }
    (tmp / "space.yaml").write_text(yaml.safe_dump(space))
    with zray_lines() as lines:  # the search's terminal lines; its workers write their progress every step
        summary = search.run(config.load(tmp / "space.yaml"), runs_dir=tmp / "runs", progress_every_s=0.0)
    experiment = Path(summary["experiment"])
    out = {"tmp": tmp, "experiment": experiment, "summary": summary, "search_lines": lines}
    # best: the best trial; ens: it and one more seed of its configuration, trained here and kept
    # whatever the validation check says; trials: the two trials as they are, as the check decides.
    exports = {"best": ["--top-k", 1], "ens": ["--top-k", 2, "--keep-ensemble"],
               "trials": ["--top-k", 2, "--members", "trials"]}
    for name, args in exports.items():
        result = _run("export", experiment, *args, "--out", tmp / name)
        assert result.exit_code == 0, result.output
        out[name], out[f"{name}_output"] = tmp / name, result.output
    result = _run("predict", out["best"], sim_data, "--out", tmp / "pz.parquet", "--batch-size", 64)
    assert result.exit_code == 0, result.output
    out["predict_output"] = result.output
    result = _run("evaluate", out["best"], sim_data, "--out", tmp / "report")
    assert result.exit_code == 0, result.output
    out["evaluate_output"] = result.output
    out["report"] = tmp / "report"
    return out


def sdss_spec_obj_id(plate: int, fiber: int, mjd: int, run2d: int = 26) -> int:
    """An SDSS specObjID (DR8 on): plate in bits 50-63, fiber 38-49, MJD - 50000 24-37, run2d 10-23."""
    return (plate << 50) | (fiber << 38) | ((mjd - 50000) << 24) | (run2d << 10)


# Sorted as SDSS sorts them; from plate 8192 on above the signed range. The last two differ only in
# run2d (the same spectrum reduced twice), by 1,024: as floats (spacing 2,048 there) they are one id.
SDSS_IDS = [sdss_spec_obj_id(266, 1, 51630), sdss_spec_obj_id(8191, 12, 57000),
            sdss_spec_obj_id(8192, 3, 57100), sdss_spec_obj_id(10000, 500, 57600),
            sdss_spec_obj_id(12547, 999, 58500, 27), sdss_spec_obj_id(12547, 999, 58500, 28)]
assert float(SDSS_IDS[-1]) == float(SDSS_IDS[-2])

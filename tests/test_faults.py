"""Real faults in real processes: a worker SIGKILLed mid-epoch, a driver killed
again and again, a full disk under the checkpoints, corrupt shards.

Each slow fixture makes one run and several tests read it.
"""

from __future__ import annotations

import errno
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml

from zray import config
from zray import train as training
from zray.data import pipeline
from zray.data.shards import read_manifest
from zray.errors import ZrayError

ROOT = Path(__file__).resolve().parents[1]

SPACE = {
    "name": "faults",
    "model": "cnn",
    "fixed": {"epochs": 2, "batch_size": 32, "blocks": 2, "filters": 8, "dense_units": 32,
              "learning_rate": 1.0e-3},
    "resources": {"num_workers": 2, "cpus_per_worker": 0.45},
}


def weights_checksum(model) -> float:
    from zray.train.steps import weights_checksum as checksum  # imports TensorFlow

    return checksum(model)


def load_space(tmp: Path, data_path: Path, **changes):
    raw = {**SPACE, "data": {"path": str(data_path), "image_size": 32}, **changes}
    path = tmp / "space.yaml"
    path.write_text(yaml.safe_dump(raw))
    return config.load(path)


def copy_data(sim_data: Path, dest: Path) -> Path:
    shutil.copytree(sim_data, dest)
    return dest


def corrupt_data_page(path: Path) -> None:
    """Overwrite the start of the z_spec column's data page; the footer stays valid."""
    meta = pq.ParquetFile(path).metadata
    column = next(
        meta.row_group(0).column(i) for i in range(meta.num_columns)
        if meta.row_group(0).column(i).path_in_schema == "z_spec"
    )
    with open(path, "r+b") as handle:
        handle.seek(column.data_page_offset)
        handle.write(b"\xff" * 64)
    pq.ParquetFile(path).metadata  # noqa: B018 - the footer still opens


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


# --- corrupt shards -------------------------------------------------------------------


def test_preflight_names_a_truncated_shard_and_skips_it_when_asked(sim_data, tmp_path):
    data = copy_data(sim_data, tmp_path / "data")
    shard = read_manifest(data).files("train")[1]
    truncate(shard)
    with pytest.raises(ZrayError) as caught:
        pipeline.check_shards(data)
    assert str(caught.value).startswith(f"{shard}: shard is corrupt (unreadable footer")
    assert "data.skip_corrupt: true" in str(caught.value)
    check = pipeline.check_shards(data, skip_corrupt=True)
    rows = next(s.rows for s in read_manifest(data).shards["train"] if s.file == shard.name)
    assert check.skipped == [(str(shard), rows, check.skipped[0][2])] and rows > 0
    assert shard not in check.files["train"] and check.rows_skipped == rows


@pytest.mark.slow
def test_corrupt_data_page_stops_the_run_naming_the_file(ray_session, sim_data, tmp_path):
    data = copy_data(sim_data, tmp_path / "data")
    shard = read_manifest(data).files("train")[0]
    corrupt_data_page(shard)
    pipeline.check_shards(data)  # the footer is sound: preflight passes
    with pytest.raises(ZrayError) as caught:
        training.run(load_space(tmp_path, data), runs_dir=tmp_path / "runs", name="strict")
    assert str(caught.value).startswith(f"{shard}: shard is corrupt (")
    assert not list((tmp_path / "runs").glob("strict/checkpoint_*"))


# --- a worker SIGKILLed mid-epoch (with one corrupt shard skipped) ---------------------


@pytest.fixture(scope="module")
def killed_worker_run(ray_session, sim_data, tmp_path_factory):
    """2 workers, 2 epochs: rank 1 SIGKILLs itself before step 2 of epoch 2; one train
    shard has a corrupt data page and the run skips it (data.skip_corrupt)."""
    tmp = tmp_path_factory.mktemp("killed")
    data = copy_data(sim_data, tmp / "data")
    shard = read_manifest(data).files("train")[0]
    corrupt_data_page(shard)
    space = load_space(tmp, data, data={"path": str(data), "image_size": 32, "skip_corrupt": True})
    ids = tmp / "ids"
    summary = training.run(
        space, runs_dir=tmp / "runs", name="killed", record_ids_dir=str(ids),
        extra={"kill_at": {"epoch": 2, "step": 2, "rank": 1}},
    )
    return {"summary": summary, "ids": ids, "data": data, "shard": shard}


@pytest.mark.slow
def test_killed_worker_restarts_from_last_checkpoint_without_gap_or_duplicate(killed_worker_run):
    summary, ids = killed_worker_run["summary"], killed_worker_run["ids"]
    run_dir = Path(summary["run_dir"])
    # The worker really died by SIGKILL, once: the marker is there and Ray Train started again.
    assert list(run_dir.glob("killed-e2-s2-r1"))
    assert sorted(p.name for p in ids.glob("start-r1-*.json")) == ["start-r1-e0.json", "start-r1-e1.json"]
    resumed = json.loads((ids / "start-r0-e1.json").read_text())
    first = next(d for d in training.complete_checkpoints(run_dir) if training.read_state(d)["epoch"] == 0)
    model, _ = training.load_checkpoint_model(first)
    assert weights_checksum(model) == pytest.approx(resumed["weights_checksum"], rel=1e-12)
    history = summary["history"]
    assert [h["epoch"] for h in history] == [1, 2]
    assert [h["restored_epochs"] for h in history] == [0, 1]
    # Both epochs trained on every kept row (the equal split drops only the remainder).
    kept = read_manifest(killed_worker_run["data"]).rows["train"] - summary["rows_skipped"]
    assert [h["train_rows"] for h in history] == [kept - kept % 2] * 2


@pytest.mark.slow
def test_skipped_corrupt_shard_is_named_and_counted(killed_worker_run):
    summary, shard = killed_worker_run["summary"], killed_worker_run["shard"]
    rows = next(s.rows for s in read_manifest(killed_worker_run["data"]).shards["train"] if s.file == shard.name)
    assert [(p, n) for p, n, _ in summary["skipped"]] == [(str(shard), rows)]
    assert summary["rows_skipped"] == rows > 0
    assert all(h["rows_skipped"] == rows for h in summary["history"])
    assert summary["metrics"]["rows_skipped"] == rows


# --- a full disk under the checkpoints --------------------------------------------------


@pytest.fixture
def small_disk(tmp_path):
    """A 3 MiB tmpfs: a real filesystem that runs out of space."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip()}); this test needs root")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill_after_first_checkpoint(run_dir: Path, stop: threading.Event) -> None:
    while not stop.is_set() and not training.complete_checkpoints(run_dir):
        time.sleep(0.01)
    try:
        with open(run_dir.parent / "filler", "wb") as handle:
            while True:
                handle.write(b"\0" * 65536)
                handle.flush()
    except OSError as exc:
        assert exc.errno == errno.ENOSPC


@pytest.mark.slow
def test_full_disk_ends_with_a_sentence_and_keeps_the_previous_checkpoint(ray_session, sim_data, small_disk, tmp_path):
    space = load_space(tmp_path, sim_data, fixed={**SPACE["fixed"], "epochs": 3},
                       resources={"num_workers": 1, "cpus_per_worker": 0.9})
    run_dir = small_disk / "full"
    stop = threading.Event()
    filler = threading.Thread(target=_fill_after_first_checkpoint, args=(run_dir, stop), daemon=True)
    filler.start()
    try:
        with pytest.raises(ZrayError) as caught:
            training.run(space, runs_dir=small_disk, name="full", max_failures=1)
    finally:
        stop.set()
        filler.join(timeout=30)
    message = str(caught.value)
    assert "no space left on device" in message and f"{run_dir}" in message, message
    assert "\n" not in message and "Traceback" not in message
    # The checkpoint before the disk filled is whole and loads; nothing partial is left.
    kept = training.complete_checkpoints(run_dir)
    assert kept, list(run_dir.iterdir())
    model, state = training.load_checkpoint_model(kept[-1])
    assert state["history"][-1]["epoch"] == state["epoch"] + 1
    assert np.isfinite(weights_checksum(model))
    assert not list(run_dir.glob(".*partial*"))
    partial = {str(d): sorted(str(p.relative_to(d)) + f":{p.stat().st_size}" for p in d.rglob("*"))
               for d in run_dir.glob("checkpoint_*") if d.is_dir() and not training.checkpoint_complete(d)}
    assert not partial, partial


def test_partial_checkpoint_is_never_trusted(tmp_path):
    whole = tmp_path / "checkpoint_a"
    (whole / "tf").mkdir(parents=True)
    (whole / "tf" / "ckpt.index").write_bytes(b"i" * 10)
    (whole / "tf" / "ckpt.data-00000-of-00001").write_bytes(b"d" * 100)
    files = {"tf/ckpt.index": 10, "tf/ckpt.data-00000-of-00001": 100}
    (whole / "state.json").write_text(json.dumps({"epoch": 0, "files": files}))
    assert training.checkpoint_complete(whole)
    cut = tmp_path / "checkpoint_b"
    shutil.copytree(whole, cut)
    (cut / "tf" / "ckpt.data-00000-of-00001").write_bytes(b"d" * 40)  # copy cut short
    assert not training.checkpoint_complete(cut)
    (cut / "state.json").write_text('{"epoch": 0, "fi')  # state cut short
    assert not training.checkpoint_complete(cut)
    assert training.complete_checkpoints(tmp_path) == [whole]
    with pytest.raises(ZrayError, match="incomplete checkpoint"):
        training.load_checkpoint_model(cut)


# --- the driver killed at random moments, repeatedly: scripts/chaos.py -----------------


def _chaos():
    spec = importlib.util.spec_from_file_location("chaos", ROOT / "scripts" / "chaos.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


EPOCHS = 6


@pytest.fixture(scope="module")
def chaos_run(cluster_ray, sim_data, tmp_path_factory):
    chaos = _chaos()
    tmp = tmp_path_factory.mktemp("chaos")
    # 6 epochs: after the first driver kill (right after a checkpoint, once a worker was killed and
    # restarted), the resumed launch still has checkpoints before its last epoch for the second kill.
    space = chaos.make_space(tmp, sim_data, trials=2, epochs=EPOCHS)
    env = cluster_ray["env"]
    # Each driver kill right after a checkpoint of that launch (the trial must
    # continue from there; a kill at a random time could come after a launch of
    # these fast trials had finished, or before its first restore). A Ray Train
    # worker killed mid-training, right after a checkpoint, before the first:
    # one killed at a random time could land in Ray Train's start of the worker
    # group, where it ends the run instead of restarting it.
    faults = chaos.run_chaos(
        space, tmp / "runs", env=env, root_pid=cluster_ray["pid"], driver_kills=2, worker_kills=1,
        seed=3, kill_window=(4.0, 40.0), kill_modes=("checkpoint", "checkpoint"), worker_kill_mode="checkpoint",
        log_dir=tmp / "logs",
    )
    return {"faults": faults, "report": chaos.audit(tmp / "runs" / "chaos", data=sim_data)}


@pytest.mark.slow
def test_chaos_search_loses_no_rows_and_no_trial(chaos_run):
    faults, report = chaos_run["faults"], chaos_run["report"]
    assert faults["driver_kills"] == 2 and faults["worker_kills"] == 1, faults
    assert report["completed"] == report["trials"] == report["num_samples"] == 2, report
    assert report["duplicate_trials"] == 0 and report["duplicated_epochs"] == 0
    assert report["rows_lost_per_epoch"] == {e: 0 for e in range(1, EPOCHS + 1)}, report
    assert report["continued_from_checkpoint"] >= 1, report
    assert report["optuna_complete"] == 2 and report["optuna_running"] == 0


# --- the dashboard listens on 127.0.0.1 -------------------------------------------------


@pytest.mark.slow
def test_local_ray_dashboard_listens_on_localhost(tmp_path):
    """A real local Ray started by zray's init_ray, in its own process and temp folder.

    Its processes also get zray's settings without a runtime environment (one
    would start each of them through Ray's set-up script, a second Python start).
    """
    from zray.runtime import TRAIN_ENV, WORKER_ENV

    code = (
        "import os, ray\n"
        "from zray.runtime import init_ray\n"
        "init_ray()\n"
        "print('URL', ray.init(ignore_reinit_error=True).dashboard_url)  # the running Ray's context\n"
        "@ray.remote(num_cpus=0)\n"
        "class Probe:\n"
        "    def look(self):\n"
        "        return os.environ.get('RAY_TRAIN_HEALTH_CHECK_INTERVAL_S'), ray.get_runtime_context().runtime_env\n"
        "interval, runtime_env = ray.get(Probe.remote().look.remote())\n"
        "print('ACTOR', interval, dict(runtime_env))\n"
        "ray.shutdown()\n"
    )
    temp = tempfile.mkdtemp(prefix="zd")
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS" and k not in {**WORKER_ENV, **TRAIN_ENV}}
    env["RAY_TMPDIR"] = temp
    try:
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180, env=env)
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    urls = [line.split()[1] for line in done.stdout.splitlines() if line.startswith("URL ")]
    assert done.returncode == 0 and urls, done.stderr[-2000:]
    assert urls[0].startswith("127.0.0.1:"), urls[0]
    actor = [line for line in done.stdout.splitlines() if line.startswith("ACTOR ")]
    assert actor == [f"ACTOR {TRAIN_ENV['RAY_TRAIN_HEALTH_CHECK_INTERVAL_S']} {{}}"], done.stdout[-1000:]


def test_dashboard_host_option_reaches_init_ray(monkeypatch, tmp_path):
    from click.testing import CliRunner

    from zray.cli import main

    seen = {}

    def fake_run(space, **kwargs):
        seen.update(kwargs)
        raise ZrayError("stop here")

    monkeypatch.setattr(training, "run", fake_run)
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump({**SPACE, "data": {"path": str(tmp_path), "image_size": 32}}))
    result = CliRunner().invoke(main, ["train", str(path), "--dashboard-host", "0.0.0.0"])
    assert result.exit_code == 1 and seen["dashboard_host"] == "0.0.0.0"
    result = CliRunner().invoke(main, ["train", str(path)])
    assert seen["dashboard_host"] == "127.0.0.1"

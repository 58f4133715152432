"""Training on real Ray Train TensorFlow workers, on tiny simulated data.

The data are the simulated galaxies rewritten sorted by redshift, as another
tool would write a catalogue. One run (2 workers, 2 epochs, data in memory)
crashes after its first checkpoint and is restarted by Ray Train's failure
handling; another (1 worker, data streamed from Parquet) runs 3 epochs; what
each worker actually received is recorded and checked. A second ``zray train``
on the same output resumes.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import zray_lines
from zray import config
from zray import train as training
from zray.data.pipeline import load_arrays
from zray.data.shards import read_manifest

pytestmark = pytest.mark.slow

SPACE = {
    "name": "t",
    "model": "cnn",
    "fixed": {"epochs": 2, "batch_size": 32, "blocks": 2, "filters": 8, "dense_units": 32,
              "learning_rate": 1.0e-3},
    "resources": {"num_workers": 2, "cpus_per_worker": 0.45},
}


def weights_checksum(model) -> float:
    from zray.train.steps import weights_checksum as checksum  # imports TensorFlow

    return checksum(model)


def sorted_copy(data: Path, out: Path) -> Path:
    """``data``'s rows rewritten in redshift order (the same ids, so the same splits)."""
    from zray.data.writer import DatasetWriter

    arrays = [load_arrays(data, split) for split in ("train", "val", "test")]
    rows = {k: np.concatenate([a[k] for a in arrays]) for k in ("id", "image", "z_spec", "ebv")}
    order = np.argsort(rows["z_spec"], kind="stable")
    with DatasetWriter(out, rows_per_shard=100, label="sorted") as writer:
        writer.add(*(rows[k][order] for k in ("id", "image", "z_spec", "ebv")))
    return out


def space_file(tmp_path: Path, data: Path) -> Path:
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump({**SPACE, "data": {"path": str(data), "image_size": 32}}))
    return path


@pytest.fixture(scope="module")
def sorted_data(sim_data, tmp_path_factory):
    return sorted_copy(sim_data, tmp_path_factory.mktemp("sorted") / "data")


@pytest.fixture(scope="module")
def crashed_run(ray_session, sorted_data, tmp_path_factory):
    """A 2-worker run whose workers crash right after the epoch-1 checkpoint; its progress
    within each epoch written after every step (progress_every_s 0) and its lines kept."""
    tmp = tmp_path_factory.mktemp("train")
    space = config.load(space_file(tmp, sorted_data))
    ids_dir = tmp / "ids"
    with zray_lines() as lines:
        summary = training.run(
            space, runs_dir=tmp / "runs", name="crash", record_ids_dir=str(ids_dir),
            extra={"fail_after_epoch": 0, "progress_every_s": 0.0},
        )
    return {"tmp": tmp, "ids": ids_dir, "summary": summary, "space": space, "lines": lines}


PROGRESS = re.compile(r"^epoch (\d+)/(\d+): ([\d,]+) of ([\d,]+) galaxies \((\d+)%\)")


def check_progress_lines(lines: list[str], epochs: int, total: int) -> None:
    """Lines of progress within epochs were shown, each of ``total`` rows (the epoch's, as the
    workers split them), counting up within an epoch; the time estimate once; the files gone."""
    found = [(m, line) for line in lines if (m := PROGRESS.match(line))]
    assert found, "no progress line within an epoch:\n" + "\n".join(lines)
    seen: dict[int, int] = {}
    for m, line in found:
        epoch, of, rows, shown_total = int(m[1]), int(m[2]), int(m[3].replace(",", "")), int(m[4].replace(",", ""))
        assert of == epochs and 1 <= epoch <= epochs and shown_total == total, line
        assert 0 < rows <= total and rows >= seen.get(epoch, 0), line
        seen[epoch] = rows
        if " img/s" in line and rows < total:
            assert "; its training ends in about " in line, line
    assert sum(line.startswith("estimate: ") for line in lines) == 1, lines




def check_epochs(ids_dir: Path, data: Path, workers: int, epochs: int, batch: int) -> list[np.ndarray]:
    """Every epoch covers the training split once (no id twice; only the remainder of
    rows / workers sits out), in equal parts, each worker's first batches a fair
    sample of the split's redshifts, and the order differs between epochs."""
    from scipy.stats import ks_2samp

    train = load_arrays(data, "train", columns=("id", "z_spec"))
    z_of = dict(zip(train["id"].tolist(), train["z_spec"].tolist()))
    assert np.all(np.diff(train["z_spec"]) >= 0), "the test data should be sorted by redshift"
    orders = []
    for epoch in range(epochs):
        parts = [np.load(ids_dir / f"ids-e{epoch}-r{rank}.npy") for rank in range(workers)]
        steps = [int((ids_dir / f"steps-e{epoch}-r{rank}.txt").read_text()) for rank in range(workers)]
        seen = np.concatenate(parts)
        assert len(np.unique(seen)) == len(seen), f"epoch {epoch}: an id came twice"
        assert set(seen.tolist()) <= set(z_of)
        assert len(z_of) - len(seen) == len(z_of) % workers
        assert len({len(p) for p in parts}) == 1 and len(set(steps)) == 1 and steps[0] > 0
        for rank, part in enumerate(parts):
            first = [z_of[i] for i in part[: 2 * batch]]
            p = ks_2samp(first, list(z_of.values())).pvalue
            assert p > 0.01, f"epoch {epoch}, rank {rank}: first batches' redshifts differ from the split's (p={p:.2g})"
        orders.append(seen)
    for a, b in zip(orders, orders[1:]):
        assert not np.array_equal(a, b), "the data was not reshuffled between epochs"
    return orders


def test_workers_get_uniform_disjoint_parts_of_each_epoch(crashed_run, sorted_data):
    from zray.data.epochs import epoch_rng, worker_part

    orders = check_epochs(crashed_run["ids"], sorted_data, workers=2, epochs=2, batch=16)
    # Epoch 2 was read by the restarted workers: exactly the order drawn for it from the
    # run's seed and the epoch (the id-sorted split, permuted), as if nothing had happened.
    ids = np.sort(load_arrays(sorted_data, "train", columns=("id",))["id"])
    order = ids[epoch_rng(crashed_run["space"].tune.seed, 1).permutation(len(ids))]
    start, stop = worker_part(len(ids), 2, 1)
    assert np.array_equal(np.load(crashed_run["ids"] / "ids-e1-r1.npy"), order[start:stop])
    assert len(orders) == 2


def test_a_streamed_split_is_shuffled_every_epoch_too(ray_session, sorted_data, tmp_path, monkeypatch):
    """One worker, the training split streamed from its Parquet row groups (as a split
    too large for the object store is), the validation split through Ray Train."""
    from zray.train import driver

    monkeypatch.setattr(driver, "MATERIALIZE_FRACTION", 0.0)
    space = config.load(space_file(tmp_path, sorted_data), ["fixed.epochs=3", "resources.num_workers=1",
                                                            "fixed.lr_schedule=constant"])
    with zray_lines() as lines:
        summary = training.run(space, runs_dir=tmp_path / "runs", name="streamed",
                               record_ids_dir=str(tmp_path / "ids"), extra={"progress_every_s": 0.0})
    check_epochs(tmp_path / "ids", sorted_data, workers=1, epochs=3, batch=32)
    # The streamed split's progress within an epoch is shown too (one worker: every row).
    check_progress_lines(lines, epochs=3, total=len(load_arrays(sorted_data, "train", columns=("id",))["id"]))
    assert not (tmp_path / "runs" / "streamed" / ".progress").exists()
    assert [h["epoch"] for h in summary["history"]] == [1, 2, 3]
    assert np.isfinite(summary["metrics"]["val_sigma_mad"])


def test_long_epochs_show_their_progress_and_the_estimate_before_they_end(crashed_run):
    """Within an epoch rank 0 writes how far it has come; the driver shows it (``epoch 1/2: N of M
    galaxies (P%) at R img/s; ...``) and makes the time estimate from it, so a run whose epochs
    take minutes (the Inception network on a CPU) is not silent until its first epoch ends. Here
    after every step (progress_every_s 0), through the workers' crash and restart."""
    lines = crashed_run["lines"]
    n_train = len(load_arrays(Path(crashed_run["space"].data.path), "train", columns=("id",))["id"])
    check_progress_lines(lines, epochs=2, total=n_train // 2 * 2)
    # The first progress line with a speed gave the estimate, before the first epoch's line.
    first_epoch = next(i for i, line in enumerate(lines) if line.startswith("epoch 1/2  loss"))
    estimate = next(i for i, line in enumerate(lines) if line.startswith("estimate: "))
    progress = [i for i, line in enumerate(lines) if PROGRESS.match(line) and " img/s" in line]
    if progress and progress[0] < first_epoch:
        assert estimate < first_epoch, lines
    # Its file goes when the run ends, and the folder with it.
    assert not (Path(crashed_run["summary"]["run_dir"]) / ".progress").exists()


def test_crash_resumes_from_last_checkpoint_with_saved_weights(crashed_run):
    ids_dir = crashed_run["ids"]
    summary = crashed_run["summary"]
    # The restarted workers began at the second epoch ...
    starts = sorted(p.name for p in ids_dir.glob("start-r0-*.json"))
    assert starts == ["start-r0-e0.json", "start-r0-e1.json"]
    resumed = json.loads((ids_dir / "start-r0-e1.json").read_text())
    assert resumed["start_epoch"] == 1
    # ... with exactly the weights of the epoch-1 checkpoint.
    run_dir = Path(summary["run_dir"])
    first = [d for d in run_dir.glob("checkpoint_*") if d.is_dir() and training.read_state(d)["epoch"] == 0]
    assert len(first) == 1
    model, state = training.load_checkpoint_model(first[0])
    assert weights_checksum(model) == pytest.approx(resumed["weights_checksum"], rel=1e-12)
    assert state["job"]["manifest_hash"] == read_manifest(crashed_run["space"].data.path).hash
    # The history has each epoch once, in order, and the metrics are real numbers.
    assert [h["epoch"] for h in summary["history"]] == [1, 2]
    final = summary["metrics"]
    for key in ("loss", "val_loss", "val_sigma_mad", "val_bias", "val_outlier_fraction", "val_crps"):
        assert np.isfinite(final[key]), key
    assert final["lr"] == pytest.approx(1e-3 / 5)  # the step schedule's drop at half the run


def test_zray_train_again_on_same_output_resumes(crashed_run, ray_session):
    """`zray train` with the same name continues the finished 2-epoch run, to 30 epochs; Ctrl-C
    (SIGINT) after its third ends it with status 130 and the command that continues it, which
    then runs it to the end.

    The command joins the test session's Ray through RAY_ADDRESS, as it would
    join a cluster.
    """
    tmp = crashed_run["tmp"]
    before = crashed_run["summary"]["history"]
    path = space_file(tmp, Path(crashed_run["space"].data.path))
    env = {**os.environ, "RAY_ADDRESS": ray_session.get_runtime_context().gcs_address}
    run_dir = tmp / "runs" / "crash"

    def epochs_saved() -> list[int]:
        return [training.read_state(d)["epoch"] for d in training.complete_checkpoints(run_dir)]

    proc = subprocess.Popen(
        [sys.executable, "-m", "zray", "train", str(path), "--runs", str(tmp / "runs"),
         "--name", "crash", "--set", "fixed.epochs=30"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and max(epochs_saved(), default=0) < 2:
        time.sleep(0.2)  # state.json's epoch counts from 0: 2 is the third epoch's checkpoint
    assert proc.poll() is None, "the run ended before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, out[-2000:] + err[-3000:]
    said = [line for line in err.splitlines() if line.startswith("zray: interrupted after epoch ")]
    assert said and " of 30; to continue from its last checkpoint: zray train " in said[0], err[-3000:]
    assert "Tuner.restore(" not in out + err and "Traceback" not in err and "Stop signal received" not in err
    command = shlex.split(said[0].split("checkpoint: ", 1)[1])
    assert command[1:] == ["train", str(path), "--set", "fixed.epochs=30", "--name", "crash", "--runs",
                           str(tmp / "runs")], command

    proc = subprocess.run([sys.executable, "-m", "zray", *command[1:]], capture_output=True, text=True,
                          timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert "epochs      30" in proc.stdout
    latest = max(run_dir.glob("checkpoint_*/"), key=lambda d: training.read_state(d)["epoch"])
    history = training.read_state(latest)["history"]
    assert [h["epoch"] for h in history] == list(range(1, 31))
    assert history[:2] == before  # carried over from the checkpoint, not retrained


def test_time_estimate_names_totals_and_shorter_overrides():
    from zray.train import estimate_line

    plan = {"trials": 20, "concurrent": 1, "train_rows": 8000, "val_rows": 1000,
            "simulated_n": 10000, "data_path": "/w/data/sim"}
    line = estimate_line(plan, 30, images_per_s=40.0)
    # 8000/40 + 1000/120 = 208 s an epoch; 30 epochs + 20 s start-up = 6,270 s a run; 20 runs = 34.8 h.
    assert "40 img/s here, so an epoch takes about 3 min" in line
    assert "one run of 30 epochs about 1.7 h" in line
    assert "the search of 20 trials at most about 34.8 h" in line
    assert "--set fixed.epochs=10 --set tune.num_samples=5" in line
    assert "--set data.simulate.n=2000 --set data.path=/w/data/sim-small" in line
    short = estimate_line({**plan, "trials": 1, "simulated_n": 0}, 30, images_per_s=100000.0)
    assert "Shorter" not in short and "search" not in short


def test_make_trainer_keeps_the_jobs_gpu_count_unless_told(tmp_path):
    from zray.train import TrainJob, make_trainer

    job = TrainJob(model="cnn", hyperparameters={"epochs": 1}, data_path="/d", image_size=32, z_min=0.0,
                   z_max=0.4, n_bins=180, manifest_hash="h", gpus_per_worker=1.0)
    trainer = make_trainer(job, datasets=None, storage_path=tmp_path, name="r")
    assert trainer.train_loop_config["job"]["gpus_per_worker"] == 1.0
    assert trainer.scaling_config.use_gpu
    cpu_only = make_trainer(job, datasets=None, storage_path=tmp_path, name="r", gpus_per_worker=0.0)
    assert cpu_only.train_loop_config["job"]["gpus_per_worker"] == 0.0 and not cpu_only.scaling_config.use_gpu


# What a trial's process does with a trainer of one worker, and what Ray Train's controller
# receives (the backend config, pickled), in a fresh Python: is TensorFlow loaded after it?
_BUILD_ONE_WORKER = """
import pickle, sys
from zray.train import TrainJob, make_trainer
job = TrainJob(model="cnn", hyperparameters={"epochs": 1}, data_path="/d", image_size=32, z_min=0.0,
               z_max=0.4, n_bins=180, manifest_hash="h", num_workers=1)
trainer = make_trainer(job, datasets=None, storage_path=sys.argv[1], name="r")
config = pickle.loads(pickle.dumps(trainer.backend_config))
print(type(config).__name__, "tensorflow" in sys.modules)
"""


def test_only_the_worker_of_a_one_worker_run_imports_tensorflow(tmp_path):
    """Several workers get Ray's TensorflowConfig (each worker's TF_CONFIG). One worker needs
    none, and without it neither the trial's process nor Ray Train's controller imports
    TensorFlow (with it, each spent about 8 s on the import before the worker started)."""
    from dataclasses import replace

    from ray.train.tensorflow import TensorflowConfig

    from zray.train import TrainJob, make_trainer

    job = TrainJob(model="cnn", hyperparameters={"epochs": 1}, data_path="/d", image_size=32, z_min=0.0,
                   z_max=0.4, n_bins=180, manifest_hash="h", num_workers=2)
    trainer = make_trainer(job, datasets=None, storage_path=tmp_path, name="r")
    assert isinstance(pickle.loads(pickle.dumps(trainer.backend_config)), TensorflowConfig)
    one = make_trainer(replace(job, num_workers=1), datasets=None, storage_path=tmp_path, name="r")
    assert not isinstance(one.backend_config, TensorflowConfig)
    done = subprocess.run([sys.executable, "-c", _BUILD_ONE_WORKER, str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["BackendConfig", "False"], done.stdout


def test_validation_data_is_read_once_and_the_same_every_epoch(ray_session, sim_data, monkeypatch):
    from zray.train import prepare_datasets, worker

    val = prepare_datasets(sim_data, 32).val
    ids = sorted(val.to_pandas()["id"].tolist())
    kept = worker._kept_batches(val)
    first, second = kept(), kept()
    assert first is second, "kept batches were read again"
    for batches in (first, second):  # every epoch sees the whole split, not an exhausted iterator
        assert sorted(np.concatenate([b["id"] for b in batches]).tolist()) == ids
    monkeypatch.setattr(worker, "KEEP_VAL_BYTES", 0)  # over the limit: read through Ray Data each epoch
    streamed = worker._kept_batches(val)
    assert sorted(np.concatenate([b["id"] for b in streamed()]).tolist()) == ids
    assert sorted(np.concatenate([b["id"] for b in streamed()]).tolist()) == ids


def test_labels_outside_the_bins_are_left_out_when_asked(ray_session, sorted_data, tmp_path):
    """--drop-out-of-range: the galaxies past data.z_max never reach a worker, and the
    summary counts them (training and validation)."""
    from zray.cli.config_cmds import with_skip

    z_max = 0.25
    train = load_arrays(sorted_data, "train", columns=("id", "z_spec"))
    val = load_arrays(sorted_data, "val", columns=("z_spec",))
    outside = int((train["z_spec"] >= z_max).sum() + (val["z_spec"] >= z_max).sum())
    assert outside > 0
    overrides = with_skip((f"data.z_max={z_max}", "fixed.epochs=1", "resources.num_workers=1",
                           "resources.cpus_per_worker=0.9"), skip_corrupt=False, drop_out_of_range=True)
    space = config.load(space_file(tmp_path, sorted_data), overrides)
    summary = training.run(space, runs_dir=tmp_path / "runs", name="drop", record_ids_dir=str(tmp_path / "ids"))
    assert summary["rows_out_of_range"] == outside
    seen = np.load(tmp_path / "ids" / "ids-e0-r0.npy")
    z_of = dict(zip(train["id"].tolist(), train["z_spec"].tolist()))
    assert len(seen) == int((train["z_spec"] < z_max).sum())
    assert max(z_of[i] for i in seen.tolist()) < z_max
    assert np.isfinite(summary["metrics"]["val_sigma_mad"])

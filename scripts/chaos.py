"""Chaos run: a small search while the driver and Ray Train workers are SIGKILLed at random moments.

Runs ``zray tune`` (a tiny CNN, a few trials of a few epochs) as a
subprocess joined to one Ray session, kills the driver at random moments and
random Ray Train worker processes of this session (found by the process name
``RayTrainWorker`` among the descendants of the process that started Ray), resumes with ``--resume``
until the search finishes, then audits what was kept::

    python scripts/chaos.py                      # 3 trials, 3 driver kills, 2 worker kills
    python scripts/chaos.py --trials 4 --driver-kills 5 --seed 1

It prints trials completed, faults injected and rows lost per epoch, which
must be 0: every trial's history (from its last whole checkpoint) has each
epoch exactly once, each with all the training rows. Exit status 1 if not.
``tests/test_faults.py`` runs a short version of the same functions.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml


def make_space(folder: Path, data: Path, *, trials: int, epochs: int, name: str = "chaos") -> Path:
    """A tiny search: 1 worker, a CNN of 2 blocks, learning rate and filters searched."""
    space = {
        "name": name,
        "model": "cnn",
        "data": {"path": str(data), "image_size": 32},
        "fixed": {"epochs": epochs, "batch_size": 32, "blocks": 2, "dense_units": 32},
        "search": {
            "learning_rate": {"type": "float", "low": 3e-4, "high": 3e-3, "log": True},
            "filters": {"type": "categorical", "choices": [8, 16]},
        },
        "tune": {"num_samples": trials, "max_concurrent": 1, "seed": 0, "sampler": "random"},
        "resources": {"num_workers": 1, "cpus_per_worker": 0.9, "trial_cpus": 0.1},
    }
    path = Path(folder) / f"{name}.yaml"
    path.write_text(yaml.safe_dump(space))
    return path


def _children(pid: int) -> dict[int, list[int]]:
    """Parent pid -> child pids of every process, from /proc (Linux)."""
    tree: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        tree.setdefault(ppid, []).append(int(entry.name))
    return tree


def train_workers(root_pid: int) -> list[int]:
    """Pids of Ray Train worker processes among ``root_pid``'s descendants (this Ray session only).

    Ray names each actor's process after it (``ray::RayTrainWorker...``).
    """
    tree, found, todo = _children(root_pid), [], [root_pid]
    while todo:
        for child in tree.get(todo.pop(), []):
            todo.append(child)
            try:
                title = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
            except OSError:
                continue
            if "RayTrainWorker" in title:
                found.append(child)
    return found


def run_chaos(
    space_path: Path,
    runs: Path,
    *,
    env: dict,
    root_pid: int,
    driver_kills: int,
    worker_kills: int,
    seed: int = 0,
    kill_window: tuple[float, float] = (4.0, 45.0),
    kill_modes: tuple[str, ...] = (),
    worker_kill_mode: str = "time",
    log_dir: Path | None = None,
    max_launches: int = 20,
    launch_timeout: float = 900.0,
) -> dict:
    """Run the search to the end while injecting faults; return what was injected.

    Each driver kill comes either at a random time in ``kill_window`` seconds
    after the launch (mode ``time``) or a random 0-0.5 s after a trial wrote
    a checkpoint that is not its last (mode ``checkpoint``: the trial is then
    cut off mid-run and must continue from that checkpoint). ``kill_modes``
    fixes the modes in order; past its end they are drawn at random. A worker
    kill, at most one per launch, comes at a random time before the driver's
    (``worker_kill_mode="time"``), or a random 0-0.5 s after a trial wrote a
    checkpoint that is not its last (``"checkpoint"``: mid-training; a
    checkpoint-mode driver kill of that launch then waits for a checkpoint
    written after it). A worker killed during Ray Train's start of the worker
    group, just before the training function is launched, can end the run
    instead of restarting it (Ray Train 2.60 retries a worker that dies at
    most other moments): the ``"checkpoint"`` mode stays clear of that.
    """
    rng = random.Random(seed)
    log_dir = Path(log_dir or runs)
    log_dir.mkdir(parents=True, exist_ok=True)
    faults = {"driver_kills": 0, "worker_kills": 0, "launches": 0}
    for launch in range(max_launches):
        cmd = [sys.executable, "-m", "zray", "tune", str(space_path), "--runs", str(runs)]
        if launch > 0:
            cmd.append("--resume")
        log_path = log_dir / f"launch-{launch}.log"
        with log_path.open("w") as log:
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        faults["launches"] += 1
        t0 = time.time()
        kill_driver_at, mode = None, None
        if faults["driver_kills"] < driver_kills:
            k = faults["driver_kills"]
            mode = kill_modes[k] if k < len(kill_modes) else rng.choice(("time", "checkpoint"))
            kill_driver_at = rng.uniform(*kill_window) if mode == "time" else None
        # At most one worker kill per launch: each trial's Ray Train run allows one restart.
        kill_worker_at = (
            rng.uniform(kill_window[0], kill_driver_at or kill_window[1])
            if faults["worker_kills"] < worker_kills and worker_kill_mode == "time" else None
        )
        worker_after_checkpoint = faults["worker_kills"] < worker_kills and worker_kill_mode == "checkpoint"
        known = _checkpoints(runs)
        killed = False
        while proc.poll() is None:
            elapsed = time.time() - t0
            waiting_for_worker_kill = worker_after_checkpoint and faults["worker_kills"] < worker_kills
            if waiting_for_worker_kill and kill_worker_at is None:
                if any(epoch < last for _, epoch, last in _checkpoints(runs) - known):
                    kill_worker_at = elapsed + rng.uniform(0.0, 0.5)
            if mode == "checkpoint" and kill_driver_at is None and not waiting_for_worker_kill:
                fresh = _checkpoints(runs) - known
                if any(epoch < last for _, epoch, last in fresh):
                    kill_driver_at = elapsed + rng.uniform(0.0, 0.5)
            if kill_worker_at is not None and elapsed >= kill_worker_at:
                workers = train_workers(root_pid)
                if workers:
                    victim = rng.choice(workers)
                    try:
                        os.kill(victim, signal.SIGKILL)
                        faults["worker_kills"] += 1
                        known = _checkpoints(runs)  # a driver kill after this waits for a newer checkpoint
                        print(f"chaos: launch {launch}: killed Ray Train worker {victim} at {elapsed:.1f} s",
                              flush=True)
                    except ProcessLookupError:
                        pass
                    kill_worker_at = None
                else:
                    kill_worker_at += 1.0  # none running yet; look again shortly
            if kill_driver_at is not None and elapsed >= kill_driver_at:
                proc.send_signal(signal.SIGKILL)
                proc.wait(timeout=60)
                faults["driver_kills"] += 1
                killed = True
                print(f"chaos: launch {launch}: killed the driver at {elapsed:.1f} s ({mode})", flush=True)
                time.sleep(3)  # let Ray reap the dead driver's trial actors
                break
            if elapsed > launch_timeout:
                proc.kill()
                raise RuntimeError(f"zray tune ran over {launch_timeout:.0f} s; see {log_path}")
            time.sleep(0.2)
        if killed:
            continue
        if proc.returncode == 0:
            return faults
        raise RuntimeError(f"zray tune exited {proc.returncode}; last lines of {log_path}:\n"
                           + "\n".join(log_path.read_text().splitlines()[-20:]))
    raise RuntimeError(f"the search did not finish in {max_launches} launches")


def _checkpoints(runs: Path) -> set[tuple[str, int, int]]:
    """(folder, epoch, last epoch) of every whole trial checkpoint under ``runs``."""
    from zray.train import checkpoint_complete

    found = set()
    for state_file in Path(runs).glob("*/trials/*/checkpoint_*/state.json"):
        if checkpoint_complete(state_file.parent):
            try:
                state = json.loads(state_file.read_text())
                last = int(state["job"]["hyperparameters"]["epochs"]) - 1
            except (OSError, ValueError, KeyError):
                continue
            found.add((str(state_file.parent), int(state["epoch"]), last))
    return found


def audit(experiment: Path, *, data: Path, num_workers: int = 1) -> dict:
    """What the finished search kept: trials, duplicates, and rows lost per epoch."""
    import optuna

    from zray import search
    from zray.data.shards import read_manifest
    from zray.train import complete_checkpoints, read_state

    summary = search.summarize(experiment)
    space = json.loads((experiment / search.SPACE_FILE).read_text())
    epochs = int(space["fixed"]["epochs"])
    n_train = read_manifest(data).rows["train"]
    expected = n_train - n_train % num_workers
    lost = {e: 0 for e in range(1, epochs + 1)}
    duplicated_epochs, continued = 0, 0
    for record in summary["trials"]:
        run_dir = experiment / search.TRIALS_DIR / record["trial"]
        checkpoints = complete_checkpoints(run_dir)
        history = read_state(checkpoints[-1])["history"] if checkpoints else []
        seen = [h["epoch"] for h in history]
        duplicated_epochs += len(seen) - len(set(seen))
        continued += any(h.get("restored_epochs", 0) > 0 for h in history)
        by_epoch = {h["epoch"]: h for h in history}
        for e in lost:
            got = by_epoch.get(e, {}).get("train_rows", 0)
            lost[e] += expected - got
    params = [tuple(sorted(r["params"].items())) for r in summary["trials"]]
    study = optuna.load_study(study_name=space["name"], storage=f"sqlite:///{experiment / search.STUDY_FILE}")
    states = [t.state.name for t in study.trials]
    return {
        "num_samples": summary["num_samples"],
        "trials": len(summary["trials"]),
        "completed": sum(r["status"] == "complete" for r in summary["trials"]),
        "duplicate_trials": len(params) - len(set(params)),
        "duplicated_epochs": duplicated_epochs,
        "continued_from_checkpoint": continued,
        "rows_lost_per_epoch": lost,
        "optuna_complete": states.count("COMPLETE"),
        "optuna_running": states.count("RUNNING"),
        "expected_rows_per_epoch": expected,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--driver-kills", type=int, default=3)
    parser.add_argument("--worker-kills", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="Work folder (default: a new temporary one).")
    parser.add_argument("--data", type=Path, default=None, help="Dataset (default: 300 simulated 32x32 galaxies).")
    args = parser.parse_args()

    import ray

    from zray.runtime import TRAIN_ENV, WORKER_ENV

    out = args.out or Path(tempfile.mkdtemp(prefix="zray-chaos-"))
    out.mkdir(parents=True, exist_ok=True)
    data = args.data or out / "data"
    if not (data / "manifest.json").exists():
        from zray.data.simulate import simulate

        simulate(data, 300, size=32, seed=0, workers=1, rows_per_shard=100, progress=False)
    os.environ.update({**WORKER_ENV, **TRAIN_ENV})
    ray_tmp = tempfile.mkdtemp(prefix="zc")  # short: Ray's socket paths have a length limit
    ray.init(num_cpus=os.cpu_count() or 2, _temp_dir=ray_tmp, include_dashboard=True,
             dashboard_host="127.0.0.1", log_to_driver=False,
             runtime_env={"env_vars": {**WORKER_ENV, **TRAIN_ENV}})
    env = {**os.environ, "RAY_ADDRESS": ray.get_runtime_context().gcs_address}
    space = make_space(out, data, trials=args.trials, epochs=args.epochs)
    t0 = time.time()
    try:
        faults = run_chaos(space, out / "runs", env=env, root_pid=os.getpid(), driver_kills=args.driver_kills,
                           worker_kills=args.worker_kills, seed=args.seed, log_dir=out / "logs")
        report = audit(out / "runs" / "chaos", data=data)
    finally:
        ray.shutdown()
    lost = report["rows_lost_per_epoch"]
    print("")
    print(f"trials completed    {report['completed']} of {report['num_samples']} "
          f"({report['trials']} trial folders, {report['duplicate_trials']} duplicated; "
          f"Optuna: {report['optuna_complete']} complete, {report['optuna_running']} left running)")
    print(f"faults injected     {faults['driver_kills']} driver kills, {faults['worker_kills']} worker kills "
          f"({faults['launches']} launches of zray tune)")
    print(f"trials continued from a checkpoint  {report['continued_from_checkpoint']}")
    print("rows lost per epoch " + ", ".join(f"epoch {e}: {n}" for e, n in lost.items())
          + f"  (of {report['expected_rows_per_epoch']} per trial; duplicated epochs {report['duplicated_epochs']})")
    print(f"wall time           {time.time() - t0:.0f} s   work folder {out}")
    ok = (report["completed"] == report["num_samples"] == report["trials"] and not any(lost.values())
          and report["duplicate_trials"] == 0 and report["duplicated_epochs"] == 0)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

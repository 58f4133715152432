"""The search: Optuna distributions, a killed and resumed `zray tune`, a failing trial."""

from __future__ import annotations

import csv
import json
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import optuna.distributions as od
import pytest
import yaml
from click.testing import CliRunner

from zray import config, search
from zray.cli import main

BASE = {
    "model": "cnn",
    "fixed": {"epochs": 2, "batch_size": 32, "blocks": 2, "dense_units": 32},
    "resources": {"num_workers": 1, "cpus_per_worker": 0.9, "trial_cpus": 0.1},
}


def write_space(tmp_path: Path, data_path: Path, **changes) -> Path:
    space = {**BASE, "data": {"path": str(data_path), "image_size": 32}, **changes}
    path = tmp_path / f"{space['name']}.yaml"
    path.write_text(yaml.safe_dump(space))
    return path


# --- distributions (no Ray) --------------------------------------------------------


def test_each_distribution_type_converts(tmp_path):
    path = write_space(
        tmp_path,
        tmp_path,
        name="conv",
        fixed={"epochs": 2},
        search={
            "learning_rate": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
            "dropout": {"type": "float", "low": 0.0, "high": 0.4, "step": 0.1},
            "filters": {"type": "int", "low": 8, "high": 32, "step": 8},
            "blocks": {"type": "int", "low": 1, "high": 4, "log": True},
            "lr_schedule": {"type": "categorical", "choices": ["step", "cosine"]},
        },
    )
    dists = search.optuna_distributions(config.load(path))
    assert dists["learning_rate"] == od.FloatDistribution(1e-4, 1e-2, log=True)
    assert dists["dropout"] == od.FloatDistribution(0.0, 0.4, step=0.1)
    assert dists["filters"] == od.IntDistribution(8, 32, step=8)
    assert dists["blocks"] == od.IntDistribution(1, 4, log=True)
    assert dists["lr_schedule"] == od.CategoricalDistribution(["step", "cosine"])
    # Sampled values respect each distribution.
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    for _ in range(20):
        params = study.ask(dists).params
        assert 1e-4 <= params["learning_rate"] <= 1e-2
        assert round(params["dropout"] * 10, 6) == int(round(params["dropout"] * 10))
        assert params["filters"] in (8, 16, 24, 32)
        assert isinstance(params["blocks"], int) and 1 <= params["blocks"] <= 4
        assert params["lr_schedule"] in ("step", "cosine")


def test_scheduler_choice(tmp_path):
    from ray.tune.schedulers import ASHAScheduler, MedianStoppingRule

    path = write_space(tmp_path, tmp_path, name="sched")
    assert search.make_scheduler(config.load(path)) is None
    asha = search.make_scheduler(config.load(path, ["tune.scheduler.type=asha"]))
    assert isinstance(asha, ASHAScheduler)
    median = search.make_scheduler(config.load(path, ["tune.scheduler.type=median"]))
    assert isinstance(median, MedianStoppingRule)


# --- real searches -------------------------------------------------------------------



def _results(experiment: Path) -> list[dict]:
    with (experiment / search.RESULTS_FILE).open() as handle:
        return list(csv.DictReader(handle))


def _epochs_done(experiment: Path) -> list[int]:
    done = []
    for result in experiment.glob("trial-*/result.json"):
        lines = [json.loads(x) for x in result.read_text().splitlines() if x.strip()]
        done.append(max((r.get("epoch", 0) for r in lines), default=0))
    return done


@pytest.fixture(scope="module")
def killed_and_resumed(cluster_ray, sim_data, tmp_path_factory):
    """A 3-trial search interrupted by Ctrl-C (SIGINT) once a trial has finished, then resumed
    with the command the interrupted one printed, on a Ray that outlives its drivers (as a
    cluster's). A driver SIGKILLed instead is scripts/chaos.py's case (tests/test_faults.py)."""
    tmp = tmp_path_factory.mktemp("tune")
    path = write_space(
        tmp,
        sim_data,
        name="killed",
        search={
            "learning_rate": {"type": "float", "low": 3e-4, "high": 3e-3, "log": True},
            "filters": {"type": "categorical", "choices": [8, 16]},
        },
        tune={"num_samples": 3, "max_concurrent": 1, "seed": 0},
    )
    runs = tmp / "runs"
    experiment = runs / "killed"
    log = (tmp / "first.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "zray", "tune", str(path), "--runs", str(runs)],
        stdout=log, stderr=subprocess.STDOUT, env=cluster_ray["env"],
    )
    deadline = time.time() + 400
    while time.time() < deadline and proc.poll() is None:
        done = _epochs_done(experiment)
        if sum(e >= 2 for e in done) >= 1 and len(done) >= 2:
            break  # one trial finished, the next one has started
        time.sleep(0.5)
    assert proc.poll() is None, "the search ended before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    first = {"returncode": proc.wait(timeout=120), "output": (tmp / "first.log").read_text()}
    before = sorted(p.name for p in experiment.glob("trial-*"))
    time.sleep(3)  # let Ray reap the interrupted driver's trial actors

    said = [line for line in first["output"].splitlines() if "to finish the search: " in line]
    command = shlex.split(said[-1].split("to finish the search: ", 1)[1]) if said else []
    resumed = subprocess.run(
        [sys.executable, "-m", "zray", *command[1:]] if command[:1] == ["zray"] else
        [sys.executable, "-m", "zray", "tune", str(path), "--runs", str(runs), "--resume"],
        capture_output=True, text=True, timeout=600, env=cluster_ray["env"],
    )
    return {"experiment": experiment, "before": before, "resumed": resumed, "path": path, "first": first,
            "command": command, "runs": runs}


@pytest.mark.slow
def test_ctrl_c_ends_a_search_with_the_command_that_finishes_it(killed_and_resumed):
    first, command = killed_and_resumed["first"], killed_and_resumed["command"]
    assert first["returncode"] == 130, first["output"][-3000:]
    assert "Tuner.restore(" not in first["output"]  # Tune's advice for Python users, not zray's
    assert "Stop signal received" not in first["output"]  # Tune's line, said as zray's:
    assert "zray: Ctrl-C: stopping, and saving what resuming needs" in first["output"]
    # Interrupted during the second trial: it is unfinished, or (finished just before) the third is not started.
    assert re.search(r"zray: interrupted, with (1 trial unfinished|1 trial not started)", first["output"]), \
        first["output"][-3000:]
    assert command == ["zray", "tune", str(killed_and_resumed["path"]), "--storage", str(killed_and_resumed["runs"]),
                       "--resume"], command


def test_what_an_interrupted_search_left_to_do():
    trials = [{"trial": "a", "status": "complete"}, {"trial": "b", "status": "stopped"},
              {"trial": "c", "status": "unfinished"}, {"trial": "d", "status": "error"}]
    summary = {"trials": trials, "num_samples": 6}
    assert search.left_to_do(summary) == "1 trial unfinished, 2 trials not started"
    assert search.left_to_do({**summary, "num_samples": 4}) == "1 trial unfinished"
    assert search.left_to_do({"trials": trials[:2], "num_samples": 3}) == "1 trial not started"
    assert search.left_to_do({"trials": trials[:2], "num_samples": 2}) == ""


@pytest.mark.slow
def test_killed_search_resumes_to_exactly_num_samples(killed_and_resumed):
    resumed = killed_and_resumed["resumed"]
    experiment = killed_and_resumed["experiment"]
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-3000:]
    rows = _results(experiment)
    assert len(rows) == 3
    assert all(r["status"] == "complete" for r in rows), rows
    assert len({r["trial"] for r in rows}) == 3
    assert len({(r["learning_rate"], r["filters"]) for r in rows}) == 3, "a trial was run twice"
    # The trials that existed before the kill are among the final ones (continued, not replaced).
    assert set(killed_and_resumed["before"]) <= {r["trial"] for r in rows}
    # The same Optuna study, in the experiment folder, holds exactly these trials.
    study = optuna.load_study(study_name="killed", storage=f"sqlite:///{experiment / 'optuna.db'}")
    finished = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(finished) == 3
    assert sorted(round(t.params["learning_rate"], 12) for t in finished) == sorted(
        round(float(r["learning_rate"]), 12) for r in rows
    )
    assert "best checkpoint:" in resumed.stdout


@pytest.mark.slow
def test_results_table_best_checkpoint_and_status(killed_and_resumed):
    experiment = killed_and_resumed["experiment"]
    best = json.loads((experiment / search.BEST_FILE).read_text())
    rows = _results(experiment)
    best_row = min(rows, key=lambda r: float(r["best_val_sigma_mad"]))
    assert best["trial"] == best_row["trial"]
    checkpoint = Path(best["checkpoint"])
    assert (checkpoint / "state.json").exists() and (checkpoint / "tf").is_dir()
    state = json.loads((checkpoint / "state.json").read_text())
    assert state["metrics"]["val_sigma_mad"] == pytest.approx(float(best_row["best_val_sigma_mad"]))
    # `zray status` only reads: without results.csv/best.json it shows the same
    # table and writes neither back (it used to rewrite both).
    saved = {name: (experiment / name).read_bytes() for name in (search.RESULTS_FILE, search.BEST_FILE)}
    for name in saved:
        (experiment / name).unlink()
    before = sorted((p.relative_to(experiment), p.stat().st_mtime_ns) for p in experiment.rglob("*"))
    result = CliRunner().invoke(main, ["status", str(experiment)])
    assert result.exit_code == 0, result.output
    assert "3 of 3: 3 complete" in result.output
    assert best["trial"] in result.output and str(checkpoint) in result.output
    assert sorted((p.relative_to(experiment), p.stat().st_mtime_ns) for p in experiment.rglob("*")) == before
    for name, data in saved.items():
        (experiment / name).write_bytes(data)


@pytest.mark.slow
def test_resume_refuses_a_changed_search_space(killed_and_resumed):
    path = killed_and_resumed["path"]
    runs = killed_and_resumed["experiment"].parent
    result = CliRunner().invoke(main, ["tune", str(path), "--runs", str(runs), "--resume", "--set", "tune.num_samples=5"])
    assert result.exit_code == 1
    assert "differs from the one this experiment started with" in result.output


@pytest.mark.slow
def test_failing_trial_is_recorded_and_search_completes(ray_session, sim_data, tmp_path):
    # With seed 0, Optuna's TPE start-up draws 1e12 first, then 1e-3: one trial
    # diverges (loss NaN), the other trains.
    path = write_space(
        tmp_path,
        sim_data,
        name="diverge",
        search={"learning_rate": {"type": "categorical", "choices": [1.0e-3, 1.0e12]}},
        tune={"num_samples": 2, "seed": 0},
    )
    result = CliRunner().invoke(main, ["tune", str(path), "--runs", str(tmp_path / "runs")])
    # Some trials completed: the search succeeded, and lists the failure.
    assert result.exit_code == 0, result.output
    assert "failed trial-" in result.output and "diverged" in result.output
    summary = search.summarize(tmp_path / "runs" / "diverge")
    statuses = sorted(r["status"] for r in summary["trials"])
    assert statuses == ["complete", "error"], summary["trials"]
    failed = next(r for r in summary["trials"] if r["status"] == "error")
    assert failed["params"]["learning_rate"] == 1e12
    assert "diverged" in failed["error"]
    assert summary["best"]["params"]["learning_rate"] == 1e-3
    assert summary["best_checkpoint"]
    rows = _results(tmp_path / "runs" / "diverge")
    assert {r["status"] for r in rows} == {"complete", "error"}
    # The Optuna study tells the same story, read with Optuna's own API.
    study = optuna.load_study(study_name="diverge", storage=f"sqlite:///{tmp_path / 'runs' / 'diverge' / 'optuna.db'}")
    states = {t.params["learning_rate"]: t for t in study.trials}
    assert states[1e12].state == optuna.trial.TrialState.FAIL
    good = states[1e-3]
    assert good.state == optuna.trial.TrialState.COMPLETE
    best_row = next(r for r in rows if r["status"] == "complete")
    assert good.value == pytest.approx(float(best_row["best_val_sigma_mad"]))
    assert sorted(good.intermediate_values) == [1, 2]  # every epoch, at step = epoch
    assert good.user_attrs["zray_trial"] == best_row["trial"]
    assert good.user_attrs["zray_best_checkpoint"] == best_row["best_checkpoint"]
    assert study.best_trial.number == good.number


def test_status_of_a_folder_that_is_not_an_experiment(tmp_path):
    result = CliRunner().invoke(main, ["status", str(tmp_path)])
    assert result.exit_code == 1
    assert "not a zray experiment" in result.output
    result = CliRunner().invoke(main, ["status", str(tmp_path / "nowhere")])
    assert result.exit_code == 1 and f"{tmp_path / 'nowhere'}: no such folder; expected an experiment" in result.output
    (tmp_path / "exp" / "trial-a").mkdir(parents=True)
    (tmp_path / "exp" / "search_space.json").write_text("{}")
    result = CliRunner().invoke(main, ["status", str(tmp_path / "exp" / "trial-a")])
    assert result.exit_code == 1
    assert f"(search_space.json missing) (it lies inside the experiment {tmp_path / 'exp'})" in result.output


def test_tune_without_data_names_the_folder(tmp_path):
    path = write_space(tmp_path, tmp_path / "nowhere", name="nodata")
    result = CliRunner().invoke(main, ["tune", str(path), "--runs", str(tmp_path / "runs")])
    assert result.exit_code == 1
    assert f"{tmp_path / 'nowhere'}: no dataset there" in result.output
    assert not (tmp_path / "runs" / "nodata").exists()


@pytest.mark.slow
def test_tune_exits_non_zero_with_one_sentence_when_every_trial_fails(ray_session, sim_data, tmp_path):
    # Nothing to search: the fixed configuration is tried (with no search section, Optuna's
    # searcher once crashed before any trial), and it diverges.
    path = write_space(
        tmp_path, sim_data, name="allfail",
        fixed={**BASE["fixed"], "epochs": 1, "learning_rate": 1.0e12},
        tune={"num_samples": 1, "seed": 0},
    )
    assert "search" not in yaml.safe_load(path.read_text())
    result = CliRunner().invoke(main, ["tune", str(path), "--runs", str(tmp_path / "runs")])
    assert result.exit_code == 1, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("zray: error: ")]
    assert len(errors) == 1, result.output
    last = result.output.strip().splitlines()[-1]
    assert last == errors[0], result.output
    assert last.startswith("zray: error: no trial of allfail completed (1 started); the first failed with: ")
    assert "diverged" in last and "Traceback" not in result.output
    rows = _results(tmp_path / "runs" / "allfail")
    assert [r["status"] for r in rows] == ["error"], rows
    status = CliRunner().invoke(main, ["status", str(tmp_path / "runs" / "allfail")])
    assert status.exit_code == 0 and "1 of 1: 1 error" in status.output, status.output

"""README.md is executable: its commands, as a new user types them, in a fresh copy.

The commands are read from README.md itself (never copied into this file), run
from the root of a copy of the repository with relative paths, in the order a
user follows them: the quickstart search, then the walk-through of every
command in the Commands table on the quickstart's data.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
ZRAY = Path(sys.executable).with_name("zray")

pytestmark = pytest.mark.slow

# What a command's terminal must not show: the chatter of TensorFlow and of Ray's processes.
NOISE = ("cuInit", "RayDeprecationWarning", "Progress bars disabled", "driver_artifacts", "╭", "I0000",
         "oneDNN", "A new study created", "(pid=", "worker processes have been started")


def code_block(heading: str) -> str:
    """The first ```bash block under the ``## heading`` section of README.md."""
    text = README.read_text()
    match = re.search(rf"^## {re.escape(heading)}.*?^```bash\n(.*?)^```", text, re.M | re.S)
    assert match, f"README.md has no ```bash block under '## {heading}'"
    return match.group(1)


def commands(block: str) -> list[str]:
    """The block's commands: continuation lines joined, comments and blanks dropped."""
    joined = block.replace("\\\n", " ")
    lines = [line.split(" #", 1)[0].strip() for line in joined.splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


def zray_argv(command: str) -> list[str]:
    """The ``zray ...`` part of a shell command line (``a && b && .venv/bin/zray x``),
    run with this test environment's ``zray``."""
    for part in command.split("&&"):
        argv = shlex.split(part)
        if argv and Path(argv[0]).name == "zray":
            return [str(ZRAY), *argv[1:]]
    raise AssertionError(f"no zray command in README line: {command}")


def table_commands() -> set[str]:
    """The subcommands listed in README.md's Commands table."""
    text = README.read_text()
    section = text.split("\n## Commands", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^\| `zray (\w+)", section, re.M))


def fresh_copy(dest: Path) -> Path:
    """The repository's own files (what a clone holds) copied to ``dest``."""
    listed = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-co", "--exclude-standard", "-z"],
                            capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        source = ROOT / name
        if source.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
    return dest


def run(argv: list[str], cwd: Path, timeout: int) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_ADDRESS")}
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def run_zray_lines(lines: list[str], copy: Path) -> list[str]:
    """Run each ``zray ...`` line in ``copy`` with this environment's zray; each must succeed and be
    as quiet as the quickstart (TensorFlow starts in evaluate and predict too). Their stdouts."""
    outputs = []
    for line in lines:
        argv = shlex.split(line)
        assert argv[0] == "zray", line
        result = run([str(ZRAY), *argv[1:]], cwd=copy, timeout=600)
        assert result.returncode == 0, f"{line}\n{(result.stdout + result.stderr)[-3000:]}"
        for noise in NOISE:
            assert noise not in result.stdout + result.stderr, f"{noise!r} in the output of {line}"
        outputs.append(result.stdout)
    return outputs


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory):
    """A fresh copy with the README's quickstart search run in it (about 2-3 minutes)."""
    copy = fresh_copy(tmp_path_factory.mktemp("clone") / "zray")
    line = commands(code_block("Quickstart"))
    assert len(line) == 1, "the quickstart is one command"
    done = run(zray_argv(line[0]), cwd=copy, timeout=900)
    return copy, done


def test_readme_quickstart_runs_in_a_fresh_copy_and_learns(quickstart):
    copy, done = quickstart
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-3000:]
    # Relative paths of the search space landed under the copy, not elsewhere.
    assert (copy / "data" / "quickstart" / "manifest.json").is_file()
    best = json.loads((copy / "runs" / "quickstart" / "best.json").read_text())
    assert best["trial"] and Path(best["checkpoint"]).is_dir()
    assert Path(best["checkpoint"]).is_relative_to(copy)
    # The summary shows the reference predictors, and the network beat the constant one clearly.
    assert "reference predictors on the same" in done.stdout
    table = json.loads((copy / "data" / "quickstart" / "baselines.json").read_text())
    constant = table["splits"]["val"]["constant"]
    assert best["metrics"]["val_sigma_mad"] < 0.8 * constant["sigma_mad"], done.stdout[-2000:]
    assert best["metrics"]["val_outlier_fraction"] < constant["outlier_fraction"]
    assert "BETTER THAN THE CONSTANT" not in done.stdout  # neither NO nor NOT CLEARLY
    # ... and is at least level with the colour kNN on these 2,000 galaxies (within what a
    # sigma_MAD on the validation galaxies can tell; cnn_phot with unscaled colours was 1.14x).
    from zray.baselines import sigma_mad_noise

    knn = table["splits"]["val"]["knn"]
    assert best["metrics"]["val_sigma_mad"] < knn["sigma_mad"] * (1 + sigma_mad_noise(knn["n"])), done.stdout[-2000:]
    assert "the colour kNN still does better" not in done.stdout
    # A quiet terminal: zray's lines, not the chatter of the processes Ray starts.
    for noise in NOISE:
        assert noise not in output, f"{noise!r} in the quickstart's output"
    assert output.count(" ended after ") == 3  # one line per finished trial
    # ... and one as each started, the first saying when the first line of figures comes
    started = [line for line in done.stdout.splitlines() if line.startswith("zray: trial ") and " started: " in line]
    assert len(started) == 3 and "learning_rate " in started[0], done.stdout[-3000:]
    assert started[0].endswith("; each epoch is shown when it ends, a long one also as it runs, with a time estimate")
    assert "zray: estimate: " in done.stdout


def test_tensorboard_events_hold_one_point_per_epoch_per_trial(quickstart):
    copy, done = quickstart
    assert done.returncode == 0, "the quickstart failed; see the test above"
    import tensorflow as tf

    experiment = copy / "runs" / "quickstart"
    trials = sorted(experiment.glob("trial-*"))
    assert len(trials) == 3
    for trial in trials:
        epochs = [json.loads(line)["epoch"] for line in (trial / "result.json").read_text().splitlines()]
        steps: dict[str, list[int]] = {}
        for event_file in trial.glob("events.out.tfevents.*"):
            for event in tf.compat.v1.train.summary_iterator(str(event_file)):
                for value in event.summary.value:
                    steps.setdefault(value.tag.rsplit("/", 1)[-1], []).append(event.step)
        for tag in ("val_sigma_mad", "loss", "lr", "train_images_per_s"):
            assert sorted(steps[tag]) == list(range(1, len(epochs) + 1)), (trial.name, tag)


def test_readme_walkthrough_runs_every_command(quickstart):
    copy, done = quickstart
    assert done.returncode == 0, "the quickstart failed; see the test above"
    lines = commands(code_block("Walk-through"))
    # The block starts in the quickstart's environment; here that is this test's `zray`.
    assert lines[0] == "source .venv/bin/activate", lines[0]
    lines = lines[1:]
    used = {shlex.split(line)[1] for line in lines} | {"tune"}  # tune: the quickstart
    # prepare needs the user's FITS files; cutouts has its own section (test_readme_survey_images_section_runs)
    missing = table_commands() - used - {"prepare", "cutouts"}
    assert not missing, f"README walk-through does not show: {sorted(missing)}"
    run_zray_lines(lines, copy)
    # What the walk-through says it writes is there, under the copy.
    assert (copy / "best" / "bundle.json").is_file()
    import pyarrow.parquet as pq

    assert pq.read_metadata(copy / "pz.parquet").num_rows > 0
    metrics = json.loads((copy / "report" / "metrics.json").read_text())
    assert set(metrics["baselines"]) == {"constant", "knn"}
    assert (copy / "report" / "index.html").is_file()
    assert (copy / "data" / "small" / "manifest.json").is_file()
    held_out = json.loads((copy / "report-small" / "metrics.json").read_text())
    assert held_out["overall"]["n"] == 500 and held_out["trained_on"] == 0
    assert held_out["baselines_fitted_on"] == str((copy / "data" / "quickstart").resolve())
    assert any((copy / "runs").glob("quickstart-train-*/checkpoint_*"))


def test_readme_rail_and_qp_section_runs(quickstart):
    """The "With RAIL and qp" block, after the walk-through, in the same copy: qp reads zray's file and
    RAIL's pipeline (run by ceci) scores the bundle as `zray evaluate` does."""
    copy, done = quickstart
    assert done.returncode == 0, "the quickstart failed; see the test above"
    assert (copy / "best" / "bundle.json").is_file(), "the walk-through (which exports best/) failed; see above"
    lines = commands(code_block("With RAIL and qp"))
    assert lines[0] == "source .venv/bin/activate", lines[0]
    # The extra is installed here by `pip install -e ".[test]"`, which includes it: check it, don't reinstall.
    assert lines[1] == 'pip install -e ".[rail]"', lines[1]
    import qp
    import rail.core.stage  # noqa: F401

    env_path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    outputs = []
    for line in lines[2:]:
        argv = shlex.split(line)
        if argv[0] == "zray":
            argv = [str(ZRAY), *argv[1:]]
        else:
            assert argv[0] == "python", line
            argv = [sys.executable, *argv[1:]]
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_ADDRESS")}
        result = subprocess.run(argv, cwd=copy, env={**env, "PATH": env_path, "TF_CPP_MIN_LOG_LEVEL": "2"},
                                capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, f"{line}\n{(result.stdout + result.stderr)[-3000:]}"
        outputs.append(result.stdout)
    ens = qp.read(str(copy / "pz.hdf5"))
    assert ens.npdf > 0 and f"{ens.npdf} PDFs; zmedian" in outputs[1]
    rail_figures = dict(re.findall(r"(\w+) (-?[\d.]+)", outputs[2].split("RAIL's evaluation (point estimate zmedian):")[1]))
    report = json.loads((copy / "report" / "metrics.json").read_text())
    assert report["split"] == "test"
    # The walk-through's bundle is evaluated on the same test galaxies: RAIL and zray give one sigma_MAD.
    assert float(rail_figures["point_stats_sigma_mad"]) == pytest.approx(report["overall"]["sigma_mad"], abs=1e-5)
    assert (copy / "rail" / "output_estimate_zray.hdf5").is_file()


def test_readme_survey_images_section_runs(quickstart):
    """The "Your own survey images" block in the same fresh copy: frames rendered, cut into aligned
    shards with the skipped galaxies listed, inspected, and searched by `zray tune`."""
    copy, done = quickstart
    assert done.returncode == 0, "the quickstart failed; see the test above"
    lines = commands(code_block("Your own survey images"))
    assert [shlex.split(line)[1] for line in lines] == ["simulate", "cutouts", "inspect", "tune"], lines
    outputs = run_zray_lines(lines, copy)
    frames = sorted(p.name for p in (copy / "data" / "frames").glob("frame-*.fits"))
    assert len(frames) == 5 * 4, frames  # five bands x 2x2 fields
    manifest = json.loads((copy / "data" / "mine" / "manifest.json").read_text())
    written = sum(manifest["rows"][split] for split in ("train", "val", "test"))
    listed = (copy / "data" / "mine.skipped.csv").read_text().splitlines()
    catalogue = (copy / "data" / "frames" / "catalog.csv").read_text().splitlines()
    # Every catalogue galaxy is either in the shards or listed with its reason.
    assert written + len(listed) - 1 == len(catalogue) - 1 and written > 0.5 * (len(catalogue) - 1)
    assert f"{written}" in outputs[1]
    assert (copy / "runs" / "mine" / "results.csv").is_file()

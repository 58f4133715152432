"""The lines a run shows within a long epoch, from the progress file its rank-0 worker rewrites.

The driver's callback (``zray.search.progress.TrialLines``) reads real files here, on a clock
of the test's (``monotonic``); the trial is a stand-in with the three things Tune's trial gives
it (id, status, name). The whole path, workers to terminal, is run in ``tests/test_train.py``.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time

import pytest

from zray.experiment import progress_file
from zray.search import progress as progress_module
from zray.search.progress import TrialLines
from zray.train.job import FIRST_EVERY, LATER_EVERY, progress_line, progress_record

EVERY = 10.0


def path_exists(path) -> bool:
    return os.path.exists(path)


class Trial:
    RUNNING = "RUNNING"

    def __init__(self, trial_id: str) -> None:
        self.trial_id, self.status, self.last_result, self.config = trial_id, self.RUNNING, {}, {}

    def __str__(self) -> str:
        return f"trial-{self.trial_id}"


RESULT = {"epoch": 1, "loss": 4.1, "val_loss": 4.0, "val_sigma_mad": 0.05, "val_bias": 0.001,
          "val_outlier_fraction": 0.2, "train_images_per_s": 30.0, "lr": 1e-4}


def test_progress_line_says_how_far_the_epoch_is_and_when_its_training_ends():
    line = progress_line(progress_record(1, 2816, 8000, 31.2, 0.0), 30)
    assert line == "epoch 1/30: 2,816 of 8,000 galaxies (35%) at 31 img/s; its training ends in about 3 min"
    # No speed yet (only the first step, which traces the graph, has run): no time either.
    assert progress_line(progress_record(1, 64, 8000, None, 0.0), 30) == "epoch 1/30: 64 of 8,000 galaxies (1%)"
    assert progress_line({**progress_record(1, 64, 8000, None, 0.0), "images_per_s": float("nan")}, 30) == \
        "epoch 1/30: 64 of 8,000 galaxies (1%)"  # a NaN speed is no speed
    assert progress_line(progress_record(2, 8000, 8000, 40.0, 0.0), 30) == \
        "epoch 2/30: 8,000 of 8,000 galaxies (100%) at 40 img/s"


def test_first_epoch_every_few_intervals_later_ones_rarely_estimate_once(tmp_path, monkeypatch, caplog):
    now = [1000.0]
    monkeypatch.setattr(progress_module, "monotonic", lambda: now[0])
    folder = tmp_path / "trials" / ".progress"
    plan = {"trials": 4, "concurrent": 1, "train_rows": 8000, "val_rows": 1000, "simulated_n": 0,
            "data_path": "data/sim"}
    lines = TrialLines("val_sigma_mad", "min", 30, plan=plan, progress_dir=str(folder), progress_every_s=EVERY)
    trial = Trial("a1b2c_00000")
    path = progress_file(str(folder), str(trial))
    folder.mkdir(parents=True)
    with open(path, "w") as f:  # a record of the trial's run before it was resumed: never shown
        json.dump(progress_record(1, 7900, 8000, 30.0, time.time() - 60, steady_s=200.0), f)

    def write(epoch, rows, rate, seconds):
        with open(path, "w") as f:
            json.dump(progress_record(epoch, rows, 8000, rate, time.time() + seconds, steady_s=seconds), f)

    def step(seconds):
        now[0] += seconds
        caplog.clear()
        lines.on_step_begin(0, [trial])
        return [r.getMessage() for r in caplog.records]

    with caplog.at_level(logging.INFO, logger="zray"):
        lines.on_trial_start(0, [trial], trial)
        assert step(FIRST_EVERY * EVERY) == []  # only the record from before the (re)start: no line, no estimate
        lines.on_trial_start(0, [trial], trial)  # as if it had just (re)started: the pacing from here
        write(1, 64, None, 1.0)  # the first step only: no speed, no estimate
        assert step(EVERY) == []  # under FIRST_EVERY intervals since the last line
        write(1, 128, 29.0, 2.0)  # a speed from 2 s of steps: shown, but too short for the estimate
        said = step(FIRST_EVERY * EVERY)
        assert said == ["trial trial-a1b2c_00000 epoch 1/30: 128 of 8,000 galaxies (2%) at 29 img/s; "
                        "its training ends in about 5 min"]
        write(1, 320, 31.0, EVERY)  # measured over a whole interval: the estimate
        said = step(FIRST_EVERY * EVERY)
        assert said[0] == ("trial trial-a1b2c_00000 epoch 1/30: 320 of 8,000 galaxies (4%) at 31 img/s; "
                           "its training ends in about 4 min")
        assert said[1].startswith("estimate: 31 img/s here, so an epoch takes about 4 min") and len(said) == 2
        assert step(FIRST_EVERY * EVERY) == []  # the same record again: nothing new
        write(1, 1280, 32.0, 3 * EVERY)
        assert step(FIRST_EVERY * EVERY)[0].startswith("trial trial-a1b2c_00000 epoch 1/30: 1,280 of 8,000")
        lines.on_trial_result(0, [trial], trial, RESULT)  # epoch 1 ends: its line
        write(2, 960, 32.0, 4 * EVERY)
        assert step(FIRST_EVERY * EVERY) == []  # a later epoch: only every LATER_EVERY intervals
        write(2, 3200, 32.0, 5 * EVERY)
        said = step((LATER_EVERY - FIRST_EVERY) * EVERY)
        assert said == ["trial trial-a1b2c_00000 epoch 2/30: 3,200 of 8,000 galaxies (40%) at 32 img/s; "
                        "its training ends in about 2 min"]  # and no second estimate
        write(2, 3300, 32.0, 6 * EVERY)
        assert step(EVERY / 4) == []  # polled at most every half interval
        trial.status = "TERMINATED"
        lines.on_trial_complete(0, [trial], trial)
    assert not path_exists(path) and folder.is_dir()  # the trial's file gone (the folder, when the search returns)


@pytest.mark.parametrize("text", ["", "{\"epoch\": 1, \"rows\": 3", "[1, 2]", "{\"time\": 1.0}", "\0\0"])
def test_a_progress_file_cut_short_or_of_another_kind_shows_nothing(tmp_path, monkeypatch, caplog, text):
    now = [0.0]
    monkeypatch.setattr(progress_module, "monotonic", lambda: now[0])
    lines = TrialLines("val_sigma_mad", "min", 30, plan=None, progress_dir=str(tmp_path), progress_every_s=EVERY)
    trial = Trial("t_00001")
    lines.on_trial_start(0, [trial], trial)
    (tmp_path / "trial-t_00001.json").write_text(text)
    now[0] += 100 * EVERY
    with caplog.at_level(logging.INFO, logger="zray"):
        lines.on_step_begin(0, [trial])
    assert caplog.records == []


def test_zray_status_shows_how_far_a_running_trials_epoch_has_come(tmp_path):
    """`zray status` in a second terminal, during a long first epoch: the trial has no epoch in its
    result.json yet, but its worker's progress file says how far it is. A finished trial's file is
    not read, and a cut-short one shows nothing."""
    import time

    import yaml
    from click.testing import CliRunner

    from zray import config, search
    from zray.cli import main
    from zray.train.job import PROGRESS_DIR

    (tmp_path / "space.yaml").write_text(yaml.safe_dump({
        "name": "t", "model": "cnn", "data": {"path": str(tmp_path / "data"), "image_size": 32},
        "fixed": {"epochs": 30}, "tune": {"num_samples": 3},
        "search": {"learning_rate": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True}}}))
    space = config.load(tmp_path / "space.yaml")
    experiment = tmp_path / "runs" / "t"
    progress = experiment / search.TRIALS_DIR / PROGRESS_DIR
    progress.mkdir(parents=True)
    (experiment / search.SPACE_FILE).write_text(json.dumps(space.model_dump(mode="json")))
    for counter, results in [("00000", 30), ("00001", 0), ("00002", 0), ("00003", 0), ("00004", 2)]:
        folder = experiment / f"trial-abc-{counter}"
        folder.mkdir()
        (folder / "params.json").write_text(json.dumps({"learning_rate": 0.001}))
        (folder / "result.json").write_text("".join(
            json.dumps({"epoch": e, "val_sigma_mad": 0.02, "val_bias": 0.0, "val_outlier_fraction": 0.01}) + "\n"
            for e in range(1, results + 1)))
    def record(counter, *fields):
        (progress / f"trial-abc-{counter}.json").write_text(json.dumps(progress_record(*fields)))

    record("00000", 30, 100, 8000, 40.0, time.time())  # a complete trial: not read
    record("00001", 1, 2816, 8000, 31.0, time.time() - 5)
    (progress / "trial-abc-00002.json").write_text('{"epoch": 1, "rows"')  # cut short: nothing
    record("00003", 2, 64, 8000, None, time.time() - 3600)  # an hour old: its search may have stopped
    record("00004", 2, 7900, 8000, 40.0, time.time())  # of an epoch it has reported since: not shown
    done = CliRunner().invoke(main, ["status", str(experiment)])
    assert done.exit_code == 0, done.output
    running = [line for line in done.output.splitlines() if line.startswith("running ")]
    assert len(running) == 2, done.output
    assert running[0].startswith("running trial-abc-00001: epoch 1/30: 2,816 of 8,000 galaxies (35%) at 31 img/s; "
                                 "its training ends in about 3 min (")
    assert running[0].endswith(" s ago)")
    assert running[1] == ("running trial-abc-00003: epoch 2/30: 64 of 8,000 galaxies (1%) (60 min ago; nothing "
                          "since: its search may have stopped)")
    assert "trials      5 of 3: 1 complete, 4 unfinished" in done.output


def test_a_search_saved_before_the_progress_lines_resumes_with_its_callback(tmp_path, caplog):
    """Tune restores its callbacks from a search's saved state (pickled): one an earlier zray saved,
    without the progress attributes, still says when trials start and end, and reads no file."""
    import pickle

    lines = TrialLines("val_sigma_mad", "min", 30, plan=None, progress_dir=str(tmp_path), progress_every_s=EVERY)
    for name in ("progress_dir", "every", "polled", "shown", "seen", "reported", "started"):
        delattr(lines, name)  # as TrialLines was pickled before them
    restored = pickle.loads(pickle.dumps(lines))
    trial = Trial("t_00002")
    (tmp_path / "trial-t_00002.json").write_text(json.dumps(progress_record(1, 10, 100, 5.0, 1e12, 100.0)))
    with caplog.at_level(logging.INFO, logger="zray"):
        restored.on_trial_start(0, [trial], trial)
        restored.on_step_begin(0, [trial])
        restored.on_trial_result(0, [trial], trial, RESULT)
        restored.on_trial_complete(0, [trial], trial)
    said = [r.getMessage() for r in caplog.records]
    assert said[0].startswith("trial trial-t_00002 started") and said[1].startswith("epoch 1/30  loss 4.1000")
    assert said[2] == "trial trial-t_00002 ended after 0 epoch(s): best val_sigma_mad 0.0500; stopped early by the scheduler"
    assert len(said) == 3 and (tmp_path / "trial-t_00002.json").exists()


def test_the_progress_folder_goes_when_the_search_returns(tmp_path):
    """What ``zray tune`` and ``zray train`` wrap Tune's fit in: the folder made before, and every
    progress file gone after, even when fit ends by an exception or Ctrl-C (a stopped trial never
    reports its end), so none shows as running."""
    from zray.experiment import progress_folder

    folder = tmp_path / "trials" / ".progress"
    with pytest.raises(KeyboardInterrupt), progress_folder(str(folder)):
        assert folder.is_dir()  # made for the workers, who never make it
        (folder / "trial-a-00000.json").write_text(json.dumps(progress_record(2, 10, 100, 5.0, 1.0)))
        (folder / ".trial-a-00001.json.123.part").write_text("{")
        raise KeyboardInterrupt
    assert not folder.exists() and (tmp_path / "trials").is_dir()
    # A file where the folder goes (not zray's): no folder, no error, and the file left alone.
    folder.write_text("mine")
    with progress_folder(str(folder)):
        assert folder.is_file()
    assert folder.read_text() == "mine"
    with progress_folder(None):  # object-store storage: no progress files
        pass


def test_a_search_shows_each_trials_progress_under_its_name(exported):
    """The search path, end to end (the session's real search of two trials, its workers writing
    their progress every step): lines of progress within the epoch, each under the name of a
    trial of the search; the progress folder gone when the search returned."""
    from zray import search
    from zray.train.job import PROGRESS_DIR

    experiment = exported["experiment"]
    names = {p.name for p in experiment.glob("trial-*")}
    assert len(names) == 2
    shown = {}
    for line in exported["search_lines"]:
        m = re.match(r"^trial (\S+) epoch 1/1: ([\d,]+) of ([\d,]+) galaxies", line)
        if m:
            shown.setdefault(m[1], []).append(line)
            assert 0 < int(m[2].replace(",", "")) <= int(m[3].replace(",", "")), line
    assert shown and set(shown) <= names, exported["search_lines"]
    assert not (experiment / search.TRIALS_DIR / PROGRESS_DIR).exists()

"""The lines a run shows within a long epoch, from the progress file its rank-0 worker rewrites.

The driver's callback (``zray.search.progress.TrialLines``) reads real files here, on a clock
of the test's (``monotonic``); the trial is a stand-in with the three things Tune's trial gives
it (id, status, name). The whole path, workers to terminal, is run in ``tests/test_train.py``.
"""

from __future__ import annotations

import json
import logging

import pytest

from zray.experiment import progress_file
from zray.search import progress as progress_module
from zray.search.progress import TrialLines
from zray.train.job import FIRST_EVERY, LATER_EVERY, progress_line, progress_record

EVERY = 10.0


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
    path = progress_file(str(folder), trial.trial_id)

    def write(epoch, rows, rate, when):
        folder.mkdir(parents=True, exist_ok=True)
        with open(path, "w") as f:
            json.dump(progress_record(epoch, rows, 8000, rate, when), f)

    def step(seconds):
        now[0] += seconds
        caplog.clear()
        lines.on_step_begin(0, [trial])
        return [r.getMessage() for r in caplog.records]

    with caplog.at_level(logging.INFO, logger="zray"):
        lines.on_trial_start(0, [trial], trial)
        assert step(5) == []  # no file yet
        write(1, 64, None, 1.0)  # the first step only: no speed, no estimate
        assert step(EVERY) == []  # 15 s since the start: under FIRST_EVERY intervals
        write(1, 320, 31.0, 2.0)
        said = step(FIRST_EVERY * EVERY)
        assert said[0] == ("trial trial-a1b2c_00000 epoch 1/30: 320 of 8,000 galaxies (4%) at 31 img/s; "
                           "its training ends in about 4 min")
        assert said[1].startswith("estimate: 31 img/s here, so an epoch takes about 4 min") and len(said) == 2
        assert step(FIRST_EVERY * EVERY) == []  # the same record again: nothing new
        write(1, 1280, 32.0, 3.0)
        assert step(FIRST_EVERY * EVERY)[0].startswith("trial trial-a1b2c_00000 epoch 1/30: 1,280 of 8,000")
        lines.on_trial_result(0, [trial], trial, RESULT)  # epoch 1 ends: its line
        write(2, 960, 32.0, 4.0)
        assert step(FIRST_EVERY * EVERY) == []  # a later epoch: only every LATER_EVERY intervals
        write(2, 3200, 32.0, 5.0)
        said = step((LATER_EVERY - FIRST_EVERY) * EVERY)
        assert said == ["trial trial-a1b2c_00000 epoch 2/30: 3,200 of 8,000 galaxies (40%) at 32 img/s; "
                        "its training ends in about 2 min"]  # and no second estimate
        write(2, 3300, 32.0, 6.0)
        assert step(EVERY / 4) == []  # polled at most every half interval
        trial.status = "TERMINATED"
        lines.on_trial_complete(0, [trial], trial)
    assert not folder.exists()  # the trial's file gone, and the folder, once empty


@pytest.mark.parametrize("text", ["", "{\"epoch\": 1, \"rows\": 3", "[1, 2]", "{\"time\": 1.0}", "\0\0"])
def test_a_progress_file_cut_short_or_of_another_kind_shows_nothing(tmp_path, monkeypatch, caplog, text):
    now = [0.0]
    monkeypatch.setattr(progress_module, "monotonic", lambda: now[0])
    lines = TrialLines("val_sigma_mad", "min", 30, plan=None, progress_dir=str(tmp_path), progress_every_s=EVERY)
    trial = Trial("t_00001")
    lines.on_trial_start(0, [trial], trial)
    (tmp_path / "t_00001.json").write_text(text)
    now[0] += 100 * EVERY
    with caplog.at_level(logging.INFO, logger="zray"):
        lines.on_step_begin(0, [trial])
    assert caplog.records == []

"""The lines a search or a training run shows, written in the driver from what its trials report.

Its own module so Ray (imported here at the top) stays out of ``zray.search``'s
import, while the class keeps one importable name for Tune's saved state.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from time import monotonic

from ray.tune import Callback

from zray.console import LOG


class TrialLines(Callback):
    """A Tune callback writing, to the ``zray`` logger:

    - ``epoch 3/15  loss ...`` for every epoch a trial reports;
    - the time estimate, from the first epoch's speed (``steady_images_per_s``),
      once per experiment: with ``estimate_file`` it is left there, and a
      resumed experiment does not repeat it;
    - with ``trial_lines``, ``trial NAME started: PARAMS`` (a trial resumed after Ctrl-C too: its
      epoch lines then go on from its checkpoint's) and ``trial NAME ended after N epochs: best
      METRIC X (how)``; without, ``training started``.
    - with ``progress_dir``, how far a long epoch has come (``epoch 1/30: 2,816 of 8,000 galaxies
      (35%) at 31 img/s; ...``), from the file each trial's rank-0 worker rewrites within an epoch
      (:func:`zray.experiment.progress_file`): a run's first epoch every ``FIRST_EVERY`` progress
      intervals, later ones every ``LATER_EVERY`` (an epoch shorter than that shows only its
      epoch line). The time estimate then comes from the first such file with a speed, within
      the first epoch: an epoch of the Inception network on a laptop's CPU takes minutes.
    """

    def __init__(self, metric: str, mode: str, epochs: int, *, plan: dict | None = None,
                 estimate_file: str | None = None, trial_lines: bool = True, progress_dir: str | None = None,
                 progress_every_s: float | None = None) -> None:
        from zray.train.job import PROGRESS_EVERY_S

        self.metric, self.mode, self.epochs = metric, mode, int(epochs)
        self.plan, self.estimate_file = plan, estimate_file
        self.trial_lines = trial_lines
        self.best: dict[str, float] = {}
        self.estimated = False
        self.progress_dir = progress_dir
        self.every = float(PROGRESS_EVERY_S if progress_every_s is None else progress_every_s)
        self.polled = 0.0
        self.shown: dict[str, float] = {}  # trial id: when its last line was written (monotonic)
        self.seen: dict[str, float] = {}  # trial id: the time of the last progress record read
        self.reported: set[str] = set()  # trials that have reported an epoch since they started
        self.started: dict[str, float] = {}  # trial id: when it (re)started (wall clock, as the records)

    def __setstate__(self, state: dict) -> None:
        """Tune keeps its callbacks in a search's saved state: one saved by a zray before the
        progress lines resumes without them (its trials' workers write no progress file)."""
        from zray.train.job import PROGRESS_EVERY_S

        self.__dict__.update({"progress_dir": None, "every": PROGRESS_EVERY_S, "polled": 0.0, "shown": {},
                              "seen": {}, "reported": set(), "started": {}})
        self.__dict__.update(state)

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        from zray import storage as st

        self.shown[trial.trial_id] = monotonic()
        self.started[trial.trial_id] = time.time()
        self.reported.discard(trial.trial_id)
        waiting = not self.estimated and not (self.estimate_file and st.exists(self.estimate_file))
        also = ", a long one also as it runs," if self.progress_dir else ", the first"
        hint = f"; each epoch is shown when it ends{also} with a time estimate" if waiting else ""
        if not self.trial_lines:
            LOG.info(f"training started{hint}")
            return
        params = ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}"
                           for k, v in sorted((trial.config or {}).items()))
        LOG.info(f"trial {trial} started{': ' + params if params else ''}{hint}")

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        from zray.train.job import epoch_line

        self._estimate(result)
        try:
            LOG.info(epoch_line(result, self.epochs))
        except (KeyError, TypeError, ValueError):  # a report without the epoch's figures
            pass
        self.shown[trial.trial_id] = monotonic()
        self.reported.add(trial.trial_id)
        value = result.get(self.metric)
        if isinstance(value, (int, float)) and math.isfinite(value):
            old = self.best.get(trial.trial_id)
            better = old is None or (value < old if self.mode == "min" else value > old)
            self.best[trial.trial_id] = value if better else old

    def _estimate(self, result: dict) -> None:
        from zray import storage as st
        from zray.train.job import estimate_line

        rate = result.get("steady_images_per_s")
        if self.estimated or not self.plan or not isinstance(rate, (int, float)) or not rate > 0:
            return
        self.estimated = True
        if self.estimate_file and st.exists(self.estimate_file):
            return  # said when this experiment started
        line = estimate_line(self.plan, self.epochs, float(rate))
        LOG.info(line)
        if self.estimate_file:
            st.write_text(self.estimate_file, line + "\n")

    def on_step_begin(self, iteration, trials, **info) -> None:
        """Every half progress interval: the progress of each running trial, when it has more."""
        now = monotonic()
        if not self.progress_dir or now - self.polled < self.every / 2:
            return
        self.polled = now
        for trial in trials:
            if trial.status == trial.RUNNING:
                try:
                    self._progress(trial, now)
                except Exception:  # noqa: BLE001 - a callback's exception would end the whole search
                    pass  # for a line that is only a courtesy: a record of another kind, storage gone

    def _progress(self, trial, now: float) -> None:
        from zray.experiment import progress_file
        from zray.train.job import FIRST_EVERY, LATER_EVERY, progress_line

        key = trial.trial_id
        try:
            with open(progress_file(self.progress_dir, str(trial))) as f:
                record = json.load(f)
        except (OSError, ValueError):  # not there yet
            return
        # New, and written since this trial (re)started: not a run's left over from before a resume.
        if not isinstance(record, dict) or record.get("time") == self.seen.get(key) \
                or not record.get("time", 0) >= self.started.get(key, 0):
            return
        self.seen[key] = record["time"]
        wait = self.every * (LATER_EVERY if key in self.reported else FIRST_EVERY)
        if now - self.shown.get(key, 0.0) >= wait:
            self.shown[key] = now
            line = progress_line(record, self.epochs)
            LOG.info(f"trial {trial} {line}" if self.trial_lines else line)
        # The estimate from a first epoch's speed, once measured over a whole interval (the
        # first step, which traces the graph, is left out of it).
        if record.get("epoch") == 1 and record.get("steady_s", 0) >= self.every:
            self._estimate({"steady_images_per_s": record.get("images_per_s")})

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        epochs = int((trial.last_result or {}).get("epoch", 0) or 0)
        how = "complete" if epochs >= self.epochs else "stopped early by the scheduler"
        self._say(trial, epochs, how)
        self._forget(trial)

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        epochs = int((trial.last_result or {}).get("epoch", 0) or 0)
        self._say(trial, epochs, "failed (see the summary)")
        self._forget(trial)

    def _forget(self, trial) -> None:
        """An ended trial's progress file is removed (the folder goes when the search returns:
        :func:`zray.experiment.progress_folder`)."""
        from zray.experiment import progress_file

        if self.progress_dir:
            with contextlib.suppress(OSError):
                os.remove(progress_file(self.progress_dir, str(trial)))

    def _say(self, trial, epochs: int, how: str) -> None:
        if not self.trial_lines:
            return
        best = self.best.get(trial.trial_id)
        figure = f"best {self.metric} {best:.4f}" if best is not None else f"no {self.metric}"
        LOG.info(f"trial {trial} ended after {epochs} epoch(s): {figure}; {how}")

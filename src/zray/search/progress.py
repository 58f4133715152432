"""The lines a search or a training run shows, written in the driver from what its trials report.

Its own module so Ray (imported here at the top) stays out of ``zray.search``'s
import, while the class keeps one importable name for Tune's saved state.
"""

from __future__ import annotations

import math

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
      Until the time estimate is said, the start adds when the first line comes: an epoch of the
      Inception network on a laptop's CPU takes minutes, with nothing else to show meanwhile.
    """

    def __init__(self, metric: str, mode: str, epochs: int, *, plan: dict | None = None,
                 estimate_file: str | None = None, trial_lines: bool = True) -> None:
        self.metric, self.mode, self.epochs = metric, mode, int(epochs)
        self.plan, self.estimate_file = plan, estimate_file
        self.trial_lines = trial_lines
        self.best: dict[str, float] = {}
        self.estimated = False

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        from zray import storage as st

        waiting = not self.estimated and not (self.estimate_file and st.exists(self.estimate_file))
        hint = "; each epoch is shown when it ends, the first with a time estimate" if waiting else ""
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

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        epochs = int((trial.last_result or {}).get("epoch", 0) or 0)
        how = "complete" if epochs >= self.epochs else "stopped early by the scheduler"
        self._say(trial, epochs, how)

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        epochs = int((trial.last_result or {}).get("epoch", 0) or 0)
        self._say(trial, epochs, "failed (see the summary)")

    def _say(self, trial, epochs: int, how: str) -> None:
        if not self.trial_lines:
            return
        best = self.best.get(trial.trial_id)
        figure = f"best {self.metric} {best:.4f}" if best is not None else f"no {self.metric}"
        LOG.info(f"trial {trial} ended after {epochs} epoch(s): {figure}; {how}")

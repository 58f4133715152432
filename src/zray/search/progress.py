"""One line per finished trial, printed by the search's driver.

Its own module so Ray (imported here at the top) stays out of ``zray.search``'s
import, while the class keeps one importable name for Tune's saved state.
"""

from __future__ import annotations

import math

from ray.tune import Callback

from zray.console import show


class TrialLines(Callback):
    """``zray: trial NAME ended after N epochs: best METRIC X (how it ended)``."""

    def __init__(self, metric: str, mode: str, epochs: int) -> None:
        self.metric, self.mode, self.epochs = metric, mode, int(epochs)
        self.best: dict[str, float] = {}

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        value = result.get(self.metric)
        if isinstance(value, (int, float)) and math.isfinite(value):
            old = self.best.get(trial.trial_id)
            better = old is None or (value < old if self.mode == "min" else value > old)
            self.best[trial.trial_id] = value if better else old

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        epochs = int((trial.last_result or {}).get("epoch", 0) or 0)
        how = "complete" if epochs >= self.epochs else "stopped early by the scheduler"
        self._say(trial, epochs, how)

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        epochs = int((trial.last_result or {}).get("epoch", 0) or 0)
        self._say(trial, epochs, "failed (see the summary)")

    def _say(self, trial, epochs: int, how: str) -> None:
        best = self.best.get(trial.trial_id)
        figure = f"best {self.metric} {best:.4f}" if best is not None else f"no {self.metric}"
        show(f"zray: trial {trial} ended after {epochs} epoch(s): {figure}; {how}")

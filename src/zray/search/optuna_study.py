"""Ray's OptunaSearch, made a faithful record of the search and able to survive a driver restart.

Its own module so Ray (imported here at the top) stays out of ``zray.search``'s
import, while the class keeps one importable name for Tune's saved state.

What Ray's OptunaSearch records differs from what zray reports, and
optuna-dashboard then tells another story than ``zray status``: a trial the
scheduler stopped early is COMPLETE, a trial's value is its last epoch's
metric while zray ranks by the best epoch, and the epoch on which the
scheduler stopped a trial is missing. Here:

- every epoch is an intermediate value at step = epoch;
- a trial's value is its best epoch's metric (what zray ranks by);
- a trial that ended before its last epoch without an error is PRUNED, a
  failed one FAIL, the others COMPLETE;
- user attributes ``zray_trial`` (the trial's folder name), ``zray_best_epoch``
  and ``zray_best_checkpoint`` say where the best model is.
"""

from __future__ import annotations

import math
from pathlib import Path

import optuna
from optuna.trial import TrialState
from ray.tune.search.optuna import OptunaSearch

from zray.search.results import TRIALS_DIR


class ResumableOptunaSearch(OptunaSearch):
    """See the module docstring. ``experiment_dir`` is where the trials' folders are
    (None with an object-store storage: then no checkpoint attribute)."""

    def __init__(self, *args, epochs: int = 0, experiment_dir: str | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self._epochs = int(epochs)
        self._experiment_dir = experiment_dir
        self._history: dict[str, dict[int, float]] = {}

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        self._record(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if trial_id in self._completed_trials or trial_id not in self._ot_trials:
            return
        if result:
            self._record(trial_id, result)
        ot_trial = self._ot_trials[trial_id]
        history = self._history.get(trial_id, {})
        sign = 1.0 if self._mode == "min" else -1.0
        best_epoch = min(history, key=lambda e: sign * history[e]) if history else None
        last_epoch = max(history) if history else 0
        storage, number = self._ot_study._storage, ot_trial._trial_id
        try:
            folder = self._trial_folder(trial_id)
            storage.set_trial_user_attr(number, "zray_trial", folder.name if folder else None)
            storage.set_trial_user_attr(number, "zray_best_epoch", best_epoch)
            storage.set_trial_user_attr(number, "zray_best_checkpoint", self._best_checkpoint(folder))
            if error or best_epoch is None:
                storage.set_trial_state_values(number, TrialState.FAIL)
            elif self._epochs and last_epoch < self._epochs:
                storage.set_trial_state_values(number, TrialState.PRUNED, [history[best_epoch]])
            else:
                storage.set_trial_state_values(number, TrialState.COMPLETE, [history[best_epoch]])
        except optuna.exceptions.UpdateFinishedTrialError:
            pass  # a resumed search re-reporting a trial the study already holds
        self._completed_trials.add(trial_id)

    def _record(self, trial_id: str, result: dict) -> None:
        """Keep the epoch's metric and report it to Optuna once, at step = epoch."""
        if trial_id in self._completed_trials or trial_id not in self._ot_trials:
            return
        value, epoch = result.get(self._metric), result.get("epoch")
        if not isinstance(value, (int, float)) or not math.isfinite(value) or epoch is None:
            return
        seen = self._history.setdefault(trial_id, {})
        if int(epoch) in seen:
            return
        seen[int(epoch)] = float(value)
        try:
            self._ot_trials[trial_id].report(float(value), int(epoch))
        except optuna.exceptions.UpdateFinishedTrialError:
            pass

    def _trial_folder(self, trial_id: str) -> Path | None:
        if not self._experiment_dir:
            return None
        suffix = trial_id.rsplit("_", 1)[-1]
        found = sorted(Path(self._experiment_dir, TRIALS_DIR).glob(f"trial-*-{suffix}"))
        return found[0] if found else None

    def _best_checkpoint(self, folder: Path | None) -> str | None:
        from zray.search.results import best_checkpoint

        return best_checkpoint(folder, self._metric, self._mode) if folder else None

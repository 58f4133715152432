"""Ray's OptunaSearch, made to survive a driver killed at the wrong moment.

Its own module so Ray (imported here at the top) stays out of ``zray.tune``'s
import, while the class keeps one importable name for Tune's saved state.
"""

from __future__ import annotations

import optuna
from ray.tune.search.optuna import OptunaSearch


class ResumableOptunaSearch(OptunaSearch):
    """OptunaSearch that takes a result again for a trial Optuna already finished.

    When the driver dies after Optuna recorded a trial as complete but before
    Tune saved that the trial ended, the resumed search runs the trial again;
    it continues from its last checkpoint, reports its final epoch once more,
    and Ray's OptunaSearch would then crash the search on Optuna's
    UpdateFinishedTrialError. The study already holds that result, so the
    repeat is ignored.
    """

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        try:
            super().on_trial_result(trial_id, result)
        except optuna.exceptions.UpdateFinishedTrialError:
            pass

"""Tune's searcher over an Optuna study that is a faithful record of the search and survives a driver restart.

Its own module so Ray (imported here at the top) stays out of ``zray.search``'s
import, while the class keeps one importable name for Tune's saved state.

Ray's OptunaSearch records another story than ``zray status`` tells: a trial
the scheduler stopped early is COMPLETE, a trial's value is its last epoch's
metric while zray ranks by the best epoch, and the epoch on which the
scheduler stopped a trial is missing. :class:`ResumableOptunaSearch` is a
Tune ``Searcher`` of its own, driving the study through Optuna's
ask-and-tell interface:

- every epoch's metric is an intermediate value at step = epoch, reported once
  (an epoch reported again, as after a resume, changes nothing);
- a trial's value is its best epoch's metric (what zray ranks by);
- a trial that ended before its last epoch without an error is PRUNED, a
  failed one (or one that reported no metric) FAIL, the others COMPLETE.
  Optuna sets a PRUNED trial's value itself, to its last epoch's metric
  (``Study.tell`` takes no value with that state);
- user attributes ``zray_trial`` (the trial's folder name), ``zray_best_epoch``,
  ``zray_best_value`` and ``zray_best_checkpoint`` say where the best model is;
- a completion the study already holds changes nothing.

A two-objective search (``metrics=[first, second]``, ``tune.metrics``) is a
study with both directions. Optuna keeps no intermediate values for it
(``Trial.report`` refuses a multi-objective study), so each epoch's pair is
kept in the user attribute ``zray_epochs`` (``{"epoch": [first, second]}``,
written as each epoch arrives, read back after a restore as intermediate values
are). A trial's best epoch is the one best by the first metric (the one its
checkpoints are ranked by; ties: the earlier epoch), and the trial is told that
epoch's pair of values, so every point of the study's Pareto front is a model
that exists as a checkpoint; ``zray_best_values`` holds the pair. An epoch
counts only when it reported both metrics. A PRUNED trial has no values there
(Optuna takes a pruned trial's value from intermediate values, which a
two-objective study has none of); its best pair is in the attributes.

Surviving a restart: Tune keeps the searcher with its experiment state (the
object itself, as it was built, and :meth:`ResumableOptunaSearch.save`'s JSON
of the progress since: Tune's trial id -> Optuna trial number, each trial's
epochs, which are finished; never a study or a trial) and restores both on
``--resume``. After a restore the study
is loaded again from its storage, and a trial Tune resumes is found again by
its number: ``optuna.trial.Trial(study, trial_id)`` with the trial's id read
from the storage (``get_study_id_from_name`` and
``get_trial_id_from_study_id_trial_number``), once the study says the trial
is still RUNNING. Optuna has no endorsed way to get a live trial by number
in a new process (its documentation discourages calling that constructor
and the storage's methods directly; ``Study.tell`` alone takes a number), so
this is the one place that leans on them. The samplers zray uses (TPE,
random, NSGA-II) do nothing in ``before_trial``, which that constructor calls
(NSGA-II's generation of a trial is a system attribute, set once when asked).
"""

from __future__ import annotations

import json
import math
import numbers
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState
from ray.tune.search import Searcher

from zray.errors import ZrayError
from zray.search.results import TRIALS_DIR, best_checkpoint

__all__ = ["ResumableOptunaSearch", "EPOCHS_ATTR"]

#: User attribute of a two-objective study's trial: each epoch's pair of metrics.
EPOCHS_ATTR = "zray_epochs"


class ResumableOptunaSearch(Searcher):
    """See the module docstring.

    ``space``: parameter name -> Optuna distribution (``tuner.optuna_distributions``).
    ``storage``: where the study lives (an Optuna storage, or its URL).
    ``epochs``: a trial's last epoch (0: unknown, no trial counts as PRUNED).
    ``experiment_dir``: where the trials' folders are (None with an object-store
    storage: then no folder or checkpoint attribute). ``seed``: the sampler's
    seed, for a deterministic sampler again after a restore.
    ``metrics``/``modes``: two of each for a two-objective search (``metric``
    and ``mode`` are then their first, and may be left out).
    """

    def __init__(self, space: dict[str, Any] | None = None, metric: str | None = None,
                 mode: str | None = None, *, sampler: optuna.samplers.BaseSampler | None = None,
                 study_name: str = "optuna", storage: str | optuna.storages.BaseStorage | None = None,
                 epochs: int = 0, experiment_dir: str | None = None, seed: int | None = None,
                 metrics: list[str] | None = None, modes: list[str] | None = None):
        if storage is None:
            raise ValueError("ResumableOptunaSearch needs a storage (an Optuna storage or its URL), "
                             "so the study outlives the driver")
        self._second: tuple[str, str] | None = None  # a two-objective search's second (metric, mode)
        if metrics:
            if len(metrics) != 2 or len(modes or ()) != 2:
                raise ValueError(f"ResumableOptunaSearch takes two metrics and two modes, got {metrics!r}, {modes!r}")
            metric, mode = metric or metrics[0], mode or modes[0]
            if (metric, mode) != (metrics[0], modes[0]):
                raise ValueError(f"metric and mode ({metric}, {mode}) must be the first of metrics and modes")
            self._second = (metrics[1], modes[1])
        super().__init__(metric=metric, mode=mode)
        self._space = dict(space or {})
        self._sampler = sampler or optuna.samplers.TPESampler(seed=seed)
        self._seed = seed  # the sampler's seed (its class takes seed=): see restore()
        self._study_name = study_name
        self._db = optuna.storages.RDBStorage(storage) if isinstance(storage, str) else storage
        self._epochs = int(epochs)
        self._experiment_dir = experiment_dir
        self._numbers: dict[str, int] = {}  # Tune's trial id -> Optuna trial number
        self._history: dict[str, dict[int, float]] = {}  # Tune's trial id -> {epoch: metric}
        self._second_history: dict[str, dict[int, float]] = {}  # the same, of the second metric
        self._finished: set[str] = set()
        self._open()
        if self.metric and self.mode:
            self._open_study()  # the study exists from the start, as optuna.db does

    # -- Tune's Searcher interface -------------------------------------------------

    def set_search_properties(self, metric: str | None, mode: str | None, config: dict, **spec) -> bool:
        """The space, metric and mode come with the constructor; Tune's own are not taken."""
        return False

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        """A new Optuna trial for ``trial_id`` (the same one if asked again): its parameters as plain values."""
        if not self._space:
            raise RuntimeError(f"{type(self).__name__}: no search space (pass space=)")
        if not self.metric or not self.mode:
            raise RuntimeError(f"{type(self).__name__}: no metric or mode (pass metric= and mode=)")
        known = self._live.get(trial_id) or (self._frozen(self._numbers[trial_id])
                                             if trial_id in self._numbers else None)
        if known is None:
            known = self._open_study().ask(fixed_distributions=self._space)
            self._numbers[trial_id] = known.number
            self._live[trial_id] = known
        return {name: _plain(known.params[name]) for name in self._space}

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        self._record(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if result:
            self._record(trial_id, result)
        trial = self._trial(trial_id)
        if trial is None:
            return  # not ours, or already finished in the study: nothing changes
        history = self._history.get(trial_id, {})
        second = self._second_history.get(trial_id, {})
        if self._second:  # an epoch counts with both metrics
            history = {e: v for e, v in history.items() if e in second}
        sign = 1.0 if self.mode == "min" else -1.0
        best_epoch = min(history, key=lambda e: (sign * history[e], e)) if history else None
        folder = self._trial_folder(trial_id)
        try:
            trial.set_user_attr("zray_trial", folder.name if folder else None)
            trial.set_user_attr("zray_best_epoch", best_epoch)
            trial.set_user_attr("zray_best_value", history[best_epoch] if history else None)
            if self._second:
                trial.set_user_attr("zray_best_values", [history[best_epoch], second[best_epoch]] if history
                                    else None)
            trial.set_user_attr("zray_best_checkpoint",
                                best_checkpoint(folder, self.metric, self.mode) if folder else None)
            study = self._open_study()
            if error or best_epoch is None:
                study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
            elif self._epochs and max(history) < self._epochs:
                study.tell(trial, state=TrialState.PRUNED, skip_if_finished=True)
            else:
                told = [history[best_epoch], second[best_epoch]] if self._second else history[best_epoch]
                study.tell(trial, told, state=TrialState.COMPLETE, skip_if_finished=True)
        except optuna.exceptions.UpdateFinishedTrialError:
            pass  # finished meanwhile by someone else: the study keeps what it holds
        self._finish(trial_id)

    def save(self, checkpoint_path: str) -> None:
        """The search's progress as JSON (Tune saves it with its experiment state):
        which Optuna trial each Tune trial is, their epochs, which are finished
        (a two-objective search: the second metric's epochs too, as ``second``)."""
        state = {"numbers": self._numbers, "finished": sorted(self._finished),
                 "history": {t: {str(e): v for e, v in h.items()} for t, h in self._history.items()}}
        if self._second:
            state["second"] = {t: {str(e): v for e, v in h.items()} for t, h in self._second_history.items()}
        with open(checkpoint_path, "w") as f:
            json.dump(state, f)

    def restore(self, checkpoint_path: str) -> None:
        """Continue from :meth:`save`'s file (``zray tune --resume``). The sampler, if
        seeded (``seed``), is seeded again from the seed and the trials asked so far:
        deterministic, and it does not propose the search's first points again."""
        try:
            with open(checkpoint_path) as f:
                state = json.load(f)
            numbers = {str(t): int(n) for t, n in state["numbers"].items()}
            finished = {str(t) for t in state["finished"]}
            history = {str(t): {int(e): _finite(v) for e, v in h.items()} for t, h in state["history"].items()}
            second = ({str(t): {int(e): _finite(v) for e, v in h.items()} for t, h in state["second"].items()}
                      if self._second else {})
        except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError, RecursionError):
            raise ZrayError(f"{checkpoint_path}: unreadable search state (cut short or edited?); expected the "
                            "file zray tune saved (start afresh with --name NEW)") from None
        self._numbers, self._finished, self._history = numbers, finished, history
        self._second_history = second
        if self._seed is not None:
            self._sampler = type(self._sampler)(seed=self._seed + len(self._numbers))
        self._open()

    # -- pickling: plain data only, the study is loaded again from its storage -----

    def __getstate__(self) -> dict[str, Any]:
        return {
            "metric": self.metric, "mode": self.mode, "space": self._space, "sampler": self._sampler,
            "study_name": self._study_name, "storage": self._db, "epochs": self._epochs,
            "experiment_dir": self._experiment_dir, "seed": self._seed, "numbers": dict(self._numbers),
            "history": {k: dict(v) for k, v in self._history.items()}, "finished": set(self._finished),
            "second": self._second, "second_history": {k: dict(v) for k, v in self._second_history.items()},
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        Searcher.__init__(self, metric=state["metric"], mode=state["mode"])
        self._space = state["space"]
        self._sampler = state["sampler"]
        self._study_name = state["study_name"]
        self._db = state["storage"]
        self._epochs = state["epochs"]
        self._experiment_dir = state["experiment_dir"]
        self._seed = state.get("seed")
        self._numbers = state["numbers"]
        self._history = state["history"]
        self._finished = state["finished"]
        self._second = state.get("second")  # absent from a searcher pickled before two objectives
        self._second_history = state.get("second_history", {})
        self._open()

    # -- helpers ---------------------------------------------------------------------

    def _open(self) -> None:
        """Forget the live study and trials (loaded again when needed)."""
        self._study: optuna.Study | None = None
        self._live: dict[str, optuna.trial.Trial] = {}

    def _open_study(self) -> optuna.Study:
        if self._study is None:
            modes = [self.mode] + ([self._second[1]] if self._second else [])
            self._study = optuna.create_study(
                storage=self._db, sampler=self._sampler, pruner=optuna.pruners.NopPruner(),
                study_name=self._study_name, load_if_exists=True,
                directions=["minimize" if mode == "min" else "maximize" for mode in modes],
            )
        return self._study

    def _frozen(self, number: int) -> optuna.trial.FrozenTrial | None:
        return next((t for t in self._open_study().get_trials(deepcopy=False) if t.number == number), None)

    def _trial(self, trial_id: str) -> optuna.trial.Trial | None:
        """The live Optuna trial of a Tune trial, found again by its number after a
        restore; None when the trial is not ours or already finished in the study."""
        if trial_id in self._finished or trial_id not in self._numbers:
            return None
        trial = self._live.get(trial_id)
        if trial is not None:
            return trial
        number = self._numbers[trial_id]
        frozen = self._frozen(number)
        if frozen is None or frozen.state != TrialState.RUNNING:
            self._finished.add(trial_id)
            return None
        # The study holds the epochs reported before the restart: the first value of an epoch stays.
        if self._second:
            pairs = _pairs(frozen.user_attrs.get(EPOCHS_ATTR))
            self._history[trial_id] = {**self._history.get(trial_id, {}), **{e: p[0] for e, p in pairs.items()}}
            self._second_history[trial_id] = {**self._second_history.get(trial_id, {}),
                                              **{e: p[1] for e, p in pairs.items()}}
        else:
            self._history[trial_id] = {**self._history.get(trial_id, {}),
                                       **{int(step): float(v) for step, v in frozen.intermediate_values.items()}}
        study = self._open_study()
        study_id = self._db.get_study_id_from_name(study.study_name)
        trial = optuna.trial.Trial(study, self._db.get_trial_id_from_study_id_trial_number(study_id, number))
        self._live[trial_id] = trial
        return trial

    def _finish(self, trial_id: str) -> None:
        self._finished.add(trial_id)
        self._live.pop(trial_id, None)

    def _record(self, trial_id: str, result: dict) -> None:
        """Keep the epoch's metric and report it to Optuna once, at step = epoch (two
        objectives: the pair, in the trial's ``zray_epochs`` attribute)."""
        value, epoch = result.get(self.metric), result.get("epoch")
        other = result.get(self._second[0]) if self._second else 0.0
        if not _usable(value) or not _usable(other):
            return
        try:
            epoch = int(epoch)
        except (TypeError, ValueError):
            return
        trial = self._trial(trial_id)
        if trial is None or epoch < 0:
            return
        seen = self._history.setdefault(trial_id, {})
        if epoch in seen:
            return
        seen[epoch] = float(value)
        try:
            if self._second:
                pairs = self._second_history.setdefault(trial_id, {})
                pairs[epoch] = float(other)
                trial.set_user_attr(EPOCHS_ATTR, {str(e): [v, pairs[e]] for e, v in sorted(seen.items())
                                                  if e in pairs})
            else:
                trial.report(float(value), epoch)
        except optuna.exceptions.UpdateFinishedTrialError:
            self._finish(trial_id)

    def _trial_folder(self, trial_id: str) -> Path | None:
        if not self._experiment_dir:
            return None
        suffix = trial_id.rsplit("_", 1)[-1]
        found = sorted(Path(self._experiment_dir, TRIALS_DIR).glob(f"trial-*-{suffix}"))
        return found[0] if found else None


def _finite(value: Any) -> float:
    """A saved epoch metric: a finite number, or ValueError (NaN is never a metric)."""
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"not a finite number: {value!r}")
    return number


def _usable(value: Any) -> bool:
    """A reported metric that counts: a finite number (not a bool)."""
    return not isinstance(value, bool) and isinstance(value, numbers.Real) and math.isfinite(value)


def _pairs(stored: Any) -> dict[int, tuple[float, float]]:
    """The ``zray_epochs`` attribute as {epoch: (first, second)}; what is not a finite pair is left out."""
    pairs: dict[int, tuple[float, float]] = {}
    for epoch, pair in (stored.items() if isinstance(stored, dict) else ()):
        try:
            first, second = (_finite(v) for v in pair)
            pairs[int(epoch)] = (first, second)
        except (TypeError, ValueError):
            continue
    return pairs


def _plain(value: Any) -> Any:
    """A parameter value as a plain Python value (no numpy scalar)."""
    return value.item() if hasattr(value, "item") else value

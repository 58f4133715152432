"""Searches that build on earlier ones: a new study seeded with an earlier search's finished trials.

``zray tune FILE --warm-start runs/OLD`` (``search.run(..., warm_start="runs/OLD")``)
copies the finished trials of ``runs/OLD/optuna.db`` into the new
experiment's study before its first trial, through Optuna's public API
(``optuna.trial.create_trial`` with the NEW space's distributions, then
``Study.add_trials``). The sampler then proposes the new points knowing the
earlier ones (TPE models them and counts them among its start-up trials);
Tune never sees them, so none is run again and ``tune.num_samples`` new
trials run.

What is copied, and why:

- COMPLETE trials, with their value(s) (the best epoch's metric);
- PRUNED trials (stopped early by the scheduler), with the value Optuna gave
  them (their last epoch's metric) and their intermediate values: they mark a
  poor region, and Optuna's TPE ranks PRUNED trials by their intermediate
  values, below the complete ones;
- not FAIL trials (no value: they say nothing about the objective) nor
  RUNNING or WAITING ones (never finished).

Each copy keeps the earlier trial's parameters (only those the new search
searches), intermediate values and user attributes (``zray_trial``,
``zray_best_*``, still naming folders in runs/OLD) and gains
``zray_warm_start``: the earlier experiment's folder. Seeding is idempotent: a
study that already holds trials marked from that folder gets nothing more.

Refused before Ray starts, in one sentence naming the earlier folder and what
differs (:func:`check`): a folder that is not a zray experiment (no
``search_space.json`` or ``optuna.db``, no study in it) or is the new
experiment itself; another model type; another objective (``tune.metric``,
``tune.mode``, or any other ``tune`` key besides how many trials run, how
and with what sampler: ``num_samples``, ``max_concurrent``, ``scheduler``,
``sampler``, ``seed``, ``time_budget_s``); other redshift bins (``z_min``,
``z_max``, ``n_bins``) or ``image_size``; a hyperparameter that neither search
searches fixed at another value (``fixed.epochs`` 1 there and 5 here: the
earlier values measured another objective); a new search that searches
nothing (it has no study); no earlier finished trial lying in the new space.
At seeding, a study with another number of objectives (or directions) is
refused likewise.

Skipped, counted and said in one line: an earlier trial that is not a point of
the new space. Each earlier trial is read as all its hyperparameters (its
search's fixed values and defaults, then its parameters); it is copied when
every hyperparameter the new search searches lies in its new distribution (a
choice still offered; a number within low..high, on the step, whole for an
int) and every one it fixes has the value the earlier trial ran with. So a
hyperparameter searched before and fixed now keeps the earlier trials that
ran at the fixed value, and one fixed before and searched now takes the
earlier fixed value.

Warned (a line), not refused: another ``data.path``. The same bins and image
size make the values comparable; zray cannot tell whether the two folders
hold the same galaxies, and a user may well build on a search of a copy.

With ``--resume``: the study being resumed holds its earlier trials already,
so ``--warm-start`` naming the folder it was warm-started from adds nothing,
and naming any other folder is refused. A search that starts again (stopped
before Tune's first save: its study is removed) is seeded afresh.

The fact is kept in ``warm_start.json`` in the experiment folder, written
atomically once the trials are in the study, and ``zray status`` says
"warm-started from OLD: N earlier trials" from it (cheap: the study is not
opened). The earlier trials are not rows of ``results.csv``: they have no
trial folder or checkpoint in the new experiment.

    >>> from zray import config, search
    >>> space = config.load("search_spaces/quickstart.yaml")                      # doctest: +SKIP
    >>> search.run(space, name="more", warm_start="runs/quickstart")              # doctest: +SKIP
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zray.console import LOG
from zray.errors import ZrayError, first_line
from zray.search.results import SPACE_FILE, STUDY_FILE, WARM_START_FILE, _write_json, saved_space

__all__ = ["ATTR", "WarmStart", "check", "seed_study", "read_record"]

# The user attribute that marks a copied trial: the earlier experiment's folder.
ATTR = "zray_warm_start"
# Tune keys that say how many trials run and how they are proposed and stopped: free to change.
_FREE_TUNE_KEYS = ("num_samples", "max_concurrent", "scheduler", "sampler", "seed", "time_budget_s")
_DATA_KEYS = ("z_min", "z_max", "n_bins", "image_size")


@dataclass
class WarmStart:
    """The earlier trials to add to a new study, as Optuna trials of the new space (:func:`check`)."""

    source: Path
    trials: list = field(default_factory=list)  # optuna.trial.FrozenTrial, with ATTR set
    directions: list = field(default_factory=list)  # the earlier study's, as StudyDirection names
    skipped: int = 0  # finished earlier trials outside the new space
    not_copied: int = 0  # FAIL, RUNNING or WAITING earlier trials

    def seed(self, experiment_dir: str | Path, study_name: str) -> int:
        """Add the trials to the study ``study_name`` in ``experiment_dir/optuna.db`` (made by the
        searcher beforehand) and record the fact; return how many were added (0: there already)."""
        import optuna

        experiment_dir = Path(experiment_dir)
        study = _load(experiment_dir / STUDY_FILE, study_name, experiment_dir)
        if study is None:
            raise ZrayError(f"{experiment_dir / STUDY_FILE}: no study {study_name!r} to warm-start; expected "
                            "the study the search creates before its first trial")
        directions = [d.name for d in study.directions]
        if directions != self.directions:
            raise ZrayError(f"{self.source}: its study optimises {_objectives(self.directions)} and this one "
                            f"{_objectives(directions)}; expected the same objectives to build on its trials")
        if any(t.user_attrs.get(ATTR) == str(self.source) for t in study.get_trials(deepcopy=False)):
            return 0  # seeded before (a restart of the same search): the trials are there
        study.add_trials(self.trials)
        states = [t.state for t in self.trials]
        _write_json(experiment_dir / WARM_START_FILE, {
            "source": str(self.source), "trials": len(self.trials),
            "complete": states.count(optuna.trial.TrialState.COMPLETE),
            "pruned": states.count(optuna.trial.TrialState.PRUNED),
            "skipped": self.skipped, "not_copied": self.not_copied,
        })
        LOG.info(f"warm start from {self.source}: {len(self.trials)} earlier trials added to the study"
                 + (f", {self.skipped} skipped (outside this search space)" if self.skipped else "")
                 + (f", {self.not_copied} failed or unfinished not copied" if self.not_copied else ""))
        return len(self.trials)


def check(source: str | Path, space, experiment_dir: str | Path, *, resume: bool = False) -> WarmStart | None:
    """What warm-starting the search ``space`` in ``experiment_dir`` from ``source`` adds, or
    a one-sentence ZrayError saying why it cannot (see the module docstring). Writes nothing.

    ``resume``: the experiment resumes its saved Tune state; then nothing is added
    (None), and ``source`` must be the folder it was warm-started from.
    """
    from zray.search.tuner import optuna_distributions

    source = Path(source).absolute()
    experiment_dir = Path(experiment_dir).absolute()
    if source.resolve() == experiment_dir.resolve():
        raise ZrayError(f"{source}: is the experiment being started; expected an earlier experiment "
                        "to warm-start from (runs/OLD)")
    if resume:
        _check_resumed(source, experiment_dir, space.name)
        return None
    if not space.search:
        raise ZrayError(f"{source}: cannot warm-start a search that searches nothing (no search section, "
                        "so no Optuna study); expected at least one searched hyperparameter")
    space_file, study_file = source / SPACE_FILE, source / STUDY_FILE
    for needed in (space_file, study_file):
        if not needed.is_file():
            raise ZrayError(f"{source}: not a zray experiment ({needed.name} missing); expected the folder "
                            "of an earlier search, runs/NAME")
    old = saved_space(source)
    _check_same_objective(source, old, space)
    study = _load(study_file, old.name, source)
    if study is None:
        raise ZrayError(f"{study_file}: holds no Optuna study; expected the study of the search "
                        "that ran there")
    return _plan(source, old, space, study, optuna_distributions(space))


def seed_study(experiment_dir: str | Path, source: str | Path, space, study_name: str | None = None) -> int:
    """Check, then seed the study ``study_name`` (default: the space's name) in
    ``experiment_dir/optuna.db`` with ``source``'s finished trials; return how many were added."""
    plan = check(source, space, experiment_dir)
    return plan.seed(experiment_dir, study_name or space.name)


def read_record(experiment_dir: str | Path) -> dict[str, Any] | None:
    """``warm_start.json`` of an experiment (what ``zray status`` says), or None
    (not warm-started, or the file unreadable: it only informs)."""
    path = Path(experiment_dir) / WARM_START_FILE
    try:
        record = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):
        return None
    return record if isinstance(record, dict) and isinstance(record.get("source"), str) else None


# -- helpers ---------------------------------------------------------------------


def _check_same_objective(source: Path, old, new) -> None:
    """Refuse an earlier search whose values measured another thing than this one's will."""
    if old.model != new.model:
        raise ZrayError(f"{source}: searched model {old.model!r} and this search {new.model!r}; "
                        "expected the same model type to build on its trials")
    old_tune, new_tune = old.tune.model_dump(mode="json"), new.tune.model_dump(mode="json")
    for key in sorted(set(old_tune) | set(new_tune)):
        if key not in _FREE_TUNE_KEYS and old_tune.get(key) != new_tune.get(key):
            raise ZrayError(f"{source}: tune.{key} is {old_tune.get(key)!r} there and {new_tune.get(key)!r} "
                            "here; expected the same objective to build on its trials")
    for key in _DATA_KEYS:
        if getattr(old.data, key) != getattr(new.data, key):
            raise ZrayError(f"{source}: data.{key} is {getattr(old.data, key)!r} there and "
                            f"{getattr(new.data, key)!r} here; expected the same redshift bins and image size "
                            "to build on its trials")
    old_hp, new_hp = old.default_hyperparameters(), new.default_hyperparameters()
    for key in sorted(set(old_hp) | set(new_hp)):
        if key not in old.search and key not in new.search and old_hp.get(key) != new_hp.get(key):
            raise ZrayError(f"{source}: fixed.{key} is {old_hp.get(key)!r} there and {new_hp.get(key)!r} here, "
                            "so its trials measured another objective; expected the same fixed values "
                            f"(or search {key} in both)")
    if Path(old.data.path).absolute() != Path(new.data.path).absolute():
        LOG.warning(f"warm start from {source}: its data were {old.data.path}, this search's are "
                    f"{new.data.path}; their values count as if measured on the same galaxies")


def _plan(source: Path, old, new, study, distributions: dict[str, Any]) -> WarmStart:
    """The earlier study's finished trials that are points of the new space, as new Optuna trials."""
    import optuna
    from optuna.trial import TrialState

    old_hp, new_hp = old.default_hyperparameters(), new.default_hyperparameters()
    plan = WarmStart(source=source, directions=[d.name for d in study.directions])
    for trial in study.get_trials(deepcopy=False):
        if trial.state not in (TrialState.COMPLETE, TrialState.PRUNED):
            plan.not_copied += 1
            continue
        ran = {**old_hp, **trial.params}  # every hyperparameter the trial ran with
        params = {key: ran.get(key) for key in distributions}
        inside = all(_contains(dist, params[key]) for key, dist in distributions.items()) and all(
            ran.get(key) == new_hp.get(key) for key in ran if key not in distributions)
        values = trial.values
        if not inside or (trial.state == TrialState.COMPLETE and not values):
            plan.skipped += 1
            continue
        try:
            plan.trials.append(optuna.trial.create_trial(
                state=trial.state, values=values, params=params, distributions=distributions,
                intermediate_values=dict(trial.intermediate_values),
                user_attrs={**trial.user_attrs, ATTR: str(source)},
            ))
        except ValueError:  # Optuna's own check of a value against its distribution
            plan.skipped += 1
    if not plan.trials and not plan.skipped:
        raise ZrayError(f"{source}: its study holds no complete or pruned trial ({plan.not_copied} failed or "
                        "never finished); expected an earlier search with finished trials")
    if not plan.trials:
        raise ZrayError(f"{source}: none of its {plan.skipped} finished trials lies in this search space "
                        f"({plan.not_copied} others failed or never finished); expected earlier trials at "
                        "values this search can propose")
    return plan


def _contains(dist, value: Any) -> bool:
    """Whether ``value`` is a point of the Optuna distribution ``dist`` (public attributes only)."""
    import optuna.distributions as od

    if isinstance(dist, od.CategoricalDistribution):
        try:
            dist.to_internal_repr(value)  # the choice's index; ValueError for a choice not offered
        except ValueError:
            return False
        return True
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return False
    if isinstance(dist, od.IntDistribution) and value != int(value):
        return False
    if not dist.low <= value <= dist.high:
        return False
    step = getattr(dist, "step", None)
    if step:
        k = (value - dist.low) / step
        return abs(k - round(k)) <= 1e-8 * max(1.0, abs(k))
    return True


def _load(study_file: Path, study_name: str, folder: Path):
    """The study ``study_name`` (or the only one) in ``study_file``, or None when it holds none."""
    import optuna

    try:
        storage = optuna.storages.RDBStorage(f"sqlite:///{study_file.resolve()}")
        names = optuna.get_all_study_names(storage)
    except Exception as exc:  # SQLAlchemy and Optuna raise several types for a file that is no study
        raise ZrayError(f"{study_file}: unreadable as an Optuna study ({first_line(exc)}); expected the "
                        f"optuna.db zray wrote in {folder}") from None
    if study_name not in names:
        if len(names) != 1:
            return None
        study_name = names[0]
    return optuna.load_study(study_name=study_name, storage=storage)


def _check_resumed(source: Path, experiment_dir: Path, study_name: str) -> None:
    """A resumed study keeps what it holds: --warm-start may only name the folder it came from."""
    study_file = experiment_dir / STUDY_FILE
    study = _load(study_file, study_name, experiment_dir) if study_file.is_file() else None
    sources = {t.user_attrs.get(ATTR) for t in study.get_trials(deepcopy=False)} - {None} if study else set()
    if str(source) not in sources:
        was = f"from {', '.join(sorted(sources))}" if sources else "without a warm start"
        raise ZrayError(f"{source}: {experiment_dir} was started {was} and a resumed search keeps the trials "
                        "its study holds; expected --resume without --warm-start")


def _objectives(directions: list[str]) -> str:
    return f"{len(directions)} objective{'s' if len(directions) != 1 else ''} ({', '.join(directions).lower()})"

"""Putting an experiment folder right after its driver was killed.

Tune saves its experiment state every few seconds and Optuna writes each
trial as it is asked for; a driver killed between the two leaves traces that
``--resume`` must not count: trial folders Tune never saved, Optuna trials
left RUNNING, or (stopped before the first save) a half-started search.
"""

from __future__ import annotations

from pathlib import Path

from zray.search.results import LOST_DIR, STUDY_FILE, TRIALS_DIR, WARM_START_FILE

__all__ = ["clear_unsaved", "set_aside_lost_trials", "close_orphans"]


def clear_unsaved(place) -> None:
    """Remove what a search stopped before its first Tune save left behind at
    ``place`` (a :class:`zray.storage.Place`): trial folders and the Optuna study
    (left there, they would be counted as trials), with the record of its warm start."""
    from pyarrow import fs

    filesystem, inner = place.filesystem()
    for info in filesystem.get_file_info(fs.FileSelector(inner, allow_not_found=True)):
        name = info.path.rstrip("/").rsplit("/", 1)[-1]
        if info.type == fs.FileType.Directory and (name.startswith("trial-") or name == TRIALS_DIR):
            filesystem.delete_dir(info.path)
    (place.local / STUDY_FILE).unlink(missing_ok=True)
    (place.local / WARM_START_FILE).unlink(missing_ok=True)


def set_aside_lost_trials(experiment_dir: Path, known: set[str]) -> list[str]:
    """Move trial folders that are not among Tune's trials into ``lost/``; return their names.

    A driver killed after a trial started but before Tune's next save leaves
    that trial's folder behind while the restored Tune (and its restored
    searcher) never heard of it and proposes the point again under a new
    trial. Left in place the folder would count as a trial twice; moved aside
    it stays for inspection.
    """
    lost: list[str] = []
    if not known:
        return lost  # nothing to compare against: move nothing
    for folder in sorted(Path(experiment_dir).glob("trial-*")):
        if folder.name in known or not folder.is_dir():
            continue
        target = Path(experiment_dir) / LOST_DIR
        target.mkdir(exist_ok=True)
        folder.rename(target / folder.name)
        run = Path(experiment_dir) / TRIALS_DIR / folder.name
        if run.is_dir():
            (target / TRIALS_DIR).mkdir(exist_ok=True)
            run.rename(target / TRIALS_DIR / folder.name)
        lost.append(folder.name)
    return lost


def close_orphans(experiment_dir: Path, study_name: str) -> int:
    """Mark Optuna trials still RUNNING after the search as FAIL; return how many.

    Tune re-runs its own trials after ``--resume`` under their original Optuna
    numbers, so whatever is still RUNNING once ``fit`` returns was never run
    to the end and must not count as a trial.
    """
    import optuna

    path = Path(experiment_dir) / STUDY_FILE
    if not path.exists():
        return 0
    storage = optuna.storages.RDBStorage(f"sqlite:///{path}")
    try:
        study = optuna.load_study(study_name=study_name, storage=storage)
    except KeyError:
        return 0
    running = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
    for trial in running:
        study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
    return len(running)

"""The hyperparameter search: Ray Tune + Optuna over a search-space file.

- :mod:`zray.search.tuner`: the Ray part (:func:`run`, trials, scheduler, sampler).
- :mod:`zray.search.results`: reading a search's folder (what ``zray status``
  shows; writes nothing) and writing ``results.csv``/``best.json`` at the end.
- :mod:`zray.search.recovery`: putting the folder right after a killed driver.
- :mod:`zray.search.warm_start`: seeding a new study with an earlier search's
  finished trials (``zray tune --warm-start runs/OLD``).
- :mod:`zray.search.optuna_study`, :mod:`zray.search.progress`: the Optuna
  searcher and the per-trial line, as Tune's saved state names them.

Importing ``zray.search`` loads neither Ray nor Optuna.

    >>> from zray import config, search
    >>> space = config.load("search_spaces/quickstart.yaml")     # doctest: +SKIP
    >>> summary = search.run(space)                              # doctest: +SKIP
    >>> search.summarize("runs/quickstart")["best"]["trial"]     # doctest: +SKIP
    'trial-47dce19109-00001'
"""

from zray.search.recovery import close_orphans, set_aside_lost_trials
from zray.search.results import (
    BEST_FILE,
    LOST_DIR,
    RESULTS_FILE,
    SPACE_FILE,
    STUDY_FILE,
    TRIALS_DIR,
    WARM_START_FILE,
    best_checkpoint,
    format_summary,
    left_to_do,
    summarize,
    trial_records,
    write_results,
)
from zray.search.tuner import (
    make_scheduler,
    make_searcher,
    optuna_distributions,
    run,
)

__all__ = [
    "BEST_FILE",
    "LOST_DIR",
    "RESULTS_FILE",
    "SPACE_FILE",
    "STUDY_FILE",
    "TRIALS_DIR",
    "WARM_START_FILE",
    "best_checkpoint",
    "close_orphans",
    "format_summary",
    "left_to_do",
    "make_scheduler",
    "make_searcher",
    "optuna_distributions",
    "run",
    "set_aside_lost_trials",
    "summarize",
    "trial_records",
    "write_results",
]

"""zray's Ray Train trainer: Ray's ``DataParallelTrainer`` whose runs register
with the search's janitor (:mod:`zray.train.janitor`) instead of starting a
cleaner actor each.

Imports Ray Train: loaded by the process that runs a training (a Tune trial)
and by the run's controller, which runs the callback.
"""

from __future__ import annotations

import logging

import ray
from ray.train.v2._internal.execution.callback import ControllerCallback
from ray.train.v2.api.data_parallel_trainer import DataParallelTrainer

from zray.train.janitor import JANITOR_NAME

__all__ = ["PlacementGroupJanitor", "ZrayTrainer", "swap_cleaner"]

logger = logging.getLogger(__name__)

# How long a controller waits for the janitor to note it (a few ms when all is well).
REGISTER_TIMEOUT_S = 30.0


class PlacementGroupJanitor(ControllerCallback):
    """Ray Train callback, run in the controller as it starts: registers the
    controller with the janitor named ``name``, before it creates any
    placement group, so that all of them are removed if it dies."""

    def __init__(self, name: str = JANITOR_NAME) -> None:
        self._name = name

    def after_controller_start(self, train_run_context) -> None:
        unguarded = "if this run's controller dies, its workers' CPUs stay reserved until the job ends"
        try:
            janitor = ray.get_actor(self._name)
        except ValueError:
            logger.warning("no placement group janitor %r in this Ray job: %s", self._name, unguarded)
            return
        context = ray.get_runtime_context()
        try:
            ray.get(janitor.watch.remote(context.get_actor_id(), context.current_actor), timeout=REGISTER_TIMEOUT_S)
        except Exception as exc:  # noqa: BLE001 - the run itself can go on
            logger.warning("the placement group janitor did not answer (%s): %s", exc, unguarded)


def swap_cleaner(callbacks: list) -> list:
    """Ray Train's default callbacks with its per-run cleaner replaced by a
    :class:`PlacementGroupJanitor`. Unchanged if this Ray has no such cleaner
    (a later version may name it differently): then its own guard stays."""
    try:
        from ray.train.v2._internal.callbacks.placement_group_callback import PlacementGroupCleanerCallback
    except ImportError:
        return callbacks
    return [PlacementGroupJanitor() if isinstance(c, PlacementGroupCleanerCallback) else c for c in callbacks]


class ZrayTrainer(DataParallelTrainer):
    """``DataParallelTrainer`` whose runs are guarded by the search's janitor."""

    def _create_default_callbacks(self):
        return swap_cleaner(super()._create_default_callbacks())

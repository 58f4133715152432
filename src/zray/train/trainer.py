"""zray's Ray Train trainer: Ray's ``DataParallelTrainer`` whose runs report their
placement groups to the search's janitor (:mod:`zray.train.janitor`) instead of
starting a cleaner actor each.

Imports Ray Train: loaded by the process that runs a training (a Tune trial)
and by the run's controller, which runs the callback.
"""

from __future__ import annotations

import logging

import ray
from ray.train.v2._internal.execution.callback import WorkerGroupCallback
from ray.train.v2.api.data_parallel_trainer import DataParallelTrainer

from zray.train.janitor import JANITOR_NAME

__all__ = ["PlacementGroupJanitor", "ZrayTrainer", "swap_cleaner"]

logger = logging.getLogger(__name__)


class PlacementGroupJanitor(WorkerGroupCallback):
    """Ray Train callback, run in the controller: each worker group it starts
    (the first, and any retry) is reported to the janitor named ``name``."""

    def __init__(self, name: str = JANITOR_NAME) -> None:
        self._name = name
        self._janitor = None

    def after_worker_group_start(self, worker_group) -> None:
        group = worker_group.get_worker_group_state().placement_group_handle.placement_group
        if self._janitor is None:
            try:
                self._janitor = ray.get_actor(self._name)
            except ValueError:
                logger.warning("no placement group janitor %r in this Ray job: if this run's controller "
                               "dies, its workers' CPUs stay reserved until the job ends", self._name)
                return
        context = ray.get_runtime_context()
        # Not awaited: the training starts without waiting for the janitor.
        self._janitor.watch.remote(context.get_actor_id(), context.current_actor, group)


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

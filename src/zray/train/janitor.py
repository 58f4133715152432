"""Removes the placement group of a Ray Train run whose controller died without doing so.

A Ray Train run reserves its workers' CPUs in a placement group that its
controller creates. A placement group outlives the actor that created it (it
belongs to the whole Ray job), so when Tune stops a trial, or a controller
crashes, its group would hold its CPUs until the search ends: on a small
machine the next trials would wait for them forever.

Ray Train guards each run with a detached cleaner actor of its own, started
with the controller. That actor imports all of Ray Train and Ray Data (1.5-1.8 s
of CPU) just while the run's workers start: on 2 cores it delayed every
trial's first epoch by 0.8 s. A search of zray instead starts one
:class:`Janitor` (:func:`start`), and every run's controller tells it of each
worker group it starts (:class:`zray.train.trainer.PlacementGroupJanitor`);
the janitor asks each controller whether it is alive once a second, through
its actor handle, and removes the groups of those that are gone.

The janitor belongs to the search's Ray job, as do the placement groups: if
the driver dies, Ray removes the groups with the job. What neither this
janitor nor Ray's cleaner knows of: a group that a dying controller creates
after its last worker group started (a retry cut short).

This module imports Ray only: it is all the janitor's process loads.
"""

from __future__ import annotations

import logging
import threading
import time

import ray
from ray.exceptions import ActorDiedError

__all__ = ["JANITOR_NAME", "Janitor", "start"]

logger = logging.getLogger(__name__)

# The janitor's actor name in the search's Ray job (each job has its own namespace).
JANITOR_NAME = "zray-placement-janitor"
# How often the janitor asks whether each controller is still alive, and how
# long an answer may take before it asks again (a busy controller is alive).
CHECK_INTERVAL_S = 1.0
ANSWER_TIMEOUT_S = 10.0


class Janitor:
    """Actor: watches the controllers of a search's runs; removes a gone one's placement groups."""

    def __init__(self) -> None:
        self._runs: dict[str, tuple] = {}  # controller actor id -> (controller handle, [placement groups])
        self._lock = threading.Lock()
        threading.Thread(target=self._watch, name="zray-janitor", daemon=True).start()

    def watch(self, controller_id: str, controller, placement_group) -> None:
        """A run's controller started a worker group in ``placement_group``."""
        with self._lock:
            _, groups = self._runs.setdefault(controller_id, (controller, []))
            groups.append(placement_group)

    def watched(self) -> int:
        """How many controllers are watched now."""
        with self._lock:
            return len(self._runs)

    def _watch(self) -> None:
        while True:
            time.sleep(CHECK_INTERVAL_S)
            try:
                self._check()
            except Exception:  # noqa: BLE001 - keep guarding the other runs
                logger.exception("placement group janitor: check failed")

    def _check(self) -> None:
        with self._lock:
            runs = list(self._runs.items())
        if not runs:
            return
        pings = {controller.__ray_ready__.remote(): key for key, (controller, _) in runs}
        ready, _ = ray.wait(list(pings), num_returns=len(pings), timeout=ANSWER_TIMEOUT_S)
        for ref in ready:
            try:
                ray.get(ref)
            except ActorDiedError:  # not ActorUnavailableError: that one may come back
                key = pings[ref]
                with self._lock:
                    _, groups = self._runs.pop(key)
                _remove(groups)
            except Exception as exc:  # noqa: BLE001 - unreachable for now: ask again next time
                logger.info("placement group janitor: controller %s did not answer (%s)", pings[ref], exc)


def _remove(groups) -> None:
    from ray.util.placement_group import placement_group_table, remove_placement_group

    for group in groups:
        try:
            if placement_group_table(group).get("state", "REMOVED") != "REMOVED":
                remove_placement_group(group)
                logger.info("removed placement group %s of a Ray Train run whose controller is gone",
                            group.id.hex())
        except Exception as exc:  # noqa: BLE001 - nothing else would remove it: say so and go on
            logger.warning("could not remove placement group %s: %s", group.id.hex(), exc)


_started: dict[str, object] = {}  # name -> handle: a janitor lives while its handle does


def start(name: str = JANITOR_NAME):
    """Start the job's janitor ``name`` (or find it: one per Ray job); its handle.

    The handle is also kept here, so the janitor lives as long as this process
    (the driver) does: a run that Tune stopped at the end of the search still
    has its group removed once its controller is gone.
    """
    handle = ray.remote(num_cpus=0, max_restarts=-1)(Janitor).options(name=name, get_if_exists=True).remote()
    _started[name] = handle
    return handle

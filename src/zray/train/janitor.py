"""Removes the placement groups of a Ray Train run whose controller died without doing so.

A Ray Train run reserves its workers' CPUs in a placement group that its
controller creates. A placement group outlives the actor that created it (it
belongs to the whole Ray job), so when Tune stops a trial, or a controller
crashes, its group would hold its CPUs until the search ends: on a small
machine the next trials would wait for them forever.

Ray Train guards each run with a detached cleaner actor of its own, started
with the controller. That actor imports all of Ray Train and Ray Data (1.5-1.8 s
of CPU) just while the run's workers start: on 2 cores it delayed every
trial's first epoch by 0.8 s. A search of zray instead starts one
:class:`Janitor` (:func:`start`), and every run's controller registers with it
as it starts, before it creates any group
(:class:`zray.train.trainer.PlacementGroupJanitor`). The janitor asks each
controller whether it is alive once a second, through its actor handle; once
one is gone, it removes every placement group that controller created (the
GCS records each group's creator), and looks again for GONE_SWEEP_S more: a
controller that Tune stops may notice its workers dying, retry, and create
one more group while its process exits (seen at the end of trials; Ray's own
cleaner, which is told of each group only once its workers have started,
misses that one).

The janitor belongs to the search's Ray job, as do the placement groups: if
the driver dies, Ray removes the groups with the job.

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
# How long after a controller is found gone its groups are still looked for.
GONE_SWEEP_S = 10.0


class Janitor:
    """Actor: watches the controllers of a search's runs; removes a gone one's placement groups."""

    def __init__(self) -> None:
        self._controllers: dict[str, object] = {}  # actor id -> handle, of the controllers alive
        self._gone: dict[str, float] = {}  # actor id -> until when its groups are still looked for
        self._lock = threading.Lock()
        threading.Thread(target=self._watch, name="zray-janitor", daemon=True).start()

    def watch(self, controller_id: str, controller) -> None:
        """A run's controller (actor id in hex, and its handle) has started."""
        with self._lock:
            self._controllers[controller_id] = controller

    def watched(self) -> int:
        """How many controllers are watched now (alive when last asked)."""
        with self._lock:
            return len(self._controllers)

    def _watch(self) -> None:
        while True:
            time.sleep(CHECK_INTERVAL_S)
            try:
                self._check()
            except Exception:  # noqa: BLE001 - keep guarding the other runs
                logger.exception("placement group janitor: check failed")

    def _check(self) -> None:
        with self._lock:
            controllers = list(self._controllers.items())
        if controllers:
            pings = {handle.__ray_ready__.remote(): key for key, handle in controllers}
            ready, _ = ray.wait(list(pings), num_returns=len(pings), timeout=ANSWER_TIMEOUT_S)
            for ref in ready:
                try:
                    ray.get(ref)
                except ActorDiedError:  # not ActorUnavailableError: that one may come back
                    with self._lock:
                        self._controllers.pop(pings[ref], None)
                        self._gone[pings[ref]] = time.monotonic() + GONE_SWEEP_S
                except Exception as exc:  # noqa: BLE001 - unreachable for now: ask again next time
                    logger.info("placement group janitor: controller %s did not answer (%s)", pings[ref], exc)
        if self._gone:
            _remove(_groups_created_by(set(self._gone)))
            now = time.monotonic()
            self._gone = {key: until for key, until in self._gone.items() if until > now}


def _groups_created_by(actor_ids: set[str]) -> list:
    """The placement groups, not removed, that the actors ``actor_ids`` (hex) created."""
    from ray._private.state import state
    from ray._raylet import PlacementGroupID
    from ray.core.generated.gcs_pb2 import PlacementGroupTableData
    from ray.util.placement_group import PlacementGroup

    groups = []
    for raw in state._connect_and_get_accessor().get_placement_group_table():
        data = PlacementGroupTableData.FromString(raw)
        if data.state != PlacementGroupTableData.REMOVED and data.creator_actor_id.hex() in actor_ids:
            groups.append(PlacementGroup(PlacementGroupID(data.placement_group_id)))
    return groups


def _remove(groups) -> None:
    from ray.util.placement_group import remove_placement_group

    for group in groups:
        try:
            remove_placement_group(group)
            logger.info("removed placement group %s of a Ray Train run whose controller is gone",
                        group.id.hex())
        except Exception as exc:  # noqa: BLE001 - nothing else would remove it: say so and go on
            logger.warning("could not remove placement group %s: %s", group.id.hex(), exc)


# Every handle start() made, kept: a janitor lives while a handle that owns it does.
_started: list = []


def start(name: str = JANITOR_NAME):
    """Start the job's janitor ``name`` (or find it: one per Ray job); its handle.

    The handles are also kept here, so the janitor lives as long as this
    process (the driver) does: a run that Tune stopped at the end of the search
    still has its group removed once its controller is gone, and the next
    search in the same process (a notebook, the tests) finds the same janitor.
    None is ever dropped: the handle that ``get_if_exists`` returns for a
    running actor does not own it, and replacing the first (owning) handle
    with it once killed the janitor as the second search began.
    """
    handle = ray.remote(num_cpus=0, max_restarts=-1)(Janitor).options(name=name, get_if_exists=True).remote()
    _started.append(handle)
    return handle

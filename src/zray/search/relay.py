"""One actor beside a search's trials: it carries each Ray Train run's reports to
its Tune trial, and frees the reservation of a run whose trial was stopped.

A trial (:func:`zray.search.tuner.trial_function`) runs a whole Ray Train run
inside Tune's trial process. Two things cross between the run's controller
and that process:

- **Reports.** The controller hears each epoch's report from the workers;
  the trial hands it to Tune (``tune.report``), which decides whether the
  trial goes on. :class:`Reports` (a callback in the controller) puts each
  one in the relay; :func:`forwarding` (a thread in the trial) takes them out
  and reports them to Tune, in order.
- **Reservations.** The run's workers live in a placement group that its
  controller created and removes at the end. When the scheduler stops a
  trial, Tune ends the trial's process, the controller dies with it, and the
  group would hold its CPUs until the search ends: the next trial's workers
  could then never start. :class:`Reservations` (in the controller) tells the
  relay about the group; the relay removes it once the controller is gone.

Ray has its own parts for both (``TuneReportCallback`` with a queue actor,
and a placement-group cleaner actor per run), but each is a new Python
process per trial: about 0.8 s of every trial's start-up on 2 cores. The
relay is one process for the whole search.
"""

from __future__ import annotations

import threading
import time
import uuid
from contextlib import contextmanager

import ray
from ray.train.v2._internal.execution.callback import ControllerCallback, WorkerGroupCallback
from ray.train.v2.api.callback import UserCallback

__all__ = ["start_relay", "find_relay", "run_callbacks", "forwarding", "Relay", "Reports", "Reservations"]

# How long a trial's reader waits in the relay for the next report before it
# asks again; how often the relay looks whether a run's controller is gone.
TAKE_WAIT_S = 1.0
WATCH_EVERY_S = 1.0
# Marks the end of a trial's reports (put by the trial itself after its run).
_END = "__zray_end_of_reports__"


class Relay:
    """The search's relay actor (threaded: a trial waiting in :meth:`take`
    does not hold up the controllers' :meth:`put`)."""

    def __init__(self) -> None:
        from zray.runtime import pin_address

        pin_address()  # Ray's state API below finds this Ray, not another one on the machine
        self._ready = threading.Condition()
        self._boxes: dict[str, list] = {}
        self._groups: dict[str, tuple[str, object]] = {}  # trial -> (controller's actor id, placement group)
        threading.Thread(target=self._watch, name="zray-relay-watch", daemon=True).start()

    def put(self, key: str, item) -> None:
        with self._ready:
            self._boxes.setdefault(key, []).append(item)
            self._ready.notify_all()

    def take(self, key: str, timeout: float) -> list:
        """The reports waiting for ``key`` (after up to ``timeout`` s for one), oldest first."""
        with self._ready:
            self._ready.wait_for(lambda: self._boxes.get(key), timeout=timeout)
            return self._boxes.pop(key, [])

    def hold(self, key: str, controller_id: str, group) -> None:
        """Watch ``group`` (the run's placement group) until it is removed, or
        remove it when its controller is gone. A restarted worker group replaces
        the one before it."""
        with self._ready:
            self._groups[key] = (controller_id, group)

    def watching(self) -> list[str]:
        with self._ready:
            return sorted(self._groups)

    def _watch(self) -> None:
        while True:
            time.sleep(WATCH_EVERY_S)
            with self._ready:
                groups = list(self._groups.items())
            for key, (controller_id, group) in groups:
                try:
                    done = _removed(group) or _free_if_orphaned(controller_id, group)
                except Exception:  # noqa: BLE001 - the state API may be briefly unavailable: look again
                    done = False
                if done:
                    with self._ready:
                        if self._groups.get(key, (None, None))[1] is group:
                            del self._groups[key]


def _removed(group) -> bool:
    from ray.util import placement_group_table

    return placement_group_table(group).get("state") in (None, "REMOVED")


def _free_if_orphaned(controller_id: str, group) -> bool:
    """Remove ``group`` if the controller that created it is dead; True if it did."""
    from ray.util.placement_group import remove_placement_group
    from ray.util.state import get_actor

    state = get_actor(controller_id, timeout=10)
    if state is not None and state.state != "DEAD":
        return False
    remove_placement_group(group)
    return True


def start_relay():
    """Start the relay actor for one search: ``(handle, name)``.

    It takes no CPU. The driver keeps ``handle`` for as long as the search
    runs (the actor ends when no handle is left); trials find the actor by
    ``name`` (:func:`find_relay`), which, unlike a handle, can be kept in Tune's
    saved state and read back by a later driver.
    """
    name = f"zray-relay-{uuid.uuid4().hex[:12]}"
    return ray.remote(num_cpus=0, max_concurrency=64)(Relay).options(name=name).remote(), name


def find_relay(name: str):
    """The handle of the relay started as ``name`` in this Ray job."""
    return ray.get_actor(name)


class Reports(UserCallback):
    """In the run's controller: each report of rank 0, into the relay under ``key``."""

    def __init__(self, relay, key: str) -> None:
        self.relay, self.key = relay, key

    def after_report(self, run_context, metrics, checkpoint) -> None:
        item = dict(metrics[0])
        if checkpoint is not None:
            item["checkpoint_path"] = checkpoint.path
        # Waited for: the item is in the relay before the run can end.
        ray.get(self.relay.put.remote(self.key, item))


class Reservations(ControllerCallback, WorkerGroupCallback):
    """In the run's controller: the worker group's placement group, for the relay to watch."""

    def __init__(self, relay, key: str) -> None:
        self.relay, self.key = relay, key
        self.controller_id = None

    def after_controller_start(self, train_run_context) -> None:
        self.controller_id = ray.get_runtime_context().get_actor_id()

    def after_worker_group_start(self, worker_group) -> None:
        group = worker_group.get_worker_group_state().placement_group_handle.placement_group
        ray.get(self.relay.hold.remote(self.key, self.controller_id, group))


def run_callbacks(relay, key: str) -> list:
    """The Ray Train callbacks of a trial's run (for ``make_trainer``)."""
    return [Reports(relay, key), Reservations(relay, key)]


@contextmanager
def forwarding(relay, key: str):
    """While the body runs (the trial's ``trainer.fit()``), report to Tune what the
    run's controller put in the relay under ``key``; after it, the rest of them.

    Tune's ``report`` returns when Tune asks for the next result, so the reports
    reach Tune one by one and in order, as from a plain function trainable.
    """
    from ray import tune

    failure: list[BaseException] = []

    def forward() -> None:
        try:
            while True:
                for item in ray.get(relay.take.remote(key, TAKE_WAIT_S)):
                    if item == _END:
                        return
                    tune.report(item)
        except BaseException as exc:  # noqa: BLE001 - raised again in the trial's own thread
            failure.append(exc)

    reader = threading.Thread(target=forward, name="zray-reports", daemon=True)
    reader.start()
    try:
        yield
    finally:
        relay.put.remote(key, _END)
        reader.join()
    if failure:
        raise failure[0]

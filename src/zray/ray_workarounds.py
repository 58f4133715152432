"""Where zray works around a bug of Ray's: one function per bug, each naming it.

``tests/test_ray_workarounds.py`` holds, for each, a test that reproduces the
bug with Ray alone and fails once Ray is fixed; then delete the workaround and
its test. The one exception is a race that no test can bring about on demand
(the placement groups Ray Train leaves, below). Everything else in zray uses
Ray as its documentation shows.

The state API cannot tell which Ray it is in
--------------------------------------------
``ray.util.state`` (``list_actors``, ``get_actor``...) called with no address
inside a Ray process looks for a Ray on the machine instead of using the one
the process belongs to: with two Rays on one machine (a search beside a
``zray predict``, a notebook or a test session) it raises "Found multiple
active Ray instances", or reaches the Ray started last. Ray Train's
placement-group cleaner asks the state API whether a run's controller is
alive, so when Tune stops a trial its workers' CPUs stayed reserved and the
next trial waited for them forever. Upstream: ray-project/ray#25639 (the
error) and the fix proposed in ray-project/ray#54468 ("Default state API
address when in a connected worker"), not in Ray 2.60's ``ray.util.state``.

The workaround: a Ray that zray starts gets a known dashboard port, and its
processes inherit ``RAY_API_SERVER_ADDRESS`` (the variable the state API reads
before looking around) naming that dashboard.

Ray Data hangs when its actors hold every CPU
---------------------------------------------
A Ray Data pipeline whose actor pool asks for all the cluster's CPUs (``zray
predict --workers 2`` on a two-core laptop: two actors of one CPU each) never
finishes: the actors are placed first, and the read tasks that would feed
them wait for a CPU forever. Upstream: ray-project/ray#44687 ("Dataset hangs
if you launch actors on all CPUs"), open in Ray 2.60.

The workaround: :func:`actor_pool_cpus` asks for less per actor, so that the
pool leaves one CPU (half of a one-CPU Ray) to the other tasks. A logical CPU
is only a scheduling token: each actor still runs on as many cores as the
machine gives it.

Ray Train can leave a stopped trial's workers' placement group behind
---------------------------------------------------------------------
When Tune ends a trial (a scheduler stops it, or it ends as its last epoch is
reported), the trial's process goes and with it Ray Train's controller. Ray
Train's placement-group cleaner is then meant to remove the group the run's
workers held; now and then it misses it, and the group stays CREATED, its CPUs
held until the driver's job ends: a later trial of the same search waits for
them, forever on a small machine. Upstream: ray-project/ray#62753 ("Race
condition in PlacementGroupCleaner: newly registered PG orphaned on controller
death"), open in Ray 2.60; zray's search of three trials under ASHA left one
such group in about one run of three.

The workaround: each worker reports the id of the placement group it runs in
(:data:`WORKER_GROUP_KEY`, Ray's ``get_placement_group_id``), and the
driver's :class:`ReturnWorkerGroups` callback removes a trial's groups still
there :data:`GRACE_S` seconds after Tune ended the trial (Ray Train's cleaner
goes first), and at the end of the search. A group a controller made and died
before any worker reported is found by its shape instead: for a while after a
trial ends, a group of the driver's job, made during the search, whose bundles
are the workers', that sweeps about 5 s apart have seen held by no live actor
for :data:`GRACE_S` seconds (Ray's state API). At the end of the search, once
the actors the search started are gone (a dying controller can still make a
group after Tune's ``fit`` has returned), every such group goes, waiting
(PENDING) ones too. When Ray is fixed, keep an empty
``ReturnWorkerGroups`` class here for a while: Tune pickles its callbacks into a
search's saved state, and a resumed search looks the class up by this name.
"""

from __future__ import annotations

import os
import socket
import time
from typing import NamedTuple

from ray.tune import Callback

__all__ = ["GRACE_S", "STATE_API_ENV", "SWEEP_FOR", "WORKER_GROUP_KEY", "ReturnWorkerGroups", "actor_pool_cpus",
           "local_ray_options", "spare_cpus"]

# Read by Ray's state API client before any search for a Ray on the machine.
STATE_API_ENV = "RAY_API_SERVER_ADDRESS"


def local_ray_options() -> dict[str, int]:
    """``ray.init`` options for a local Ray whose processes find their own state API.

    Call just before ``ray.init(address="local", ...)``: it picks a free port
    for the dashboard and sets :data:`STATE_API_ENV` in this process, which the
    Ray started next passes on to every process it starts.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    os.environ[STATE_API_ENV] = f"http://127.0.0.1:{port}"
    return {"dashboard_port": port}


def spare_cpus(total: float) -> float:
    """CPUs an actor pool on a Ray of ``total`` CPUs leaves to the pipeline's other tasks
    (its read tasks): one, or half of a one-CPU Ray."""
    return min(1.0, total / 2)


def actor_pool_cpus(workers: int, cpus_per_actor: float) -> float:
    """CPUs to ask for each of ``workers`` Ray Data actors: ``cpus_per_actor``, or less where
    the pool would otherwise leave the connected Ray's other tasks (its read tasks) no CPU."""
    import ray

    total = float(ray.cluster_resources().get("CPU", 0.0))
    fits = (total - spare_cpus(total)) / max(int(workers), 1)
    return min(float(cpus_per_actor), fits) if fits > 0 else float(cpus_per_actor)


# The metric each epoch's report carries: the hex id of the placement group the run's workers hold.
WORKER_GROUP_KEY = "worker_group"

# Seconds a group Ray should have removed is given before zray removes it: Ray Train's own cleaner
# looks about once a second, and a stopped trial's controller is gone by then.
GRACE_S = 10.0
# For how many grace periods after a trial ended the sweep for unreported groups runs.
SWEEP_FOR = 3


class ReturnWorkerGroups(Callback):
    """A Tune callback in the driver giving back the placement groups Ray Train left behind
    (ray-project/ray#62753), two ways:

    - each group a trial's workers reported (:data:`WORKER_GROUP_KEY`) and Ray has not removed
      ``grace_s`` seconds after Tune ended the trial;
    - with ``worker_bundle`` (one worker's resources, as the search asks for them; None where a
      trial's own bundle looks the same), each group of this driver's job made during the search,
      of that shape, that no live actor has held for ``grace_s`` seconds: a controller's new group
      that it died before any worker reported (a restart as its trial was stopped); at the end of
      the search, once the actors the search started are gone, every such group no actor holds,
      waiting ones too.

    ``removed`` lists the ids it removed, for the search's log and the tests."""

    def __init__(self, grace_s: float = GRACE_S, worker_bundle: dict[str, float] | None = None) -> None:
        self.grace_s = float(grace_s)
        self.groups: dict[str, set[str]] = {}  # trial id -> the groups its workers reported
        self.ended: dict[str, float] = {}  # trial id -> when Tune ended it (time.time())
        self.worker_bundle = {k: float(v) for k, v in (worker_bundle or {}).items() if v} or None
        self.before: set[str] | None = None  # the groups there when the search started: never touched
        self.actors_before: set[str] | None = None  # the job's live actors then: not waited for at the end
        self.seen: _JobState | None = None  # what the last sweep saw of the job (None: the state API did not answer)
        self.orphans: dict[str, float] = {}  # group -> when first seen held by no live actor
        self.swept = 0.0
        self.last_end = 0.0  # when Tune last ended a trial: the sweep runs for SWEEP_FOR grace periods after
        self.removed: list[str] = []

    def setup(self, **info) -> None:
        import ray
        from ray.util.placement_group import placement_group_table

        self.before = set(placement_group_table())
        if self.worker_bundle is not None:
            actors = _live_actors(ray.get_runtime_context().get_job_id())
            self.actors_before = None if actors is None else {a.actor_id for a in actors}

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        group = result.get(WORKER_GROUP_KEY)
        if isinstance(group, str) and group:
            self.groups.setdefault(trial.trial_id, set()).add(group)

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self._end(trial)

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self._end(trial)

    def _end(self, trial) -> None:
        self.last_end = time.time()
        self.ended.setdefault(trial.trial_id, self.last_end)

    def on_step_end(self, iteration, trials, **info) -> None:
        now = time.time()
        self.reclaim(now - self.grace_s)
        # Only while a trial's end is recent (or an orphan is being watched): two state API
        # calls, not every 5 s of a long search.
        recent = now - self.last_end <= SWEEP_FOR * self.grace_s or self.orphans
        if recent and now - self.swept >= self.grace_s / 2:
            self.sweep(now)

    def on_experiment_end(self, trials, **info) -> None:
        """Every trial has ended: the last trials' groups are given back too. Waits while a
        reported group is still there and, with ``worker_bundle``, while an actor the search
        started still lives (a dying controller can still make a group) or a group of the
        workers' shape made during the search is left; at most ``2 * grace_s`` after the last
        trial ended (or an orphan was first seen). Then every such group no live actor holds
        goes, pending ones too, grace or not: no trial needs one now."""
        start, sweeping = time.time(), self.worker_bundle is not None and self.before is not None
        while True:
            now = time.time()
            self.reclaim(now - self.grace_s)
            self.sweep(now, pending=True)
            job = self.seen
            if sweeping and job is None and self.actors_before is None:
                break  # no state API here (it did not answer at the start either): nothing to wait on
            quiet = not self._left() and (not sweeping or (
                job is not None and not job.new_actors and not set(job.groups) - set(self.removed)))
            if quiet:
                return
            if now > max([self.last_end, start, *self.orphans.values()]) + 2 * self.grace_s:
                break
            time.sleep(0.5)
        self.reclaim(time.time())
        self.sweep(time.time(), pending=True, grace_s=0.0)

    def reclaim(self, ended_before: float) -> list[str]:
        """Remove the reported groups, still there, of the trials Tune ended before ``ended_before``."""
        due = []
        for trial_id in [t for t, when in self.ended.items() if when <= ended_before]:
            due += sorted(self.groups.pop(trial_id, set()))
            del self.ended[trial_id]
        return self._remove(due)

    def sweep(self, now: float, pending: bool = False, grace_s: float | None = None) -> list[str]:
        """Remove this job's groups of the workers' shape, made during the search, that no live
        actor has held for ``grace_s`` seconds (seen so by an earlier sweep; default the
        callback's); ``pending``: waiting ones too (only once no trial runs: a new trial's group
        waits so for CPUs). What Ray's state API showed is kept in ``seen``: None (nothing
        swept, the orphans watched so far still watched) where it did not answer in full."""
        self.swept = now
        grace_s = self.grace_s if grace_s is None else grace_s
        self.seen = None
        if self.worker_bundle is None or self.before is None:
            return []
        self.seen = job = _job_state(self.worker_bundle, self.before, self.actors_before, pending)
        if job is None:
            return []
        orphans = {g for g, held in job.groups.items() if not held}
        self.orphans = {g: self.orphans.get(g, now) for g in orphans}
        due = sorted(g for g, since in self.orphans.items() if since <= now - grace_s)
        for group in due:
            del self.orphans[group]
        return self._remove(due)

    def _remove(self, groups: list[str]) -> list[str]:
        from ray.util.placement_group import remove_placement_group

        removed = []
        for group in groups:
            if not _still_there(group):
                continue
            try:
                remove_placement_group(_placement_group(group))
            except Exception:  # noqa: BLE001 - removed meanwhile (by Ray's cleaner), or Ray is going
                continue
            removed.append(group)
        if removed:
            from zray.console import LOG

            LOG.debug(f"gave back placement group(s) {', '.join(removed)}, left by Ray Train after "
                      "their trials ended (ray-project/ray#62753)")
        self.removed.extend(removed)
        return removed

    def _left(self) -> bool:
        return any(_still_there(g) for t in self.ended for g in self.groups.get(t, ()))


def _placement_group(group: str):
    import ray
    from ray.util.placement_group import PlacementGroup

    return PlacementGroup(ray.PlacementGroupID.from_hex(group))


def _still_there(group: str) -> bool:
    """Whether the placement group ``group`` (hex id) is known to Ray and not removed."""
    from ray.util.placement_group import placement_group_table

    try:
        state = placement_group_table(_placement_group(group)).get("state")
    except Exception:  # noqa: BLE001 - Ray is going away: nothing left to give back
        return False
    return state not in (None, "REMOVED")


class _JobState(NamedTuple):
    """What Ray's state API shows of this driver's job: its groups of the workers' shape made
    during the search (each: whether a live actor holds it), and its live actors, not detached,
    started during the search (trials, controllers, workers)."""

    groups: dict[str, bool]
    new_actors: set[str]


def _live_actors(job: str) -> list | None:
    """This job's actors not DEAD, not detached (Ray's state API; None when it does not answer in full)."""
    from ray.util.state import list_actors

    try:  # a list cut short raises (Ray's default): one could miss the actor holding a group
        actors = list_actors(filters=[("job_id", "=", job), ("state", "!=", "DEAD")], detail=True,  # detail: groups
                             limit=10_000, timeout=5)
    except Exception:  # noqa: BLE001 - cut short, or the state API is busy or gone
        return None
    return None if len(actors) >= 10_000 else [a for a in actors if not getattr(a, "is_detached", False)]


def _job_state(bundle: dict[str, float], before: set[str], actors_before: set[str] | None,
               pending: bool) -> _JobState | None:
    """The groups of this driver's job, not detached, not in ``before``, each of whose bundles
    is ``bundle``, CREATED (and ``pending``: PENDING or RESCHEDULING too), each with whether a
    live actor holds it; and the job's live actors not in ``actors_before``."""
    import ray
    from ray.util.state import list_placement_groups

    job = ray.get_runtime_context().get_job_id()
    states = ("CREATED", "PENDING", "RESCHEDULING") if pending else ("CREATED",)
    try:
        groups = list_placement_groups(filters=[("creator_job_id", "=", job), ("is_detached", "=", False)],
                                       detail=True, limit=10_000, timeout=5)
    except Exception:  # noqa: BLE001 - cut short, or the state API is busy or gone
        return None
    actors = _live_actors(job)
    if actors is None or len(groups) >= 10_000:
        return None
    held = {getattr(a, "placement_group_id", None) for a in actors}

    def shaped(g) -> bool:
        units = [{k: float(v) for k, v in (b.get("unit_resources") or {}).items() if v} for b in g.bundles or []]
        return bool(units) and all(u == bundle for u in units)

    return _JobState(
        groups={g.placement_group_id: g.placement_group_id in held for g in groups
                if g.state in states and g.placement_group_id not in before and shaped(g)},
        new_actors={a.actor_id for a in actors} - (actors_before or set()))

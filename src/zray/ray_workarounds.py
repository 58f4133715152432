"""Where zray works around a bug of Ray's: one function per bug, each naming it.

``tests/test_ray_workarounds.py`` holds, for each, a test that reproduces the
bug with Ray alone and fails once Ray is fixed; then delete the workaround and
its test. Everything else in zray uses Ray as its documentation shows.

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
"""

from __future__ import annotations

import os
import socket

__all__ = ["STATE_API_ENV", "actor_pool_cpus", "local_ray_options", "spare_cpus"]

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

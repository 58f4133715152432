"""Each workaround of zray.ray_workarounds: the Ray bug it works around is still there
(the first test of each pair fails once Ray fixes it: then delete the workaround and
both tests), and the workaround does its job.

Also: a search gives every trial's workers back, with Ray Train's own cleaner and, for
what that misses now and then (ray-project/ray#62753, a race no test can bring about on
demand, so it has no "still broken" test), zray's ReturnWorkerGroups.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

import pytest
import yaml

from zray.ray_workarounds import STATE_API_ENV


@pytest.fixture(scope="module")
def second_ray():
    """Another Ray on this machine (as a notebook or a `zray predict` beside a search), started
    after the test session's, in its own process; stopped when the module's tests are done."""
    temp_dir = tempfile.mkdtemp(prefix="zr2")
    code = ("import sys, ray\n"
            "ray.init(address='local', num_cpus=0, include_dashboard=False, _temp_dir=sys.argv[1])\n"
            "print('up', flush=True)\n"
            "sys.stdin.read()\n"
            "ray.shutdown()\n")
    env = {k: v for k, v in os.environ.items() if k not in (STATE_API_ENV, "RAY_ADDRESS")}
    proc = subprocess.Popen([sys.executable, "-c", code, temp_dir], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout.readline().strip() == "up"
    yield proc
    proc.stdin.close()
    proc.wait(timeout=60)


def _state_api_in_a_task(keep_env: bool) -> str:
    """What Ray's state API says, called with no address inside a task of the session's Ray."""
    import ray

    @ray.remote(num_cpus=0)
    def ask() -> str:
        from ray.util.state import list_nodes

        saved = {k: os.environ.get(k) for k in (STATE_API_ENV, "RAY_ADDRESS")}
        if not keep_env:  # (the worker process is reused by later tasks: put them back after)
            for key in saved:
                os.environ.pop(key, None)
        own = ray.get_runtime_context().get_node_id()
        try:
            nodes = list_nodes(timeout=20)
        except Exception as exc:  # noqa: BLE001 - what the bug looks like
            return f"error: {type(exc).__name__}: {exc}"
        finally:
            os.environ.update({k: v for k, v in saved.items() if v is not None})
        return "own" if own in {n.node_id for n in nodes} else "another Ray"

    return ray.get(ask.remote(), timeout=120)


def test_rays_state_api_in_a_worker_still_looks_for_a_ray_on_the_machine(ray_session, second_ray):
    """ray-project/ray#25639, #54468: with no address, the state API inside a Ray process
    searches the machine. Once this fails, Ray has fixed it: delete
    zray.ray_workarounds.local_ray_options (and its callers) and this test."""
    answer = _state_api_in_a_task(keep_env=False)
    assert answer != "own", ("Ray's state API now finds its own Ray inside a worker: the workaround "
                             "in zray.ray_workarounds is no longer needed")


def test_the_processes_of_a_ray_started_as_zray_does_find_their_own(ray_session, second_ray):
    """The session's Ray is started with local_ray_options(), as zray starts one."""
    assert _state_api_in_a_task(keep_env=True) == "own"


# A search on a Ray of its own (argv: search-space file, runs folder), as `zray tune` runs
# one; then, while this driver still lives (its job's groups would otherwise go with it),
# the state of every placement group its runs made. Prints one JSON line.
_SEARCH_THEN_GROUPS = """
import glob, json, logging, os, sys, time
from ray.util.placement_group import placement_group_table
from zray import config, search, runtime

given_back = []  # the groups zray's ReturnWorkerGroups removed (its debug lines)
handler = logging.Handler(logging.DEBUG)
handler.emit = lambda record: given_back.append(record.getMessage()) if "gave back" in record.getMessage() else None
logging.getLogger("zray").addHandler(handler)
logging.getLogger("zray").setLevel(logging.DEBUG)

runtime.init_ray()
before = set(placement_group_table())
summary = search.run(config.load(sys.argv[1]), runs_dir=sys.argv[2])
new = [g for g in placement_group_table() if g not in before]
deadline = time.time() + 60  # the cleaner looks once a second; give it a minute
while True:
    table = placement_group_table()
    states = {g: table[g]["state"] for g in new}
    if all(s == "REMOVED" for s in states.values()) or time.time() > deadline:
        break
    time.sleep(0.2)
left = {g: [states[g], table[g]["bundles"]] for g in new if states[g] != "REMOVED"}
reported = {}  # each trial's worker groups, as its epochs reported them
for f in glob.glob(os.path.join(sys.argv[2], "*", "trial-*", "result.json")):
    groups = [json.loads(line).get("worker_group") for line in open(f)]
    reported[os.path.basename(os.path.dirname(f))] = sorted(set(groups))
states = glob.glob(os.path.join(sys.argv[2], "*", "trials", "*", "checkpoint_*", "state.json"))
saved = [f for f in states if "worker_group" in open(f).read()]  # a group's id is for Tune, not the weights
print(json.dumps({"epochs": [t["epochs"] for t in summary["trials"]], "groups": len(new), "left": left,
                  "given_back": given_back, "reported": reported, "states": len(states), "saved": saved}))
"""


@pytest.mark.slow
def test_a_search_gives_every_trials_workers_back(sim_data, tmp_path):
    """ASHA stops trials (at the first rung, and at the last epoch): Tune then ends
    the trial's process and with it the run's controller, before the controller
    removes its workers' placement group. Ray Train's own cleaner removes them, and
    what it misses (ray-project/ray#62753, open: without zray's ReturnWorkerGroups one
    search in about three left a group here) zray removes.

    On a Ray of its own, not the session's: a group left in the session's Ray would
    hold CPUs that later tests wait for forever."""
    space = {
        "name": "reclaim", "model": "cnn",
        "data": {"path": str(sim_data), "image_size": 32},
        "fixed": {"epochs": 2, "batch_size": 64, "blocks": 1, "dense_units": 16, "filters": 8},
        "search": {"learning_rate": {"type": "float", "low": 1e-4, "high": 3e-3, "log": True}},
        # The time budget ends a search whose trials wait forever for CPUs that a
        # leaked group holds (that is what happened without a guard); the three trials
        # take about a minute, several on a busy two-core machine.
        "tune": {"num_samples": 3, "max_concurrent": 1, "seed": 0, "time_budget_s": 420,
                 "scheduler": {"type": "asha", "grace_period": 1, "reduction_factor": 2}},
        "resources": {"num_workers": 1, "cpus_per_worker": 0.9, "trial_cpus": 0.1},
    }
    path = tmp_path / "reclaim.yaml"
    path.write_text(yaml.safe_dump(space))
    env = {k: v for k, v in os.environ.items() if k not in (STATE_API_ENV, "RAY_ADDRESS")}
    proc = subprocess.run([sys.executable, "-c", _SEARCH_THEN_GROUPS, str(path), str(tmp_path / "runs")],
                          capture_output=True, text=True, env=env, timeout=840, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(result["epochs"]) == 3 and all(e >= 1 for e in result["epochs"]), result
    assert result["groups"], "the search's runs made no placement group"
    # Every trial's epochs said which group its workers held: what zray gives back if Ray does not.
    assert len(result["reported"]) == 3 and all(
        len(groups) == 1 and groups[0] for groups in result["reported"].values()), result["reported"]
    assert result["states"] >= 3 and result["saved"] == [], f"checkpoints keep a placement group's id: {result['saved']}"
    assert not result["left"], (f"placement groups left after the search (state, bundles): {result['left']}; "
                                f"zray gave back {result['given_back']}; the trials' reported groups {result['reported']}")
    print("zray gave back:", result["given_back"] or "none (Ray Train's cleaner removed every group)")


# A Ray Data pipeline shaped as zray predict's: Parquet read, then an actor pool asking for
# every CPU of a one-CPU Ray (argv: temp folder, shard files...).
_ACTORS_ON_EVERY_CPU = """
import sys, ray
ray.init(address="local", num_cpus=1, include_dashboard=False, _temp_dir=sys.argv[1], log_to_driver=False)

class Identity:
    def __call__(self, batch):
        return batch

ds = ray.data.read_parquet(sys.argv[2:]).select_columns(["id"]).map_batches(
    Identity, compute=ray.data.ActorPoolStrategy(size=1), num_cpus=1, batch_format="numpy")
print("rows", sum(len(b["id"]) for b in ds.iter_batches(batch_size=None, batch_format="numpy")), flush=True)
"""


def test_ray_data_still_hangs_when_its_actors_hold_every_cpu(sim_data):
    """ray-project/ray#44687: the pipeline never gets a CPU for its read tasks. It reads the
    rows in a few seconds once Ray has fixed it: then delete
    zray.ray_workarounds.actor_pool_cpus (and its caller) and this test."""
    from zray.data.shards import read_manifest

    files = [str(f) for f in read_manifest(sim_data).files("train")]
    env = {k: v for k, v in os.environ.items() if k not in (STATE_API_ENV, "RAY_ADDRESS")}
    proc = subprocess.Popen([sys.executable, "-c", _ACTORS_ON_EVERY_CPU, tempfile.mkdtemp(prefix="zr3"), *files],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env,
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        out = None
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 9)
            proc.wait(timeout=30)
    assert out is None, (f"Ray Data no longer hangs with actors on every CPU ({out.strip()!r}): the "
                         "workaround in zray.ray_workarounds is no longer needed")


def test_an_actor_pool_leaves_a_cpu_for_the_other_tasks(ray_session):
    from zray.ray_workarounds import actor_pool_cpus

    total = ray_session.cluster_resources()["CPU"]
    cpus = actor_pool_cpus(int(total), 1.0)
    assert 0 < cpus and total * cpus <= total - min(1.0, total / 2), cpus
    assert actor_pool_cpus(1, 0.25) == 0.25  # a pool that leaves room is asked for as given


def test_the_groups_of_an_ended_trial_are_given_back_after_the_grace_period(ray_session):
    """ray-project/ray#62753 is a race (about one search of three under ASHA leaves a group), not
    reproducible on demand with Ray alone; so here real placement groups stand for what Ray
    Train left: a trial's reported group goes once the grace period after Tune ended the trial
    is over, not before, and a running trial's group stays."""
    import time
    from types import SimpleNamespace

    from ray.util.placement_group import placement_group, placement_group_table

    from zray.ray_workarounds import WORKER_GROUP_KEY, ReturnWorkerGroups

    ended, running = (placement_group([{"CPU": 0.01}]) for _ in range(2))
    for group in (ended, running):
        ray_session.get(group.ready(), timeout=60)
    state = lambda g: placement_group_table(g)["state"]  # noqa: E731
    callback = ReturnWorkerGroups(grace_s=1.0)
    stopped, going = SimpleNamespace(trial_id="stopped"), SimpleNamespace(trial_id="going")
    callback.on_trial_result(0, [], stopped, {WORKER_GROUP_KEY: ended.id.hex(), "epoch": 1})
    callback.on_trial_result(0, [], going, {WORKER_GROUP_KEY: running.id.hex(), "epoch": 1})
    callback.on_trial_result(0, [], going, {"epoch": 2})  # a report without the key changes nothing
    callback.on_trial_complete(0, [], stopped)
    callback.on_step_end(0, [])
    assert state(ended) == "CREATED", "removed before Ray Train's own cleaner had its chance"
    time.sleep(1.2)
    callback.on_step_end(0, [])
    assert state(ended) == "REMOVED" and callback.removed == [ended.id.hex()]
    assert state(running) == "CREATED", "a running trial's workers lost their group"
    # At the end of the search, a trial just ended: its group is waited for, then given back.
    callback.on_trial_error(0, [], going)
    t0 = time.time()
    callback.on_experiment_end([])
    assert state(running) == "REMOVED" and 0.5 < time.time() - t0 < 10
    assert callback.removed == [ended.id.hex(), running.id.hex()]
    # A group Ray removed itself is not removed again, and an unknown id is no error.
    callback.on_trial_result(0, [], stopped, {WORKER_GROUP_KEY: ended.id.hex()})
    callback.on_trial_result(0, [], going, {WORKER_GROUP_KEY: "ff" * 18})
    callback.ended = {"stopped": 0.0, "going": 0.0}
    assert callback.reclaim(time.time()) == []


def test_a_group_no_worker_reported_is_found_by_its_shape_and_given_back(ray_session):
    """A controller's new group that it died before any worker reported: a group of this job,
    made during the search, of the workers' shape, that no live actor has held for the grace
    period, is removed; one an actor holds, one of another shape, one made before the search
    are not."""
    import time

    from ray.util.placement_group import placement_group, placement_group_table
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    from zray.ray_workarounds import ReturnWorkerGroups

    shape = {"CPU": 0.02}
    earlier = placement_group([shape])
    callback = ReturnWorkerGroups(grace_s=1.0, worker_bundle={**shape, "GPU": 0.0})
    callback.setup()
    orphan, held, other = placement_group([shape]), placement_group([shape]), placement_group([{"CPU": 0.03}])
    for group in (earlier, orphan, held, other):
        ray_session.get(group.ready(), timeout=60)

    @ray_session.remote(num_cpus=0.02)
    class Holder:
        def ping(self) -> bool:
            return True

    holder = Holder.options(scheduling_strategy=PlacementGroupSchedulingStrategy(held)).remote()
    assert ray_session.get(holder.ping.remote(), timeout=60)
    state = lambda g: placement_group_table(g)["state"]  # noqa: E731
    assert callback.sweep(time.time()) == [] and set(callback.orphans) == {orphan.id.hex()}
    time.sleep(1.2)
    assert callback.sweep(time.time()) == [orphan.id.hex()]
    assert state(orphan) == "REMOVED"
    assert [state(g) for g in (earlier, held, other)] == ["CREATED"] * 3
    ray_session.kill(holder)
    for group in (earlier, held, other):
        ray_session.util.remove_placement_group(group)
    # A trial bundle of the workers' shape: no sweep at all.
    assert ReturnWorkerGroups(worker_bundle=None).sweep(time.time()) == []


def test_the_end_of_a_search_waits_for_a_dying_controllers_group_and_gives_back_waiting_ones(ray_session):
    """Tune's fit can end while a stopped trial's controller, not dead yet, makes a new group
    (it died before any worker reported; the group then stays, as in one CI run): the end of
    the search waits for the actors the search started, then gives back the group they left.
    A group of the workers' shape still waiting for resources (PENDING) goes too: no trial
    needs one then. An actor there before the search is not waited for."""
    import os
    import threading
    import time

    from ray.util.placement_group import placement_group, placement_group_table

    from zray.ray_workarounds import ReturnWorkerGroups

    @ray_session.remote(num_cpus=0)
    class Controller:
        def make_a_group_then_die(self, delay: float) -> bool:
            def later():
                time.sleep(delay)
                ray_session.get(placement_group([{"CPU": 0.02}]).ready(), timeout=60)
                os._exit(0)  # as a killed controller: the group is the job's, and stays

            threading.Thread(target=later, daemon=True).start()
            return True

        def ping(self) -> bool:
            return True

    before_search = Controller.remote()  # an actor of the session's own, alive throughout
    assert ray_session.get(before_search.ping.remote(), timeout=60)
    groups_before = set(placement_group_table())
    callback = ReturnWorkerGroups(grace_s=1.0, worker_bundle={"CPU": 0.02})
    callback.setup()
    dying = Controller.remote()
    assert ray_session.get(dying.make_a_group_then_die.remote(1.5), timeout=60)
    t0 = time.time()
    callback.on_experiment_end([])
    took = time.time() - t0
    with pytest.raises(ray_session.exceptions.RayActorError):
        ray_session.get(dying.ping.remote(), timeout=60)
    made = {g: v["state"] for g, v in placement_group_table().items() if g not in groups_before}
    assert len(made) == 1 and list(made.values()) == ["REMOVED"], f"the dying controller's group stayed: {made}"
    assert callback.removed == list(made) and 1.5 < took < 15, (callback.removed, took)

    waiting_shape = {"CPU": 0.02, "zray_test_nowhere": 1.0}  # a resource no node has: it waits forever
    callback = ReturnWorkerGroups(grace_s=1.0, worker_bundle=waiting_shape)
    callback.setup()
    waiting = placement_group([waiting_shape])
    callback.on_experiment_end([])
    assert placement_group_table(waiting)["state"] == "REMOVED" and callback.removed == [waiting.id.hex()]
    # It ended as soon as nothing was left: the actor alive before the search was not waited for.
    assert callback.seen is not None and callback.seen.new_actors == set() and set(callback.seen.groups) <= set(callback.removed)
    assert ray_session.get(before_search.ping.remote(), timeout=60)
    ray_session.kill(before_search)


def test_a_search_gets_the_callback_with_its_workers_shape(sim_data):
    """experiment.callbacks wires ReturnWorkerGroups in, sweeping for the workers' shape, and
    not at all where a trial's own bundle ({"CPU": trial_cpus}) has that shape."""
    from pathlib import Path

    from zray import config, experiment
    from zray.data.shards import read_manifest
    from zray.ray_workarounds import ReturnWorkerGroups

    quickstart = Path(__file__).resolve().parents[1] / "search_spaces" / "quickstart.yaml"
    manifest = read_manifest(sim_data)

    def callback(*overrides):
        space = config.load(quickstart, [f"data.path={sim_data}", *overrides])
        found = [c for c in experiment.callbacks(space, manifest, trials=1, concurrent=1, estimate_file=None)
                 if isinstance(c, ReturnWorkerGroups)]
        assert len(found) == 1
        return found[0]

    assert callback().worker_bundle == {"CPU": 0.9}
    assert callback("resources.gpus_per_worker=1").worker_bundle == {"CPU": 0.9, "GPU": 1.0}
    assert callback("resources.trial_cpus=0.9").worker_bundle is None

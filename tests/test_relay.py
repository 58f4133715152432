"""The search's relay actor: reports in order, and a stopped run's workers freed.

The first two tests use the relay alone on the session's Ray; the last runs a
search in which the scheduler stops a trial.
"""

from __future__ import annotations

import json
import time

import pytest
from click.testing import CliRunner

from test_tune import BASE, write_space
from zray import search
from zray.cli import main


def test_reports_come_out_in_order_and_an_empty_box_waits(ray_session):
    import ray

    from zray.search.relay import find_relay, start_relay

    relay, name = start_relay()
    for epoch in (1, 2, 3):
        ray.get(relay.put.remote("trial-a", {"epoch": epoch}))
    ray.get(relay.put.remote("trial-b", {"epoch": 9}))
    found = find_relay(name)  # as a trial finds it
    assert ray.get(found.take.remote("trial-a", 1.0)) == [{"epoch": 1}, {"epoch": 2}, {"epoch": 3}]
    t0 = time.perf_counter()
    assert ray.get(relay.take.remote("trial-a", 0.5)) == []
    assert time.perf_counter() - t0 >= 0.45
    # A report put while a reader waits wakes it at once.
    waiting = relay.take.remote("trial-a", 30.0)
    time.sleep(0.5)
    ray.get(relay.put.remote("trial-a", {"epoch": 4}))
    assert ray.get(waiting, timeout=10) == [{"epoch": 4}]
    assert ray.get(relay.take.remote("trial-b", 0)) == [{"epoch": 9}]


def test_a_group_is_removed_once_its_creator_dies_and_kept_while_it_lives(ray_session):
    import ray
    from ray.util import placement_group_table
    from ray.util.placement_group import placement_group, remove_placement_group

    from zray.search.relay import start_relay

    @ray.remote(num_cpus=0)
    class Controller:  # stands for Ray Train's controller: it creates the run's group
        def make_group(self):
            group = placement_group([{"CPU": 0.01}])
            ray.get(group.ready())
            return group, ray.get_runtime_context().get_actor_id()

    relay, _ = start_relay()
    doomed, alive = Controller.remote(), Controller.remote()
    doomed_group, doomed_id = ray.get(doomed.make_group.remote())
    alive_group, alive_id = ray.get(alive.make_group.remote())
    ray.get(relay.hold.remote("trial-doomed", doomed_id, doomed_group))
    ray.get(relay.hold.remote("trial-alive", alive_id, alive_group))
    ray.kill(doomed)  # as when Tune ends a stopped trial's process: the group outlives its creator
    deadline = time.time() + 30
    while time.time() < deadline and placement_group_table(doomed_group)["state"] != "REMOVED":
        time.sleep(0.2)
    assert placement_group_table(doomed_group)["state"] == "REMOVED"
    assert placement_group_table(alive_group)["state"] == "CREATED"
    assert ray.get(relay.watching.remote()) == ["trial-alive"]
    remove_placement_group(alive_group)  # the run ended: its controller removes its own group
    deadline = time.time() + 10
    while time.time() < deadline and ray.get(relay.watching.remote()):
        time.sleep(0.2)
    assert ray.get(relay.watching.remote()) == []
    ray.kill(alive)


def _actors_of(cls: str) -> int:
    from ray.util.state import list_actors

    return len(list_actors(filters=[("class_name", "=", cls)], limit=10_000, raise_on_missing_output=False))


@pytest.mark.slow
def test_a_trial_stopped_by_the_scheduler_leaves_no_reservation(ray_session, sim_data, tmp_path):
    from ray.util import placement_group_table

    ray_parts = ("PlacementGroupCleaner", "_QueueActor")
    before = {cls: _actors_of(cls) for cls in ray_parts}
    # With seed 0, Optuna's TPE start-up draws the second choice first, then the
    # first: a trial that learns, then one that cannot (learning rate 1e-9),
    # which ASHA stops after its first epoch.
    path = write_space(
        tmp_path, sim_data, name="stopped",
        fixed={**BASE["fixed"], "epochs": 3},
        search={"learning_rate": {"type": "categorical", "choices": [1.0e-9, 3.0e-3]}},
        tune={"num_samples": 3, "max_concurrent": 1, "seed": 0,
              "scheduler": {"type": "asha", "grace_period": 1, "reduction_factor": 2}},
    )
    result = CliRunner().invoke(main, ["tune", str(path), "--runs", str(tmp_path / "runs")])
    assert result.exit_code == 0, (result.output, repr(result.exception))
    summary = search.summarize(tmp_path / "runs" / "stopped")
    assert "stopped" in {r["status"] for r in summary["trials"]}, summary["trials"]
    assert len(summary["trials"]) == 3
    for record in summary["trials"]:
        # Every epoch the run reported reached Tune, in order.
        lines = (tmp_path / "runs" / "stopped" / record["trial"] / "result.json").read_text().splitlines()
        epochs = [json.loads(line)["epoch"] for line in lines if line.strip()]
        assert epochs == list(range(1, record["epochs"] + 1)), (record["trial"], epochs)
    # The stopped trial's workers' placement group was removed (by the relay: its
    # controller died with the trial), and so was every other one.
    deadline = time.time() + 10
    while time.time() < deadline and any(g["state"] != "REMOVED" for g in placement_group_table().values()):
        time.sleep(0.2)
    assert {g["state"] for g in placement_group_table().values()} <= {"REMOVED"}
    # Neither Ray's queue per trial nor its cleaner per run was started.
    assert {cls: _actors_of(cls) for cls in ray_parts} == before

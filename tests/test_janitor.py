"""The placement-group janitor: a run whose controller is gone gives its workers' CPUs back."""

from __future__ import annotations

import asyncio
import time

import pytest
import yaml
from ray.util.placement_group import placement_group, placement_group_table

from zray import config, search
from zray.train import janitor


def _wait_removed(groups, timeout_s: float = 15.0) -> dict[str, str]:
    """Each group's state (by hex id) once all are REMOVED, or when ``timeout_s`` has passed."""
    ids = [g if isinstance(g, str) else g.id.hex() for g in groups]
    deadline = time.time() + timeout_s
    while True:
        table = placement_group_table()
        states = {i: table[i]["state"] for i in ids}
        if all(s == "REMOVED" for s in states.values()) or time.time() > deadline:
            return states
        time.sleep(0.2)


def test_janitor_removes_the_groups_of_a_dead_controller_only(ray_session):
    import ray

    name = "zray-janitor-test"  # its own, not the one searches in this session share
    guard = janitor.start(name)

    @ray.remote(num_cpus=0)
    class Controller:  # stands for Ray Train's controller: an async actor that registers, then makes groups
        async def run(self):
            await asyncio.sleep(600)

        def register(self):
            ctx = ray.get_runtime_context()
            ray.get(ray.get_actor(name).watch.remote(ctx.get_actor_id(), ctx.current_actor))

        def make_group(self):
            group = placement_group([{"CPU": 0.1}])
            ray.get(group.ready())
            return group.id.hex()

    dying, living = Controller.remote(), Controller.remote()
    ray.get([dying.register.remote(), living.register.remote()])
    # The first worker group's and a retry's, then the living one's.
    first, retry, kept = ray.get([dying.make_group.remote(), dying.make_group.remote(), living.make_group.remote()])
    dying.run.remote()
    living.run.remote()
    time.sleep(2 * janitor.CHECK_INTERVAL_S)  # checked while both are alive: nothing removed
    assert placement_group_table()[first]["state"] == "CREATED"
    assert ray.get(guard.watched.remote()) == 2

    ray.kill(dying)
    assert set(_wait_removed([first, retry]).values()) == {"REMOVED"}
    assert placement_group_table()[kept]["state"] == "CREATED"
    assert ray.get(guard.watched.remote()) == 1

    ray.kill(living)
    assert set(_wait_removed([kept]).values()) == {"REMOVED"}
    ray.kill(guard)


def test_the_janitor_outlives_a_second_search_in_the_same_process(ray_session):
    """Each search calls start(); the second finds the first's janitor. The
    janitor must still be alive after that (it once died right there: the
    handle of the first call, the one that owned it, was replaced)."""
    import gc

    import ray

    name = "zray-janitor-twice"
    first = janitor.start(name)
    first_id = first._actor_id.hex()
    del first  # the first search's own reference is gone: only the module's handles remain
    second = janitor.start(name)
    assert second._actor_id.hex() == first_id, "a second janitor was started instead of finding the first"
    del second
    gc.collect()
    time.sleep(1.0)  # the owner's "no references" reaches the GCS within milliseconds
    third = janitor.start(name)
    assert third._actor_id.hex() == first_id, "the janitor died between two searches"
    assert ray.get(third.watched.remote(), timeout=30) == 0
    ray.kill(third)


@pytest.mark.slow
def test_a_search_gives_every_trials_workers_back_without_rays_cleaner(ray_session, sim_data, tmp_path):
    """ASHA stops trials (at the first rung, and at the last epoch): Tune then ends
    the trial's process and with it the run's controller, before the controller
    removes its workers' placement group (and the dying controller, seeing its
    workers die, sometimes retries and creates one more). The janitor removes them."""
    from ray.util.state import list_actors

    def cleaners() -> set[str]:
        return {a.actor_id for a in list_actors(filters=[("class_name", "=", "PlacementGroupCleaner")], limit=10_000)}

    before, cleaners_before = set(placement_group_table()), cleaners()
    space = {
        "name": "janitor", "model": "cnn",
        "data": {"path": str(sim_data), "image_size": 32},
        "fixed": {"epochs": 2, "batch_size": 64, "blocks": 1, "dense_units": 16, "filters": 8},
        "search": {"learning_rate": {"type": "float", "low": 1e-4, "high": 3e-3, "log": True}},
        # The time budget ends a search whose trials wait forever for CPUs that a
        # leaked group holds (that is what happened without a guard).
        "tune": {"num_samples": 3, "max_concurrent": 1, "seed": 0, "time_budget_s": 180,
                 "scheduler": {"type": "asha", "grace_period": 1, "reduction_factor": 2}},
        "resources": {"num_workers": 1, "cpus_per_worker": 0.9, "trial_cpus": 0.1},
    }
    path = tmp_path / "janitor.yaml"
    path.write_text(yaml.safe_dump(space))
    summary = search.run(config.load(path), runs_dir=tmp_path / "runs")
    assert len(summary["trials"]) == 3 and all(t["epochs"] >= 1 for t in summary["trials"]), summary["trials"]

    new = [g for g in placement_group_table() if g not in before]
    assert new, "the search's runs made no placement group"
    states = _wait_removed(new)
    table = placement_group_table()
    left = {g: (state, table[g]["bundles"]) for g, state in states.items() if state != "REMOVED"}
    assert not left, f"placement groups left after the search (state, bundles): {left}"
    # Ray Train's own per-run cleaner was not started: the janitor stood in for it.
    assert cleaners() == cleaners_before

"""The reader: Ray Data per split and preprocessing (augmentation: tests/test_train_steps.py)."""

from __future__ import annotations

import numpy as np
import pytest

from zray.data import (
    load_arrays,
    preprocess_batch,
    read_manifest,
    read_split,
    scale_pixels,
)
from zray.errors import ZrayError


def test_scale_pixels_formula():
    x = np.array([-8.0, -1.0, 0.0, 3.0, 15.0], dtype=np.float32)
    np.testing.assert_allclose(scale_pixels(x), np.sign(x) * (np.sqrt(np.abs(x) + 1) - 1), rtol=1e-6)
    assert scale_pixels(x).dtype == np.float32


def test_ray_reader_yields_what_was_written_for_every_split(ray_session, sim_data):
    from zray.runtime import init_ray

    init_ray()  # the session's Ray, with the Parquet reader zray picks
    manifest = read_manifest(sim_data)
    assert len(manifest.files("train")) > 1  # several shards are read, not one
    for split in manifest.splits:
        want = load_arrays(sim_data, split)
        got = {k: [] for k in ("id", "image", "z_spec", "ebv")}
        for batch in read_split(sim_data, split).iter_batches(batch_size=64, batch_format="numpy"):
            assert batch["image"].dtype == np.float32 and batch["image"].shape[1:] == (5, 32, 32)
            for k in got:
                got[k].append(batch[k])
        got = {k: np.concatenate(v) for k, v in got.items()}
        assert len(got["id"]) == manifest.rows[split] == len(want["id"])
        order, ref = np.argsort(got["id"]), np.argsort(want["id"])
        for k in got:
            np.testing.assert_array_equal(got[k][order], want[k][ref])


def test_reading_the_splits_starts_no_actor_unless_the_user_picks_rays_newer_reader(ray_session, sim_data,
                                                                                 monkeypatch):
    """zray reads its shards with Ray Data's first Parquet reader: Ray 2.60's default starts a pool
    of footer-reading actor processes per read (5.1 s against 1.1 s for the quickstart's two splits
    on two cores: scripts/bench_data.py --prepare). Ray's own variable still picks the newer reader;
    once that reader stops starting actors for a few files, the second half fails and zray's choice
    (runtime.choose_parquet_reader) can go."""
    from ray.data import DataContext
    from ray.util.state import list_actors

    from zray.runtime import PARQUET_READER_ENV, init_ray
    from zray.train import prepare_datasets

    def actors_started_by_reading() -> list[str]:
        before = {a.actor_id for a in list_actors(limit=10_000)}
        prepare_datasets(sim_data, 32)
        return sorted(a.class_name for a in list_actors(limit=10_000) if a.actor_id not in before)

    ctx = DataContext.get_current()
    saved = ctx.use_datasource_v2
    monkeypatch.delenv(PARQUET_READER_ENV, raising=False)
    try:
        init_ray()
        assert ctx.use_datasource_v2 is False
        prepare_datasets(sim_data, 32)  # Ray Data's own once-per-session actors start here
        assert actors_started_by_reading() == []
        monkeypatch.setenv(PARQUET_READER_ENV, "1")
        ctx.use_datasource_v2 = True  # what the variable gives a process where Ray Data is imported after it
        init_ray()
        assert ctx.use_datasource_v2 is True, "the user's choice of reader was overridden"
        assert actors_started_by_reading(), "Ray's newer reader starts no actors now: zray's choice can go"
    finally:
        ctx.use_datasource_v2 = saved


def test_ray_map_batches_preprocess(ray_session, sim_data):
    ds = read_split(sim_data, "val").map_batches(
        preprocess_batch, batch_format="numpy"
    )
    batch = next(iter(ds.iter_batches(batch_size=1000, batch_format="numpy")))
    raw = load_arrays(sim_data, "val")
    ref = raw["image"][np.argsort(raw["id"])]
    got = batch["image"][np.argsort(batch["id"])]
    assert got.shape == (len(raw["id"]), 32, 32, 5) and got.dtype == np.float32
    np.testing.assert_allclose(got, scale_pixels(np.transpose(ref, (0, 2, 3, 1))), rtol=1e-6)


def test_load_arrays_matches_simulated_catalogue(sim_data):
    import pyarrow.parquet as pq

    cat = pq.read_table(sim_data / "catalog.parquet").to_pandas().set_index("id")
    for split in ("train", "val", "test"):
        arrays = load_arrays(sim_data, split)
        np.testing.assert_allclose(arrays["z_spec"], cat.loc[arrays["id"], "z"].to_numpy(), rtol=1e-6)
        np.testing.assert_allclose(arrays["ebv"], cat.loc[arrays["id"], "ebv"].to_numpy(), rtol=1e-6)


def test_read_split_errors(tmp_path, sim_data):
    with pytest.raises(ZrayError, match="unknown split 'dev'"):
        read_split(sim_data, "dev")
    with pytest.raises(ZrayError, match="no manifest.json"):
        read_split(tmp_path, "train")

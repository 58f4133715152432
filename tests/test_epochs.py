"""Row order never matters: catalogues sorted by redshift are written, read and
trained on in an order that has nothing to do with the catalogue's.

The shards here are written the way another tool would write them: in the
catalogue's order, sorted by redshift (zray's ``DatasetWriter`` keeps the
order rows are added in; zray's own commands add them by a hash of the id).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv
import pytest
from scipy.stats import ks_2samp, spearmanr

from zray.data import load_arrays, read_manifest, simulate_from_catalog, write_dataset
from zray.data.epochs import SHUFFLE_BUFFER_ROWS, StreamedSplit
from zray.data.shards import BANDS
from zray.data.writer import DatasetWriter


def write_sorted(out, n: int, size: int = 8, rows_per_shard: int = 1000, seed: int = 0):
    """A dataset whose rows sit in redshift order inside every shard and across shards."""
    rng = np.random.default_rng(seed)
    z = np.sort(rng.uniform(0.01, 0.39, n))
    ids = rng.permutation(n).astype(np.int64) * 7 + 3  # ids unrelated to z
    images = rng.normal(0.0, 1.0, (n, 5, size, size)).astype(np.float32)
    with DatasetWriter(out, rows_per_shard=rows_per_shard, label="other tool") as writer:
        for at in range(0, n, 500):
            sl = slice(at, at + 500)
            writer.add(ids[sl], images[sl], z[sl], np.full(len(z[sl]), 0.02))
    return writer.manifest


@pytest.fixture(scope="module")
def sorted_data(tmp_path_factory):
    out = tmp_path_factory.mktemp("sorted") / "d"
    write_sorted(out, 60_000)  # 48,000 training rows in 188 row groups: more than a worker's buffer holds
    return out


def split_ids_and_z(root, split="train"):
    arrays = load_arrays(root, split, columns=("id", "z_spec"))
    return arrays["id"], dict(zip(arrays["id"].tolist(), arrays["z_spec"].tolist()))


@pytest.mark.parametrize("world", [1, 2, 3])
def test_streamed_epochs_cover_the_split_once_in_a_fresh_order(sorted_data, world):
    ids, _ = split_ids_and_z(sorted_data)
    split = StreamedSplit.from_files(read_manifest(sorted_data).files("train"), image_size=8)
    orders = []
    for epoch in range(3):
        parts = [np.concatenate([b["id"] for b in split.epoch_batches(epoch=epoch, rank=r, world=world,
                                                                      batch_size=64, seed=5)])
                 for r in range(world)]
        seen = np.concatenate(parts)
        assert len({len(p) for p in parts}) == 1, "workers got unequal parts"
        assert len(np.unique(seen)) == len(seen), "an id came twice in one epoch"
        assert set(seen.tolist()) <= set(ids.tolist())
        assert len(ids) - len(seen) == len(ids) % world  # only the remainder sits out
        orders.append(seen)
    assert not np.array_equal(orders[0], orders[1]) and not np.array_equal(orders[1], orders[2])
    # The same seed and epoch give the same order: what a resumed run reads.
    again = np.concatenate([b["id"] for b in split.epoch_batches(epoch=1, rank=0, world=world,
                                                                  batch_size=64, seed=5)])
    assert np.array_equal(again, orders[1][: len(again)])


@pytest.mark.parametrize("buffer_rows", [100, 300, SHUFFLE_BUFFER_ROWS])
def test_every_worker_gets_the_same_batches_whatever_the_buffer(tmp_path, buffer_rows):
    """Equal batch counts and sizes on every worker (else the all-reduce waits forever),
    also with a buffer smaller than a batch."""
    write_sorted(tmp_path / "d", 1900, rows_per_shard=300)
    split = StreamedSplit.from_files(read_manifest(tmp_path / "d").files("train"), image_size=8,
                                     buffer_rows=buffer_rows)
    for world in (2, 3):
        sizes = [[len(b["id"]) for b in split.epoch_batches(epoch=1, rank=r, world=world, batch_size=128, seed=0)]
                 for r in range(world)]
        assert all(s == sizes[0] for s in sizes), sizes
        assert all(n == 128 for n in sizes[0][:-1]) and sum(sizes[0]) == split.n_rows // world


def test_streamed_split_leaves_out_labels_outside_the_bins(tmp_path):
    """--drop-out-of-range when the split is streamed: only rows inside the range are read,
    every one once an epoch, in equal parts per worker."""
    write_sorted(tmp_path / "d", 1900, rows_per_shard=300)
    files = read_manifest(tmp_path / "d").files("train")
    _, z_of = split_ids_and_z(tmp_path / "d")
    split = StreamedSplit.from_files(files, image_size=8, buffer_rows=200, z_range=(0.0, 0.2))
    inside = {i for i, z in z_of.items() if z < 0.2}
    assert split.n_rows == len(inside) < len(z_of)
    for world in (1, 2):
        parts = [np.concatenate([b["id"] for b in split.epoch_batches(epoch=0, rank=r, world=world,
                                                                      batch_size=64, seed=1)])
                 for r in range(world)]
        seen = np.concatenate(parts)
        assert len({len(p) for p in parts}) == 1
        assert len(np.unique(seen)) == len(seen) == len(inside) - len(inside) % world
        assert set(seen.tolist()) <= inside


def test_first_batches_of_a_sorted_streamed_split_are_a_fair_sample(sorted_data):
    """With the default buffer, every worker's first two batches of 32 draw from many
    places of a split sorted by redshift, and over epochs they are an unbiased sample
    of its redshifts (reading the files in order gives only the lowest)."""
    ids, z_of = split_ids_and_z(sorted_data)
    everything = np.array(list(z_of.values()))
    rank_of = {i: k for k, i in enumerate(load_arrays(sorted_data, "train", columns=("id",))["id"].tolist())}
    split = StreamedSplit.from_files(read_manifest(sorted_data).files("train"), image_size=8)
    assert split.buffer_rows == SHUFFLE_BUFFER_ROWS
    from zray.config.schema import DataConfig

    assert DataConfig(path="x").shuffle_buffer == SHUFFLE_BUFFER_ROWS  # the search space's default is the same
    pooled = []
    for epoch in range(10):
        for rank in range(2):
            batches = split.epoch_batches(epoch=epoch, rank=rank, world=2, batch_size=32, seed=0)
            first = [next(batches) for _ in range(2)]
            pooled.append(np.concatenate([b["z_spec"] for b in first]))
            groups = {rank_of[i] // 256 for b in first for i in b["id"].tolist()}  # 256-row stretches of the files
            assert len(groups) >= 25, f"epoch {epoch}, rank {rank}: the first batches came from {len(groups)} places"
    p = ks_2samp(np.concatenate(pooled), everything).pvalue
    assert p > 0.01, f"the first batches are a biased sample of the split's redshifts (p={p:.2g})"
    # Reading the files in their own order fails that test by far.
    raw = load_arrays(sorted_data, "train", columns=("z_spec",))["z_spec"][:64]
    assert ks_2samp(raw, everything).pvalue < 1e-6


def test_in_memory_epochs_depend_on_the_ids_not_on_the_block_layout(ray_session, tmp_path):
    from zray.data.epochs import InMemorySplit, epoch_rng, worker_part
    from zray.train import prepare_datasets

    write_sorted(tmp_path / "d", 4000, rows_per_shard=500)
    data = prepare_datasets(tmp_path / "d", 8)
    assert isinstance(data.train, InMemorySplit)
    ids, z_of = split_ids_and_z(tmp_path / "d")
    n = len(ids)
    for epoch in (0, 1):
        parts = [np.concatenate([b["id"] for b in data.train.epoch_batches(
            epoch=epoch, rank=r, world=2, batch_size=32, seed=3)]) for r in (0, 1)]
        # Exactly the rows that the id-sorted split, permuted for (seed, epoch), gives each worker.
        order = np.sort(ids)[epoch_rng(3, epoch).permutation(n)]
        for r in (0, 1):
            start, stop = worker_part(n, 2, r)
            assert np.array_equal(parts[r], order[start:stop])
        first = [z_of[i] for i in parts[0][:64]]
        assert ks_2samp(first, list(z_of.values())).pvalue > 0.01
    # Another layout of the same rows (one block) gives the same epochs.
    one_block = InMemorySplit(blocks=[ray_session.put(
        {"id": ids[::-1].copy(), "image": np.zeros((n, 8, 8, 5), np.float32),
         "z_spec": np.zeros(n, np.float32), "ebv": np.zeros(n, np.float32)})], n_rows=n)
    a = next(data.train.epoch_batches(epoch=4, rank=1, world=2, batch_size=50, seed=3))["id"]
    b = next(one_block.epoch_batches(epoch=4, rank=1, world=2, batch_size=50, seed=3))["id"]
    assert np.array_equal(a, b)


def _catalogue(path, order):
    rng = np.random.default_rng(1)
    n = 30
    z = rng.uniform(0.02, 0.3, n)
    g = rng.uniform(15.0, 17.5, n)
    cols = {"id": np.arange(1000, 1000 + n), "z": z}
    for k, b in enumerate(BANDS):
        cols[f"mag_{b}"] = g + (0.6 * (2 - k)) * (1 + z)
    table = pa.table(cols)
    keys = {"as is": np.arange(n), "by z": np.argsort(z), "reversed": np.arange(n)[::-1]}[order]
    pcsv.write_csv(table.take(pa.array(keys)), path)


def test_simulated_catalogue_gives_the_same_shards_however_it_is_sorted(tmp_path):
    hashes = {}
    for order in ("as is", "by z", "reversed"):
        cat = tmp_path / f"{order.replace(' ', '_')}.csv"
        _catalogue(cat, order)
        m = simulate_from_catalog(cat, tmp_path / order.replace(" ", "_"), size=8, workers=1, progress=False)
        hashes[order] = m.hash
    assert len(set(hashes.values())) == 1, f"row order changed the shards: {hashes}"
    # Written in an order unrelated to redshift, although the catalogue was sorted.
    z = load_arrays(tmp_path / "by_z", "train", columns=("z_spec",))["z_spec"]
    assert abs(spearmanr(np.arange(len(z)), z)[0]) < 0.4


def test_write_dataset_and_prepare_ignore_the_input_order(tmp_path):
    from astropy.io import fits

    from zray.data.ingest import prepare_dataset

    rng = np.random.default_rng(2)
    n = 40
    z = np.sort(rng.uniform(0.01, 0.39, n))
    images = rng.normal(0, 1, (n, 5, 10, 10)).astype(np.float32)
    ids = np.arange(n) * 11
    a = write_dataset(tmp_path / "a", ids, images, z, np.zeros(n), rows_per_shard=8)
    rev = slice(None, None, -1)
    b = write_dataset(tmp_path / "b", ids[rev], images[rev], z[rev], np.zeros(n), rows_per_shard=8)
    assert a.hash == b.hash
    (tmp_path / "img").mkdir()
    for i in range(n):
        hdu = fits.PrimaryHDU(images[i])
        for k, band in enumerate(BANDS):
            hdu.header[f"BAND{k + 1}"] = band
        hdu.writeto(tmp_path / "img" / f"g{i}.fits")
    hashes = []
    for name, keys in (("sorted", np.arange(n)), ("shuffled", rng.permutation(n))):
        cols = {"id": ids[keys], "z_spec": z[keys], "ebv": np.zeros(n), "file": [f"g{i}.fits" for i in keys]}
        pcsv.write_csv(pa.table(cols), tmp_path / f"{name}.csv")
        hashes.append(prepare_dataset(tmp_path / f"{name}.csv", tmp_path / "img", tmp_path / name, size=10,
                                      rows_per_shard=8, progress=False).hash)
    assert hashes[0] == hashes[1]


def test_inspect_warns_when_row_order_follows_redshift(tmp_path):
    from click.testing import CliRunner

    from zray.cli import main

    write_sorted(tmp_path / "sorted", 400, rows_per_shard=100)
    result = CliRunner().invoke(main, ["inspect", str(tmp_path / "sorted")])
    assert result.exit_code == 0, result.output
    assert "warning: split 'train': row order follows redshift (increasing; Spearman rho +1.00" in result.output
    assert "problems: none" in result.output
    # The same rows written by zray: no warning.
    arrays = {s: load_arrays(tmp_path / "sorted", s) for s in ("train", "val", "test")}
    cat = {k: np.concatenate([a[k] for a in arrays.values()]) for k in ("id", "image", "z_spec", "ebv")}
    write_dataset(tmp_path / "zray", cat["id"], cat["image"], cat["z_spec"], cat["ebv"], rows_per_shard=100)
    result = CliRunner().invoke(main, ["inspect", str(tmp_path / "zray")])
    assert result.exit_code == 0 and "warning" not in result.output, result.output


def test_a_streamed_shard_corrupt_behind_its_footer_is_named(tmp_path):
    import pyarrow.parquet as pq

    from zray.errors import ZrayError

    write_sorted(tmp_path / "d", 600, rows_per_shard=100)
    files = read_manifest(tmp_path / "d").files("train")
    split = StreamedSplit.from_files(files, image_size=8)  # every footer is sound
    bad = files[2]
    meta = pq.ParquetFile(bad).metadata
    column = next(meta.row_group(0).column(i) for i in range(meta.num_columns)
                  if meta.row_group(0).column(i).path_in_schema == "z_spec")
    with open(bad, "r+b") as handle:  # the z_spec data page overwritten, the footer intact
        handle.seek(column.data_page_offset)
        handle.write(b"\xff" * 64)
    with pytest.raises(ZrayError, match=f"^{bad}: shard is corrupt .*data.skip_corrupt: true"):
        list(split.epoch_batches(epoch=0, rank=0, world=1, batch_size=32, seed=0))

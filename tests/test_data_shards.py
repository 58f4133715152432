"""The shard format: writing, splits, manifest, and validation of bad shards."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from conftest import SDSS_IDS
from zray.bins import RedshiftBins
from zray.data import assign_split, load_arrays, read_manifest, validate_dataset, write_dataset
from zray.data.validate import inspect_dataset
from zray.errors import ZrayError


def _rows(n=40, size=8, seed=0):
    rng = np.random.default_rng(seed)
    ids = np.arange(1000, 1000 + n, dtype=np.int64)
    images = rng.normal(size=(n, 5, size, size)).astype(np.float32)
    z = rng.uniform(0.01, 0.39, n)
    ebv = rng.uniform(0, 0.1, n)
    return ids, images, z, ebv


def assert_nothing_left(out):
    """Neither the output nor a temporary sibling of it may remain."""
    assert not out.exists()
    leftovers = [p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")]
    assert leftovers == []


def test_write_then_read_back_every_split(tmp_path):
    ids, images, z, ebv = _rows()
    mags = {"mag_r": np.linspace(14, 17, len(ids))}
    m = write_dataset(tmp_path / "d", ids, images, z, ebv, mags, rows_per_shard=7)
    assert m.image_shape == (5, 8, 8) and m.bands == ("u", "g", "r", "i", "z")
    assert sum(m.rows.values()) == len(ids) and m.hash.startswith("sha256:")
    assert all(sh.rows <= 7 for s in m.splits for sh in m.shards[s])
    assert read_manifest(tmp_path / "d") == m
    validate_dataset(tmp_path / "d")
    split = assign_split(ids, 0)
    for k, s in enumerate(m.splits):
        got = load_arrays(tmp_path / "d", s, columns=("id", "image", "z_spec", "ebv", "mag_r"))
        want = np.flatnonzero(split == k)
        order = np.argsort(got["id"])
        np.testing.assert_array_equal(got["id"][order], ids[want])
        np.testing.assert_array_equal(got["image"][order], images[want])
        np.testing.assert_allclose(got["z_spec"][order], z[want].astype(np.float32))
        np.testing.assert_allclose(got["mag_r"][order], mags["mag_r"][want].astype(np.float32))
    schema = pq.read_schema(m.files("train")[0])
    assert str(schema.field("image").type).startswith("extension<arrow.fixed_shape_tensor")


def test_split_depends_only_on_id_and_seed():
    ids = np.arange(20_000)
    split = assign_split(ids, seed=3)
    np.testing.assert_array_equal(assign_split(ids[::-1], seed=3), split[::-1])
    np.testing.assert_array_equal(assign_split(ids[5000:], seed=3), split[5000:])
    assert not np.array_equal(assign_split(ids, seed=4), split)
    fractions = np.bincount(split, minlength=3) / ids.size
    np.testing.assert_allclose(fractions, [0.8, 0.1, 0.1], atol=0.01)


def test_unsigned_ids_above_the_signed_range_are_kept_exactly(tmp_path):
    ids = np.array(SDSS_IDS * 5, dtype=np.uint64) + np.repeat(np.arange(5, dtype=np.uint64), 6) * np.uint64(1 << 38)
    assert ids.max() > np.iinfo(np.int64).max
    _, images, z, ebv = _rows(len(ids))
    m = write_dataset(tmp_path / "d", ids, images, z, ebv, rows_per_shard=7)
    validate_dataset(tmp_path / "d")
    got = {}
    for k, s in enumerate(m.splits):
        assert all(pq.read_schema(f).field("id").type == "uint64" for f in m.files(s))
        arrays = load_arrays(tmp_path / "d", s, columns=("id", "image"))
        assert arrays["id"].dtype == np.uint64
        got.update((int(i), image) for i, image in zip(arrays["id"], arrays["image"]))
        # split by the same hash as the id's 64 bits read as a signed number
        np.testing.assert_array_equal(assign_split(arrays["id"], 0), k)
        np.testing.assert_array_equal(assign_split(arrays["id"].view(np.int64), 0), k)
    assert sorted(got) == sorted(int(i) for i in ids)
    for i, image in zip(ids, images):
        np.testing.assert_array_equal(got[int(i)], image)


def test_ids_of_both_kinds_join_by_their_64_bits_never_as_floats(tmp_path):
    """numpy compares an int64 with a uint64 as floats, which cannot tell 2**62 + 1 from 2**62 + 2:
    zray's joins (a dataset's ids against another's, predictions against a catalogue) do not."""
    from zray.data.catalog import lookup
    from zray.predict import _with_known_z

    signed = np.array([2**62 + 1, 2**62 + 2, 7], dtype=np.int64)
    unsigned = np.array([2**62 + 2, 2**63 + 5, 7, 2**62 + 1], dtype=np.uint64)
    rows, found = lookup(signed, unsigned)
    assert found.tolist() == [True, False, True, True] and rows[found].tolist() == [1, 2, 0]
    rows, found = lookup(unsigned, signed)
    assert found.all() and rows.tolist() == [3, 0, 2]
    catalogue = (unsigned, np.array([0.2, 0.3, 0.1, 0.4]))
    joined = next(_with_known_z(iter([{"id": signed}]), catalogue))
    assert joined["z_spec"].tolist() == [0.4, 0.2, 0.1]
    # An empty split's ids have the dataset's type: joined with the others', still integers.
    _, images, z, ebv = _rows(6)
    m = write_dataset(tmp_path / "d", np.array(SDSS_IDS, dtype=np.uint64), images, z, ebv, fractions=(0.5, 0.5, 0))
    assert m.rows["test"] == 0
    parts = [load_arrays(tmp_path / "d", s, columns=("id",))["id"] for s in m.splits]
    assert np.concatenate(parts).dtype == np.uint64


def test_a_writer_refuses_ids_of_the_other_kind_and_never_wraps_one(tmp_path):
    from zray.data.writer import DatasetWriter

    _, images, z, ebv = _rows(4)
    with pytest.raises(ZrayError, match=r"id -3 does not fit the earlier rows' ids, which are 64-bit integers "
                                        r"unsigned \(>= 0\); expected ids of one kind"):
        with DatasetWriter(tmp_path / "a") as writer:
            writer.add(np.array([2**63, 2**63 + 1], dtype=np.uint64), images[:2], z[:2], ebv[:2])
            writer.add(np.array([7, -3]), images[2:], z[2:], ebv[2:])
    assert_nothing_left(tmp_path / "a")
    with pytest.raises(ZrayError, match=r"id 9223372036854775808 does not fit the earlier rows' ids, which are "
                                        r"64-bit integers at most 9223372036854775807"):
        with DatasetWriter(tmp_path / "b") as writer:
            writer.add(np.array([1, 2]), images[:2], z[:2], ebv[:2])
            writer.add(np.array([3, 2**63], dtype=np.uint64), images[2:], z[2:], ebv[2:])
    assert_nothing_left(tmp_path / "b")
    # ids of the other kind that fit are taken as the dataset's own
    with DatasetWriter(tmp_path / "c") as writer:
        writer.add(np.array([1, 2]), images[:2], z[:2], ebv[:2])
        writer.add(np.array([3, 4], dtype=np.uint64), images[2:], z[2:], ebv[2:])
    ids = np.concatenate([load_arrays(tmp_path / "c", s, columns=("id",))["id"] for s in writer.manifest.splits])
    assert ids.dtype == np.int64 and sorted(ids.tolist()) == [1, 2, 3, 4]


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda r: r[1].__setitem__((3, 2, 1, 1), np.nan), "row 3 (id 1003): image has NaN or infinite pixels"),
        (lambda r: r[1].__setitem__((5, 0, 0, 0), np.inf), "row 5 (id 1005): image has NaN or infinite pixels"),
        (lambda r: r[0].__setitem__(7, 1002), "id 1002 appears in rows 2 and 7; expected unique ids"),
        (lambda r: r[2].__setitem__(4, 0.45), "row 4 (id 1004): z_spec 0.45 is outside the binning range"),
        (lambda r: r[2].__setitem__(4, -0.01), "row 4 (id 1004): z_spec -0.01 is outside the binning range"),
        (lambda r: r[3].__setitem__(6, np.nan), "row 6 (id 1006): ebv nan is invalid"),
    ],
)
def test_bad_rows_are_refused_and_nothing_is_left(tmp_path, mutate, message):
    rows = list(_rows())
    mutate(rows)
    with pytest.raises(ZrayError, match=message.replace("(", r"\(").replace(")", r"\)")):
        write_dataset(tmp_path / "d", *rows)
    assert_nothing_left(tmp_path / "d")


@pytest.mark.parametrize(
    "shape, message",
    [((4, 4, 8, 8), r"images have shape \(4, 4, 8, 8\); expected \(N, 5, H, W\) raw cutouts in band order u,g,r,i,z"),
     ((4, 5, 8, 6), "expected square cutouts"),
     ((4, 5, 8), "expected \\(N, 5, H, W\\)")],
)
def test_wrong_band_count_or_shape_is_refused(tmp_path, shape, message):
    ids, _, z, ebv = _rows(4)
    with pytest.raises(ZrayError, match=message):
        write_dataset(tmp_path / "d", ids, np.zeros(shape, np.float32), z, ebv)
    assert_nothing_left(tmp_path / "d")


def test_custom_bins_limit_z(tmp_path):
    ids, images, z, ebv = _rows()
    with pytest.raises(ZrayError, match="expected 0.0 <= z < 0.2"):
        write_dataset(tmp_path / "d", ids, images, z, ebv, bins=RedshiftBins(0.0, 0.2, 50))


def test_existing_dataset_needs_overwrite(tmp_path):
    rows = _rows()
    first = write_dataset(tmp_path / "d", *rows)
    with pytest.raises(ZrayError, match=r"already exists \(a zray dataset\); use --overwrite"):
        write_dataset(tmp_path / "d", *rows)
    rows2 = _rows(seed=1)
    second = write_dataset(tmp_path / "d", *rows2, overwrite=True)
    assert second.hash != first.hash and read_manifest(tmp_path / "d").hash == second.hash
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(ZrayError, match="already exists and was not written by zray; expected a new or empty folder"):
        write_dataset(tmp_path / "other", *rows, overwrite=True)
    assert (tmp_path / "other" / "notes.txt").read_text() == "mine"


# ------------------------------------------------------------- validation
@pytest.fixture
def dataset(tmp_path):
    write_dataset(tmp_path / "d", *_rows(60), rows_per_shard=20)
    return tmp_path / "d"


def test_truncated_shard(dataset):
    shard = dataset / "train-00001.parquet"
    shard.write_bytes(shard.read_bytes()[:-100])
    with pytest.raises(ZrayError, match=r"train-00001.parquet: not a readable Parquet file"):
        validate_dataset(dataset)


def test_non_parquet_shard(dataset):
    (dataset / "train-00000.parquet").write_text("id,image\n1,2\n")
    with pytest.raises(ZrayError, match=r"train-00000.parquet: not a readable Parquet file"):
        validate_dataset(dataset)


def test_manifest_row_count_disagrees(dataset):
    data = json.loads((dataset / "manifest.json").read_text())
    data["splits"]["train"][0]["rows"] += 1
    (dataset / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(ZrayError, match=r"train-00000.parquet: holds 20 rows but the manifest says 21"):
        validate_dataset(dataset)


def test_manifest_hash_disagrees(dataset):
    data = json.loads((dataset / "manifest.json").read_text())
    data["hash"] = "sha256:" + "0" * 64
    (dataset / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(ZrayError, match=r"manifest.json: content hash sha256:0+ does not match"):
        validate_dataset(dataset)


def test_missing_shard_and_missing_manifest(dataset):
    (dataset / "val-00000.parquet").unlink()
    with pytest.raises(ZrayError, match=r"val-00000.parquet: shard listed in the manifest is missing"):
        validate_dataset(dataset)
    (dataset / "manifest.json").unlink()
    with pytest.raises(ZrayError, match=r"no manifest.json; expected a dataset"):
        validate_dataset(dataset)


def test_manifest_not_json(dataset):
    (dataset / "manifest.json").write_text("{oops")
    with pytest.raises(ZrayError, match=r"manifest.json: not readable JSON"):
        read_manifest(dataset)


def test_shard_with_bad_rows_is_reported_with_file_and_row(dataset):
    """A shard rewritten behind the manifest's back: NaN pixel, bad z, duplicate id."""
    path = dataset / "train-00000.parquet"
    table = pq.read_table(path)
    ids = table.column("id").to_numpy().copy()
    image = table.column("image").combine_chunks().to_numpy_ndarray().copy()
    z = table.column("z_spec").to_numpy().copy()
    image[2, 1, 0, 0] = np.nan
    z[4] = 0.5
    ids[6] = ids[5]
    import pyarrow as pa

    bad = table.set_column(0, "id", pa.array(ids))
    bad = bad.set_column(1, "image", pa.FixedShapeTensorArray.from_numpy_ndarray(image))
    bad = bad.set_column(2, "z_spec", pa.array(z))
    pq.write_table(bad, path)
    with pytest.raises(ZrayError, match=r"train-00000.parquet: row 2 \(id \d+\): image has NaN"):
        validate_dataset(dataset)
    report = inspect_dataset(dataset)
    text = "\n".join(report.problems)
    assert "row 4" in text and "z_spec 0.5 is outside the range" in text
    assert f"row 6: id {ids[5]} duplicates a row of train-00000.parquet" in text
    assert "content hash" in text

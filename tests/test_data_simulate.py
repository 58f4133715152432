"""The simulator: determinism, physical sanity, catalogue mode."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest

from zray.data import load_arrays, read_manifest, simulate, simulate_from_catalog, validate_dataset
from zray.data.templates import colour_grid
from zray.errors import ZrayError


def test_sim_data_is_valid_and_complete(sim_data):
    m = validate_dataset(sim_data)
    assert m.total_rows == 300 and m.image_shape == (5, 32, 32) and m.pixel_scale == 0.396
    assert set(m.columns) >= {"id", "image", "z_spec", "ebv", "mag_r"}
    cat = pq.read_table(sim_data / "catalog.parquet")
    assert cat.num_rows == 300
    assert {"id", "z", "type", "mag_u", "mag_z", "r50_arcsec", "ebv"} <= set(cat.column_names)


def test_a_network_smaller_than_the_cutouts_is_said_to_crop_them(sim_data, caplog):
    """32x32 cutouts for a 16-pixel network: the run says what part of each it sees; a network
    larger than the cutouts is refused."""
    import logging
    from pathlib import Path

    from zray import config
    from zray.data.source import ensure_data
    from zray.errors import ZrayError

    quickstart = Path(__file__).resolve().parents[1] / "search_spaces" / "quickstart.yaml"
    with caplog.at_level(logging.INFO, logger="zray"):
        ensure_data(config.load(quickstart, [f"data.path={sim_data}", "data.image_size=16"]))
    assert f"{sim_data}: its 32x32 cutouts are cropped to their central 16x16 pixels (6.3\" across)" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="zray"):
        ensure_data(config.load(quickstart, [f"data.path={sim_data}", "data.image_size=32"]))
    assert "cropped" not in caplog.text
    with pytest.raises(ZrayError, match="images are 32x32 pixels but data.image_size is 48"):
        ensure_data(config.load(quickstart, [f"data.path={sim_data}", "data.image_size=48"]))


def test_same_seed_gives_identical_shards_whatever_the_workers(tmp_path, sim_data):
    again = simulate(tmp_path / "a", 300, size=32, seed=0, workers=2, rows_per_shard=100, progress=False)
    assert again.hash == read_manifest(sim_data).hash
    for f in again.all_files():
        assert f.read_bytes() == (sim_data / f.name).read_bytes()
    other = simulate(tmp_path / "b", 40, size=16, seed=1, workers=1, progress=False)
    first = simulate(tmp_path / "c", 40, size=16, seed=0, workers=1, progress=False)
    assert other.hash != first.hash


def test_population_is_sdss_like(sim_data):
    cat = pq.read_table(sim_data / "catalog.parquet").to_pandas()
    assert 0.07 < cat["z"].median() < 0.13 and cat["z"].max() < 0.4
    assert (cat["mag_r"] < 17.77).all()
    ur = cat["mag_u"] - cat["mag_r"]
    assert 0.2 < (ur > 2.2).mean() < 0.8  # both red and blue populations
    assert 0.015 < cat["ebv"].median() < 0.05


def test_red_galaxy_colours_follow_the_template():
    """The simulator's sanity check: red galaxies' g-r rises from about 0.8 at z~0.02 to about 1.4 at z~0.2."""
    terms = colour_grid().colour_terms(np.array([0.02, 0.2]), np.zeros(2))
    g_r = terms[:, 1] - terms[:, 2]
    assert 0.7 < g_r[0] < 0.95 and 1.25 < g_r[1] < 1.5


def test_images_are_bright_in_the_centre_and_in_nanomaggies(sim_data):
    arrays = load_arrays(sim_data, "train")
    cat = pq.read_table(sim_data / "catalog.parquet").to_pandas().set_index("id")
    images = arrays["image"]
    centre = images[:, 2, 12:20, 12:20].sum(axis=(1, 2))
    edge = images[:, 2, :4, :4].sum(axis=(1, 2)) * 4
    assert np.median(centre) > 10 * np.median(np.abs(edge))
    # total r flux roughly matches the catalogue magnitude (extinction, aperture losses aside)
    flux = images[:, 2].sum(axis=(1, 2))
    mag = 22.5 - 2.5 * np.log10(np.clip(flux, 1e-3, None))
    diff = mag - cat.loc[arrays["id"], "mag_r"].to_numpy()
    assert 0.0 < np.median(diff) < 0.6


def test_catalog_mode(tmp_path):
    cat = pa.table({
        "id": [11, 12, 13, 14],
        "z": [0.05, 0.1, 0.15, 0.2],
        "mag_u": [18.9, 19.8, 20.2, 19.5],
        "mag_g": [17.2, 17.9, 18.3, 18.6],
        "mag_r": [16.4, 17.0, 17.1, 17.9],
        "mag_i": [16.0, 16.6, 16.7, 17.6],
        "mag_z": [15.7, 16.4, 16.4, 17.4],
    })
    pcsv.write_csv(cat, tmp_path / "cat.csv")
    m = simulate_from_catalog(tmp_path / "cat.csv", tmp_path / "out", size=16, workers=1, progress=False)
    assert m.total_rows == 4 and m.image_shape == (5, 16, 16)
    # The true catalogue lists the galaxies in the order they were written (a hash of the id).
    truth = pq.read_table(tmp_path / "out" / "catalog.parquet").to_pandas().set_index("id").loc[[11, 12, 13, 14]]
    np.testing.assert_allclose(truth["mag_r"], cat["mag_r"].to_numpy())
    assert truth["red"].iloc[0] and not truth["red"].iloc[3]  # u-r 2.5 red, 1.6 blue
    # The redshift named z_spec, as zray's other commands name it, gives the same galaxies.
    pcsv.write_csv(cat.rename_columns(["id", "z_spec", *cat.column_names[2:]]), tmp_path / "cat_spec.csv")
    same = simulate_from_catalog(tmp_path / "cat_spec.csv", tmp_path / "spec", size=16, workers=1, progress=False)
    assert same.hash == m.hash
    # ... and under a survey's own names read with --column, beside a photometric z column that is
    # not the redshift to draw (--column z_spec names the one that is): the same galaxies again.
    from zray.data.catalog import parse_columns

    sdss = cat.rename_columns(["objID", "zsp", *(f"dered_{b}" for b in "ugriz")]).append_column(
        "z", pa.array([0.3, 0.01, 0.2, 0.05]))
    pcsv.write_csv(sdss, tmp_path / "cat_sdss.csv")
    columns = parse_columns(["id=objID", "z_spec=zsp", *(f"mag_{b}=dered_{b}" for b in "ugriz")])
    named = simulate_from_catalog(tmp_path / "cat_sdss.csv", tmp_path / "named", size=16, workers=1, progress=False,
                                  columns=columns)
    assert named.hash == m.hash
    assert named.source["columns"] == {"id": "objID", "z_spec": "zsp", **{f"mag_{b}": f"dered_{b}" for b in "ugriz"}}
    with pytest.raises(ZrayError, match=r"cat_sdss.csv: missing column\(s\) id, mag_u.*--column id=objID if 'objID' is "
                                        r"a unique integer per galaxy; --column mag_u=dered_u if 'dered_u' is the "
                                        r"dereddened u magnitude"):
        simulate_from_catalog(tmp_path / "cat_sdss.csv", tmp_path / "x", size=16, workers=1, progress=False)
    # SDSS specObjIDs above 2**63 - 1 (a Parquet column of uint64): the shards and the true
    # catalogue keep them to the last bit.
    big = [2**63 + 1024, 2**63 + 2048, 2**64 - 1024, 2**64 - 1]
    pq.write_table(cat.set_column(0, "id", pa.array(big, pa.uint64())), tmp_path / "cat_big.parquet")
    simulate_from_catalog(tmp_path / "cat_big.parquet", tmp_path / "big", size=16, workers=1, progress=False)
    truth = pq.read_table(tmp_path / "big" / "catalog.parquet").to_pandas().set_index("id").loc[big]
    np.testing.assert_allclose(truth["mag_r"], cat["mag_r"].to_numpy())
    written = [load_arrays(tmp_path / "big", s, columns=("id",))["id"] for s in ("train", "val", "test")]
    assert sorted(int(i) for part in written for i in part) == big


@pytest.mark.parametrize(
    "change, message",
    [
        ({"drop": "mag_g"}, "cat.csv: missing column\\(s\\) mag_g"),
        ({"z": [0.05, 0.45]}, "cat.csv: row 2 \\(id 2\\): z 0.45 is outside the binning range"),
        ({"id": [3, 3]}, "cat.csv: rows 1 and 2 share id 3; expected unique ids"),
        ({"mag_r": [17.0, None]}, "cat.csv: row 2 \\(id 2\\): mag_r is missing or not finite"),
        ({"drop": "z"}, "cat.csv: missing column z; expected each galaxy's redshift as z \\(or z_spec\\)"),
        ({"mag_i": [-9999.0, 17.0]}, "cat.csv: row 1 \\(id 1\\): mag_i -9999 is not a galaxy's apparent magnitude"),
    ],
)
def test_bad_catalogue_for_simulation(tmp_path, change, message):
    cols = {"id": [1, 2], "z": [0.05, 0.1], **{f"mag_{b}": [17.0, 17.5] for b in "ugriz"}}
    for key, value in change.items():
        if key == "drop":
            cols.pop(value)
        else:
            cols[key] = value
    pcsv.write_csv(pa.table(cols), tmp_path / "cat.csv")
    with pytest.raises(ZrayError, match=message):
        simulate_from_catalog(tmp_path / "cat.csv", tmp_path / "out", size=16, workers=1, progress=False)
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["cat.csv"]

"""scripts/bench_accuracy.py's baselines: the field's own photo-z codes, fitted and scored on zray's bins."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest

from zray.bins import RedshiftBins
from zray.data import load_arrays, simulate
from zray.data.shards import PIXEL_SCALE

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench_accuracy.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_accuracy", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def rows(bench, tmp_path_factory):
    data = tmp_path_factory.mktemp("bench") / "sim"
    simulate(data, 300, size=16, seed=1, workers=1, progress=False)
    train, test = load_arrays(data, "train"), load_arrays(data, "test")
    assert len(test["id"]) >= 20
    return {r["name"]: r for r in bench.baseline_rows(train, test, RedshiftBins())}


def _find(rows, prefix):
    found = [name for name in rows if name.startswith(prefix)]
    assert len(found) == 1, f"expected one row starting {prefix!r}, got {sorted(rows)}"
    return rows[found[0]]


def test_every_baseline_is_fitted_and_scored(rows):
    expected = ["constant (training median z)", "kNN(10) on aperture colours", "FlexZBoost (RAIL", "RAIL kNN",
                "gradient boosting on colours + r", "gradient boosting on colours + r + morphology"]
    assert "gradient boosting on colours + r" in rows
    assert "gradient boosting on colours + r + morphology" in rows
    assert len(rows) == len(expected)
    for prefix in expected:
        row = rows[prefix] if prefix in rows else _find(rows, prefix)
        assert row["kind"] == "baseline"
        assert math.isfinite(row["sigma_mad"]) and row["sigma_mad"] > 0, row
        assert math.isfinite(row["train_s"]) and row["train_s"] >= 0, row


def test_rail_rows_have_pdfs_on_zrays_bins(rows):
    for prefix in ("FlexZBoost (RAIL", "RAIL kNN"):
        row = _find(rows, prefix)
        assert row["crps"] is not None and math.isfinite(row["crps"]) and row["crps"] > 0, row
        assert row["pit_ks"] is not None and math.isfinite(row["pit_ks"]) and 0 <= row["pit_ks"] <= 1, row
    assert rows["gradient boosting on colours + r"]["crps"] is None  # a point estimate only


def _blob(sigma_pix, size=32):
    yy, xx = np.mgrid[:size, :size]
    c = (size - 1) / 2
    blob = np.exp(-0.5 * ((yy - c) ** 2 + (xx - c) ** 2) / sigma_pix**2)
    return np.repeat((100 * blob / blob.sum())[None], 5, axis=0)


def test_morphology_orders_sizes_and_concentrations(bench):
    point, narrow, broad = _blob(0.6), _blob(1.5), _blob(4.0)
    conc, size = bench.morphology(np.stack([point, narrow, broad]).astype(np.float32), PIXEL_SCALE).T
    assert size[2] > size[1] > size[0]
    assert conc[0] > conc[1] > conc[2]
    assert conc[0] == pytest.approx(0.0, abs=0.01)  # all of a point source's flux is within 1.5 arcsec
    assert size[1] == pytest.approx(1.5 * PIXEL_SCALE * np.sqrt(2), rel=0.05)  # rms radius of a 2-d Gaussian


def test_morphology_stays_finite_without_flux(bench):
    rng = np.random.default_rng(0)
    images = np.stack([np.zeros((5, 16, 16)), -np.ones((5, 16, 16)), rng.normal(0, 1, (5, 16, 16)),
                       np.full((5, 16, 16), np.nan)])
    features = bench.morphology(images, PIXEL_SCALE)
    assert features.shape == (4, 2)
    assert np.all(np.isfinite(features))
    assert np.all(features[:, 1] >= 0) and np.all(features[:, 1] <= 3.0)


def test_best_baseline_line_and_ratios(bench):
    rows = [{"name": "constant", "kind": "baseline", "sigma_mad": 0.05},
            {"name": "FlexZBoost", "kind": "baseline", "sigma_mad": 0.016},
            {"name": "gradient boosting", "kind": "baseline", "sigma_mad": 0.018},
            {"name": "zray cnn_phot best trial", "kind": "zray", "sigma_mad": 0.0144},
            {"name": "zray cnn_phot top-3 ensemble", "kind": "zray", "sigma_mad": 0.02}]
    line = bench.compare_to_best_baseline(rows)
    assert line == ("best baseline: FlexZBoost sigma_MAD 0.0160; zray cnn_phot best trial: 0.90x its sigma_MAD; "
                    "zray cnn_phot top-3 ensemble: 1.25x its sigma_MAD")
    assert rows[3]["ratio_to_best_baseline"] == pytest.approx(0.9)
    assert rows[4]["ratio_to_best_baseline"] == pytest.approx(1.25)
    assert rows[3]["best_baseline"] == "FlexZBoost"
    assert "ratio_to_best_baseline" not in rows[1]
    assert bench.compare_to_best_baseline([rows[3]]) == ""  # nothing to compare with


def test_print_table_ends_with_the_comparison(bench, capsys):
    rows = [{"name": "kNN", "kind": "baseline", "sigma_mad": 0.02, "bias": 0.0, "outlier_fraction": 0.01,
             "crps": 0.01, "pit_ks": 0.05, "train_s": 1.0},
            {"name": "zray cnn_phot best trial", "kind": "zray", "sigma_mad": 0.017, "bias": 0.0,
             "outlier_fraction": 0.01, "crps": 0.009, "pit_ks": 0.04, "train_s": 60.0}]
    bench.print_table(rows, 100)
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last == "best baseline: kNN sigma_MAD 0.0200; zray cnn_phot best trial: 0.85x its sigma_MAD"


def test_print_table_gives_the_ensembles_ratio_to_its_best_member_with_its_range(bench, capsys):
    row = {"name": "zray cnn_phot ensemble of 3 seeds", "kind": "zray", "sigma_mad": 0.0145, "bias": 0.0,
           "outlier_fraction": 0.01, "crps": 0.009, "pit_ks": 0.03, "train_s": 60.0,
           "members_sigma_mad": [0.01463, 0.01472, 0.01444], "ensemble_uncalibrated_sigma_mad": 0.01437,
           "ratio_to_best_member": 0.01437 / 0.01444, "ratio_interval": (0.981, 1.009),
           "val_ratio_to_best_member": 1.007,
           "shared": {"correlation": 0.9612, "rows": 3075, "expected_ratio": 0.9870}}
    bench.print_table([row], 3110)
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-2] == (
        "zray cnn_phot ensemble of 3 seeds: its members' sigma_MAD on the test rows 0.01463, 0.01472, 0.01444; "
        "their mean PDF 0.01437 = 0.995x the best member (0.981x-1.009x in 95% of resamples of the test "
        "galaxies; on the validation split: 1.007x)")
    assert lines[-1] == ("  the members' errors correlate at 0.96 on 3,075 test galaxies (outliers aside): an average "
                         "of 3 members so alike narrows the scatter to about 0.987x a member's at best")


def test_missing_packages_exit_with_one_sentence(bench):
    bench.require_bench_packages()  # installed here
    with pytest.raises(SystemExit) as exit_info:
        bench.require_bench_packages({"zray_no_such_module": "pz-rail-nothing"})
    assert str(exit_info.value) == 'the baselines need pz-rail-nothing (not importable here): pip install -e ".[bench]"'

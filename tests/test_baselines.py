"""The reference predictors: checked against an independent computation, kept with the data,
and shown next to every figure zray prints."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from zray import baselines, search
from zray.data import load_arrays, read_manifest
from zray.evaluate import binned_metrics


def _independent(data):
    """The same two predictors written out the slow, obvious way."""
    manifest = read_manifest(data)
    ext = {"u": 4.239, "g": 3.303, "r": 2.285, "i": 1.698, "z": 1.263}  # Schlafly & Finkbeiner 2011
    soft = {"u": 0.14, "g": 0.09, "r": 0.12, "i": 0.18, "z": 0.74}
    radius_px = 3.0 / manifest.pixel_scale

    def colours(split):
        part = load_arrays(data, split)
        n, nb, h, w = part["image"].shape
        mags = np.zeros((n, nb))
        for j, band in enumerate(manifest.bands):
            flux = np.zeros(n)
            for y in range(h):
                for x in range(w):
                    if ((y - (h - 1) / 2) ** 2 + (x - (w - 1) / 2) ** 2) ** 0.5 <= radius_px:
                        flux += part["image"][:, j, y, x]
            b = soft[band]
            mags[:, j] = -2.5 / np.log(10) * (np.arcsinh(flux / (2 * b)) + np.log(b)) + 22.5
            mags[:, j] -= ext[band] * part["ebv"]
        return np.stack([mags[:, j] - mags[:, j + 1] for j in range(nb - 1)], axis=1), part

    train_x, train = colours("train")
    val_x, val = colours("val")
    dist = ((val_x[:, None, :] - train_x[None, :, :]) ** 2).sum(axis=2)
    z_knn = train["z_spec"][np.argsort(dist, axis=1)[:, :10]].mean(axis=1)
    z_const = np.full(len(val_x), np.median(train["z_spec"]))

    def figures(z_phot):
        dz = (z_phot - val["z_spec"]) / (1 + val["z_spec"])
        return {"sigma_mad": 1.4826 * np.median(np.abs(dz - np.median(dz))), "bias": dz.mean(),
                "outlier_fraction": np.mean(np.abs(dz) > 0.05), "n": len(dz)}

    return {"constant": figures(z_const), "knn": figures(z_knn)}, val["id"], {"constant": z_const, "knn": z_knn}


@pytest.fixture()
def data(sim_data, tmp_path):
    copy = tmp_path / "data"
    shutil.copytree(sim_data, copy)
    return copy


def test_baselines_match_an_independent_computation(data):
    table = baselines.ensure(data)
    expected, ids, z = _independent(data)
    for name in ("constant", "knn"):
        got = table["splits"]["val"][name]
        for key, value in expected[name].items():
            assert got[key] == pytest.approx(value, rel=1e-6, abs=1e-9), (name, key)
    # The network must have something to beat: kNN on colours is far better than a constant.
    assert table["splits"]["val"]["knn"]["sigma_mad"] < 0.7 * table["splits"]["val"]["constant"]["sigma_mad"]
    per_galaxy = baselines.predictions(data, ids[::-1])
    np.testing.assert_allclose(per_galaxy["knn"], z["knn"][::-1], rtol=1e-6)
    np.testing.assert_allclose(per_galaxy["constant"], z["constant"][::-1], rtol=1e-6)


def test_baselines_are_kept_with_the_data_and_reused(data):
    baselines.ensure(data)
    stored = data / baselines.BASELINES_FILE
    assert json.loads(stored.read_text())["manifest_hash"] == read_manifest(data).hash
    before = stored.stat().st_mtime_ns
    said = []
    baselines.ensure(data, say=said.append)
    assert said == [] and stored.stat().st_mtime_ns == before  # read, not recomputed
    # Data that changed (another manifest hash) gets them recomputed.
    stored.write_text(json.dumps({**json.loads(stored.read_text()), "manifest_hash": "other"}))
    assert baselines.load(data) is None
    baselines.ensure(data, say=said.append)
    assert len(said) == 1 and baselines.load(data) is not None


def test_read_only_data_still_gets_baselines(data):
    data.chmod(0o555)
    try:
        table = baselines.ensure(data)
    finally:
        data.chmod(0o755)
    assert table["splits"]["val"]["knn"]["n"] > 0
    if not (data / baselines.BASELINES_FILE).exists():  # root can write anyway
        assert not any(p.name.startswith(baselines.BASELINES_FILE) for p in data.iterdir())


def _summary(sigmas: dict[str, float], table) -> dict:
    trials = [{"trial": t, "status": "complete", "epochs": 2, "params": {}, "error": "",
               "best": {"val_sigma_mad": s, "val_bias": 0.0, "val_outlier_fraction": 0.1},
               "best_checkpoint": f"/c/{t}"} for t, s in sigmas.items()]
    ranked = sorted(trials, key=lambda r: r["best"]["val_sigma_mad"])
    return {"experiment": "/x", "num_samples": len(trials), "metric": "val_sigma_mad", "mode": "min",
            "trials": trials, "ranked": ranked, "best": ranked[0],
            "best_checkpoint": ranked[0]["best_checkpoint"], "baselines": table}


def test_summary_shows_both_baselines_and_flags_a_trial_that_learned_nothing(data):
    table = baselines.ensure(data)
    constant = table["splits"]["val"]["constant"]["sigma_mad"]
    knn = table["splits"]["val"]["knn"]["sigma_mad"]
    text = search.format_summary(_summary({"good": 0.5 * constant, "useless": 1.01 * constant}, table))
    assert "constant (training median z" in text and "kNN(10) on aperture colours" in text
    assert f"{constant:.4f}" in text and f"{knn:.4f}" in text
    assert f"best trial's sigma_mad: 0.50x the constant predictor's, {0.5 * constant / knn:.2f}x the kNN's" in text
    assert "no better than the constant predictor: useless" in text
    only_bad = search.format_summary(_summary({"useless": 1.2 * constant}, table))
    assert "NO BETTER THAN THE CONSTANT PREDICTOR" in only_bad
    # Between the two: learned something, but the colour fit is still better, and the user is told what helps.
    n = table["splits"]["val"]["knn"]["n"]
    noise = baselines.sigma_mad_noise(n)
    assert noise == pytest.approx(1.17 / np.sqrt(n))
    # Below the constant by less than a sigma_MAD on these galaxies can tell: not a network that
    # learned something (whatever it does against the kNN), and said so in capitals.
    unclear = baselines.compare((1 - 0.5 * noise) * constant, table)
    assert (f"NOT CLEARLY BETTER THAN THE CONSTANT PREDICTOR: on {n:,} galaxies a sigma_MAD is uncertain by about "
            f"{noise:.0%}, so the network may have learned nothing") in unclear
    assert "level with" not in unclear and "still does better" not in unclear
    behind = 1 + 1.5 * noise
    between = search.format_summary(_summary({"middling": behind * knn}, table))
    assert f"{behind:.2f}x the kNN's -- the colour kNN still does better" in between
    assert "more training galaxies" in between
    # Closer to the kNN than a sigma_MAD on these galaxies can tell: level, on either side, not "better".
    for ratio in (1 + 0.5 * noise, 1 - 0.5 * noise):
        level = search.format_summary(_summary({"close": ratio * knn}, table))
        assert f"level with the colour kNN: on {n:,} galaxies a sigma_MAD is uncertain by about {noise:.0%}" in level
        assert "still does better" not in level and "more training galaxies" in level
    ahead = search.format_summary(_summary({"fine": (1 - 1.5 * noise) * knn}, table))
    assert "still does better" not in ahead and "level with" not in ahead
    # A diverged run's NaN is placed against nothing; a table without its galaxy count claims no noise.
    assert baselines.compare(float("nan"), table) == "nan -- not a number: the run diverged, nothing to compare"
    uncounted = {"splits": {"val": {k: {**v, "n": 0} for k, v in table["splits"]["val"].items()}}}
    assert "level with" not in baselines.compare(1.05 * knn, uncounted)
    assert "still does better" in baselines.compare(1.05 * knn, uncounted)


def test_binned_metrics_carry_the_baselines_per_bin():
    from zray.bins import RedshiftBins

    rng = np.random.default_rng(0)
    z = rng.uniform(0.02, 0.3, 400)
    bins = RedshiftBins()
    pdf = np.full((400, bins.n_bins), 1.0 / bins.n_bins)
    ref = {"constant": np.full(400, 0.1), "knn": z + rng.normal(0, 0.01, 400)}
    rows = binned_metrics(z, z, z + 0.001, pdf, bins, np.array([0.0, 0.1, 0.4]), ref)
    low = z < 0.1
    d = (0.1 - z[low]) / (1 + z[low])
    assert rows[0]["sigma_mad_constant"] == pytest.approx(1.4826 * np.median(np.abs(d - np.median(d))))
    assert rows[0]["outlier_fraction_constant"] == pytest.approx(np.mean(np.abs(d) > 0.05))
    assert rows[1]["sigma_mad_knn"] < rows[1]["sigma_mad_constant"]


def test_a_dataset_with_its_baselines_is_still_zrays_to_overwrite(tmp_path):
    """The reference predictors are written into the dataset after it was published:
    `zray simulate --overwrite` still recognises the folder as its own."""
    from click.testing import CliRunner

    from zray.cli import main
    from zray.data.simulate import simulate

    out = tmp_path / "data"
    simulate(out, 120, size=16, seed=0, workers=1, rows_per_shard=60, progress=False)
    baselines.ensure(out, say=lambda line: None)
    assert (out / baselines.BASELINES_FILE).is_file()
    result = CliRunner().invoke(main, ["simulate", "--n", "60", "--size", "16", "--out", str(out), "--overwrite"])
    assert result.exit_code == 0, result.output
    assert read_manifest(out).rows["train"] + read_manifest(out).rows["val"] + read_manifest(out).rows["test"] == 60

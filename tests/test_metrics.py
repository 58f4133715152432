"""Photo-z metrics against values worked out by hand on small arrays."""

from __future__ import annotations

import numpy as np
import pytest

from zray import metrics
from zray.bins import RedshiftBins

BINS = RedshiftBins(0.0, 0.4, 4)  # width 0.1; centres 0.05, 0.15, 0.25, 0.35
W = 0.1


def _delta(k: int, n: int = 4) -> np.ndarray:
    pdf = np.zeros(n)
    pdf[k] = 1.0
    return pdf


def test_point_estimates_of_a_one_bin_pdf_are_its_centre():
    est = metrics.point_estimates(_delta(1), BINS)
    for key in ("mean", "median", "mode"):
        assert est[key] == pytest.approx([0.15])
    assert est["std"] == pytest.approx([0.0])
    # uniform within the bin: the 68.27% interval is that fraction of the bin around the centre
    assert est["lo68"] == pytest.approx([0.1 + 0.158655254 * W])
    assert est["hi68"] == pytest.approx([0.1 + 0.841344746 * W])


def test_point_estimates_of_a_two_bin_pdf():
    pdf = np.array([[0.0, 0.75, 0.25, 0.0]])
    est = metrics.point_estimates(pdf, BINS)
    assert est["mean"] == pytest.approx([0.75 * 0.15 + 0.25 * 0.25])  # 0.175
    assert est["mode"] == pytest.approx([0.15])
    assert est["median"] == pytest.approx([0.1 + (0.5 / 0.75) * W])  # 0.1667
    assert est["std"] == pytest.approx([np.sqrt(0.75 * 0.025**2 + 0.25 * 0.075**2)])


def test_unnormalised_rows_are_renormalised_and_empty_bins_skipped():
    est = metrics.point_estimates(np.array([[2.0, 0.0, 0.0, 2.0]]), BINS)
    assert est["median"] == pytest.approx([0.1])  # the CDF reaches 0.5 at the end of bin 0
    assert est["mean"] == pytest.approx([0.2])


def test_dz_and_scatter_statistics():
    d = metrics.dz([0.11, 0.2], [0.1, 0.25])
    np.testing.assert_allclose(d, [0.01 / 1.1, -0.05 / 1.25])
    dz = np.array([-0.02, -0.01, 0.0, 0.01, 0.10])
    assert metrics.bias_mean(dz) == pytest.approx(0.016)
    assert metrics.bias_median(dz) == pytest.approx(0.0)
    # |dz - 0| = 0.02, 0.01, 0, 0.01, 0.10 -> median 0.01
    assert metrics.sigma_mad(dz) == pytest.approx(1.4826 * 0.01)
    assert metrics.outlier_fraction(dz) == pytest.approx(0.2)
    assert metrics.outlier_fraction(dz, threshold=0.015) == pytest.approx(0.4)
    # numpy's linear percentiles: q25 = -0.01, q75 = 0.01
    assert metrics.sigma_iqr(dz) == pytest.approx(0.02 / 1.349)
    # threshold max(0.06, 3 * 0.0148) = 0.06: only 0.10 is out
    assert metrics.rail_outlier_rate(dz) == pytest.approx(0.2)


def test_rail_threshold_grows_with_the_scatter():
    dz = np.array([-0.3, -0.1, 0.0, 0.1, 0.3])  # sigma_IQR = 0.2/1.349; 3x = 0.445
    assert metrics.rail_outlier_rate(dz) == 0.0
    assert metrics.outlier_fraction(dz) == pytest.approx(0.8)


def test_pit_interpolates_within_the_bin():
    pdf = np.stack([_delta(1)] * 5)
    z = [0.125, 0.15, 0.05, 0.3, 0.45]
    np.testing.assert_allclose(metrics.pit(pdf, BINS, z), [0.25, 0.5, 0.0, 1.0, 1.0])
    two = np.array([[0.0, 0.5, 0.5, 0.0]])
    assert metrics.pit(two, BINS, [0.23]) == pytest.approx([0.5 + 0.5 * 0.3])
    assert metrics.pit(two, BINS, [-0.1]) == pytest.approx([0.0])


def test_crps_of_a_one_bin_pdf():
    # F rises linearly over the bin; at its centre the CRPS is 2 * integral_0^{w/2} (x/w)^2 = w/12
    assert metrics.crps(_delta(1), BINS, [0.15]) == pytest.approx(W / 12)
    # at the bin's lower edge: integral_0^w (1 - x/w)^2 = w/3
    assert metrics.crps(_delta(1), BINS, [0.1]) == pytest.approx(W / 3)
    # z_spec 0.1 above the bin adds 0.1 of F = 1 to the in-bin w/3
    assert metrics.crps(_delta(1), BINS, [0.3]) == pytest.approx(W / 3 + 0.1)
    # outside the binned range entirely
    assert metrics.crps(_delta(3), BINS, [0.5]) == pytest.approx(W / 3 + 0.1)


def test_crps_matches_numerical_integration():
    rng = np.random.default_rng(1)
    bins = RedshiftBins(0.0, 0.4, 20)
    pdf = rng.random((3, 20))
    z_spec = np.array([0.033, 0.2, 0.391])
    grid = np.linspace(0.0, 0.4, 400_001)
    p = pdf / pdf.sum(axis=1, keepdims=True)
    cdf_edges = np.concatenate([np.zeros((3, 1)), np.cumsum(p, axis=1)], axis=1)
    expected = []
    for i in range(3):
        f = np.interp(grid, bins.edges, cdf_edges[i])
        h = (grid >= z_spec[i]).astype(float)
        expected.append(np.trapezoid((f - h) ** 2, grid))
    np.testing.assert_allclose(metrics.crps_values(pdf, bins, z_spec), expected, rtol=1e-4)


def test_pit_ks():
    assert metrics.pit_ks([0.5]) == pytest.approx(0.5)
    assert metrics.pit_ks([0.125, 0.375, 0.625, 0.875]) == pytest.approx(0.125)
    assert metrics.pit_ks([0.0, 0.0]) == pytest.approx(1.0)


def test_summary_of_perfect_one_bin_pdfs():
    z = np.array([0.05, 0.15, 0.25, 0.35])
    pdf = np.eye(4)
    s = metrics.summary(pdf, BINS, z)
    assert s["n"] == 4
    for key in ("sigma_mad", "bias_mean", "bias_median", "outlier_fraction", "rail_outlier_rate"):
        assert s[key] == pytest.approx(0.0, abs=1e-12)
    assert s["crps"] == pytest.approx(W / 12)
    assert s["pit_ks"] == pytest.approx(0.5)  # every PIT is 0.5


def test_summary_point_choice_changes_dz():
    pdf = np.array([[0.0, 0.75, 0.25, 0.0]])
    assert metrics.summary(pdf, BINS, [0.15], point="mode")["bias_mean"] == pytest.approx(0.0)
    assert metrics.summary(pdf, BINS, [0.15], point="mean")["bias_mean"] == pytest.approx(
        0.025 / 1.15
    )
    with pytest.raises(ValueError, match="point must be one of"):
        metrics.summary(pdf, BINS, [0.15], point="max")


def test_wrong_number_of_bins_is_refused():
    with pytest.raises(ValueError, match="pdf has 3 bins; expected 4"):
        metrics.point_estimates(np.ones(3), BINS)


def test_95_interval_and_odds_worked_by_hand():
    est = metrics.point_estimates(_delta(1), BINS)
    # uniform within bin 1: the central 95% runs from 2.5% to 97.5% of the bin
    assert est["lo95"] == pytest.approx([0.1 + 0.025 * W])
    assert est["hi95"] == pytest.approx([0.1 + 0.975 * W])
    # mode 0.15, window 0.03 * 1.15 = 0.0345 each side, all inside bin 1: 0.069 of its 0.1 width
    assert est["odds"] == pytest.approx([2 * metrics.ODDS_WINDOW * 1.15 / W])
    # a flat PDF over the 4 bins: the mode is the first centre 0.05, window [0.0185, 0.0815]
    flat = metrics.point_estimates(np.ones(4), BINS)
    assert flat["odds"] == pytest.approx([2 * metrics.ODDS_WINDOW * 1.05 / 0.4])
    # a clean peak has higher odds than a double peak with the same mode
    fine = RedshiftBins()
    peak = np.exp(-0.5 * ((fine.centres - 0.2) / 0.005) ** 2)
    double = peak + 0.8 * np.exp(-0.5 * ((fine.centres - 0.32) / 0.005) ** 2)
    odds = metrics.point_estimates(np.stack([peak, double]), fine)["odds"]
    assert odds[0] > 0.99 and odds[1] < 0.6


def test_random_draws_follow_the_pdf_and_do_not_depend_on_batching():
    fine = RedshiftBins()
    pdf = np.exp(-0.5 * ((fine.centres - 0.15) / 0.02) ** 2) + 0.5 * np.exp(-0.5 * ((fine.centres - 0.3) / 0.01) ** 2)
    n = 20_000
    ids = np.arange(n) * 7 + 3
    draws = metrics.random_draws(np.tile(pdf, (n, 1)), fine, ids)
    # the draws' empirical CDF is the PDF's CDF (a Kolmogorov-Smirnov distance of a uniform sample)
    u = np.sort(metrics.cdf(np.tile(pdf, (n, 1)), fine, draws))
    assert metrics.pit_ks(u) < 1.63 / np.sqrt(n)  # the 1% critical value
    # the same galaxy keeps its draw in any batch, in any order; another seed changes it
    again = np.concatenate([metrics.random_draws(np.tile(pdf, (k, 1)), fine, part)
                            for part in np.array_split(ids[::-1], 7) for k in [len(part)]])
    assert np.array_equal(again, draws[::-1])
    assert not np.allclose(metrics.random_draws(np.tile(pdf, (n, 1)), fine, ids, seed=1), draws)


def test_every_ranking_metric_follows_from_its_per_galaxy_figures():
    """What the ensemble's resampling reads (row_figures, FROM_ROW_FIGURES) gives, on all the
    galaxies, exactly the validation figures training reports."""
    bins = RedshiftBins(0.0, 0.4, 40)
    rng = np.random.default_rng(3)
    pdf = rng.gamma(0.5, size=(300, 40))
    z = rng.uniform(0.0, 0.4, 300)
    figures, reported = metrics.row_figures(pdf, bins, z), metrics.validation_metrics(pdf, bins, z)
    assert set(metrics.FROM_ROW_FIGURES) == set(metrics.VALIDATION_METRICS)
    for metric, (key, of) in metrics.FROM_ROW_FIGURES.items():
        assert len(figures[key]) == 300
        assert of(figures[key]) == pytest.approx(reported[metric], rel=1e-12), metric

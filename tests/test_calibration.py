"""One temperature fixes over- and under-dispersed PDFs (no Ray, no TensorFlow)."""

from __future__ import annotations

import numpy as np
import pytest

from zray.bins import RedshiftBins
from zray.calibration import fit_temperature, report, temper
from zray.metrics import pit, pit_ks

BINS = RedshiftBins()


def _toy(width_factor: float, n: int = 4000, err: float = 0.01, seed: int = 0):
    """Gaussian PDFs centred on a noisy estimate whose true error is ``err``,
    drawn ``width_factor`` times too wide (>1) or too narrow (<1)."""
    rng = np.random.default_rng(seed)
    z = rng.uniform(0.05, 0.3, n)
    centre = z + rng.normal(0, err, n)
    c = BINS.centres
    pdf = np.exp(-0.5 * ((c[None, :] - centre[:, None]) / (width_factor * err)) ** 2)
    return pdf / pdf.sum(axis=1, keepdims=True), z


def test_temper_sharpens_and_widens_and_keeps_rows_normalised():
    pdf = np.array([[0.5, 0.25, 0.25]])
    np.testing.assert_allclose(temper(pdf, 0.5), [[4 / 6, 1 / 6, 1 / 6]])
    np.testing.assert_allclose(temper(pdf, 1.0), pdf)
    wide = temper(pdf, 4.0)
    assert wide[0, 0] < 0.5 and wide.sum() == pytest.approx(1.0)


@pytest.mark.parametrize("width_factor", [3.0, 0.5])
def test_a_miscalibrated_toy_pdf_is_fixed(width_factor):
    pdf, z = _toy(width_factor)
    before = pit_ks(pit(pdf, BINS, z))
    assert before > 0.1  # the hump (too wide) or the U (too narrow) is there
    t = fit_temperature(pdf, BINS, z)
    # A Gaussian of width w tempered by T has width w * sqrt(T): the right T is 1/factor^2
    # (the bins add a little width, so a narrow toy needs slightly more).
    assert t == pytest.approx(1 / width_factor**2, rel=0.25)
    after = pit_ks(pit(temper(pdf, t), BINS, z))
    assert after < 0.05 and after < before / 3
    rec = report(pdf, BINS, z, t)
    assert rec["pit_ks_before"] == pytest.approx(before) and rec["pit_ks_after"] == pytest.approx(after)
    assert rec["nll_after"] < rec["nll_before"]

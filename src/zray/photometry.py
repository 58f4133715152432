"""Aperture photometry measured from the cutouts themselves.

Used twice, with one definition: by the reference kNN predictor
(:mod:`zray.baselines`, in numpy) and by the ``cnn_phot`` model's photometry
branch (in TensorFlow, inside the network, so training and ``zray predict``
measure it identically and the user never supplies catalogue magnitudes).

Fluxes are summed in a centred circle of 3 arcsec radius (the SDSS fibre's,
about the size of a Main Galaxy Sample galaxy's core), turned into SDSS asinh
magnitudes (Lupton et al. 1999, with SDSS's softening per band) and
dereddened with E(B-V) and the Schlafly & Finkbeiner 2011 coefficients.
"""

from __future__ import annotations

import numpy as np

from zray.data.population import EXTINCTION_R
from zray.data.shards import BANDS, PIXEL_SCALE

__all__ = ["APERTURE_ARCSEC", "SOFTENING", "aperture_mask", "aperture_magnitudes", "colours"]

APERTURE_ARCSEC = 3.0
# SDSS asinh softening b per band (nanomaggies): keeps faint u-band fluxes finite.
SOFTENING = dict(zip(BANDS, (0.14, 0.09, 0.12, 0.18, 0.74)))


def aperture_mask(height: int, width: int, pixel_scale: float = PIXEL_SCALE) -> np.ndarray:
    """(H, W) boolean mask of the centred aperture."""
    yy, xx = np.mgrid[:height, :width]
    radius = np.hypot(yy - (height - 1) / 2, xx - (width - 1) / 2)
    return radius <= APERTURE_ARCSEC / pixel_scale


def asinh_magnitudes(flux, bands=BANDS):
    """SDSS asinh magnitudes of fluxes in nanomaggies, (..., bands)."""
    b = np.array([SOFTENING[x] for x in bands])
    return 22.5 - 2.5 / np.log(10) * (np.arcsinh(np.asarray(flux) / (2 * b)) + np.log(b))


def aperture_magnitudes(images: np.ndarray, ebv: np.ndarray, pixel_scale: float = PIXEL_SCALE,
                        bands=BANDS) -> np.ndarray:
    """(N, bands) dereddened asinh magnitudes of raw cutouts (N, bands, H, W) in nanomaggies."""
    images = np.asarray(images, dtype=np.float64)
    mask = aperture_mask(*images.shape[-2:], pixel_scale=pixel_scale)
    flux = (images * mask).sum(axis=(-2, -1))
    extinction = np.outer(np.asarray(ebv, dtype=np.float64), [EXTINCTION_R[x] for x in bands])
    return asinh_magnitudes(flux, bands) - extinction


def colours(mags: np.ndarray) -> np.ndarray:
    """Adjacent-band colours (u-g, g-r, r-i, i-z) from (N, 5) magnitudes."""
    return -np.diff(mags, axis=-1)

"""Drawing one galaxy's five-band cutout with GalSim, plus SDSS-depth noise.

Runs inside worker processes: it only needs the per-galaxy parameters (a
dict of equal-length arrays), the stamp size and the seed. Each galaxy's noise
comes from a generator seeded by (seed, id), so images do not depend on which
worker draws them or in what order.
"""

from __future__ import annotations

import functools

import numpy as np

from zray.data.population import EXTINCTION_R, SEEING_FWHM
from zray.data.shards import BANDS, PIXEL_SCALE

MOFFAT_BETA = 3.5
# 5-sigma point-source depths (AB) and dark-sky brightness (AB mag/arcsec^2).
DEPTH_5SIGMA = dict(zip(BANDS, (22.15, 23.13, 22.70, 22.20, 20.71)))
SKY_MAG_ARCSEC2 = dict(zip(BANDS, (22.1, 21.9, 20.9, 20.2, 18.9)))


def nanomaggies(mag) -> np.ndarray:
    """AB magnitude to nanomaggies (22.5 mag = 1 nMgy), SDSS's image unit."""
    return 10.0 ** (-0.4 * (np.asarray(mag, dtype=np.float64) - 22.5))


@functools.lru_cache(maxsize=1)
def noise_model() -> dict[str, tuple[float, float]]:
    """Per band: (sky per pixel in nMgy, electrons per nMgy).

    The sky noise is set so a point source at the 5-sigma depth has S/N 5
    under PSF-weighted photometry with the band's median seeing
    (sigma_pix = F5 / (5 sqrt(NEA)), NEA = 1 / sum(psf^2)); the gain then
    follows from sky = gain * sigma_pix^2, which also fixes source shot noise.
    """
    import galsim

    out = {}
    for b in BANDS:
        psf = galsim.Moffat(beta=MOFFAT_BETA, fwhm=SEEING_FWHM[b])
        p = psf.drawImage(nx=64, ny=64, scale=PIXEL_SCALE).array
        nea = 1.0 / float((p**2).sum())
        sigma_pix = nanomaggies(DEPTH_5SIGMA[b]) / (5.0 * np.sqrt(nea))
        sky = nanomaggies(SKY_MAG_ARCSEC2[b]) * PIXEL_SCALE**2
        out[b] = (float(sky), float(sky / sigma_pix**2))
    return out


@functools.lru_cache(maxsize=1)
def _gsparams():
    import galsim

    # Looser than GalSim's defaults: errors well below the noise, 2-4x faster.
    return galsim.GSParams(folding_threshold=1e-2, maxk_threshold=2e-3)


def galaxy_rng(seed: int, gal_id: int) -> np.random.Generator:
    mask = 0xFFFFFFFFFFFFFFFF
    return np.random.default_rng(np.random.SeedSequence([int(seed) & mask, int(gal_id) & mask, 2]))


def galaxy_profile(p: dict):
    """The galaxy of one parameter row as a GalSim profile of unit flux, in arcsec on the sky
    (bulge + disk, sheared and turned by ``angle_deg``), before the seeing."""
    import galsim

    gsp = _gsparams()
    angle = float(p["angle_deg"]) * galsim.degrees
    bt = float(p["bulge_frac"])
    parts = []
    if bt > 0:
        rb = float(p["bulge_r50_arcsec"])
        bulge = galsim.DeVaucouleurs(half_light_radius=rb, flux=bt, trunc=8 * rb, gsparams=gsp)
        parts.append(bulge.shear(q=float(p["bulge_q"]), beta=angle))
    if bt < 1:
        disk = galsim.Exponential(half_light_radius=float(p["disk_r50_arcsec"]), flux=1 - bt, gsparams=gsp)
        parts.append(disk.shear(q=float(p["disk_q"]), beta=angle))
    return galsim.Add(parts) if len(parts) > 1 else parts[0]


def band_profile(p: dict, k: int, galaxy=None):
    """Band ``k``'s image of the galaxy as GalSim draws it: the profile at the band's
    reddened flux in nanomaggies, convolved with the band's Moffat seeing.

    The one definition shared by the direct cutouts (:func:`render_galaxy`) and
    the survey frames (:mod:`zray.data.frames`), so a galaxy in a frame and its
    direct cutout come from the same profile."""
    import galsim

    b = BANDS[k]
    galaxy = galaxy_profile(p) if galaxy is None else galaxy
    flux = nanomaggies(p["mags"][k] + EXTINCTION_R[b] * p["ebv"])
    psf = galsim.Moffat(beta=MOFFAT_BETA, fwhm=float(p[f"psf_fwhm_{b}"]), gsparams=_gsparams())
    return galsim.Convolve(galaxy * float(flux), psf)


def add_noise(img: np.ndarray, band: str, rng: np.random.Generator) -> np.ndarray:
    """``img`` (sky-subtracted nanomaggies) plus the sky's and the source's noise of ``band``."""
    sky, gain = noise_model()[band]
    var = (sky + np.maximum(img, 0.0)) / gain
    return img + rng.standard_normal(img.shape) * np.sqrt(var)


def render_galaxy(p: dict, size: int, seed: int, noise: bool = True) -> np.ndarray:
    """(5, size, size) float32 image in nanomaggies of one galaxy with noise
    (``noise=False``: the noise-free image, for comparisons).

    ``p`` holds scalars: id, mags (5,), ebv, bulge_frac, bulge/disk r50 and
    axis ratios, angle_deg, dx_pix, dy_pix, psf_fwhm_{band}.
    """
    galaxy = galaxy_profile(p)
    rng = galaxy_rng(seed, p["id"])
    out = np.empty((len(BANDS), size, size), dtype=np.float32)
    offset = (float(p["dx_pix"]), float(p["dy_pix"]))
    for k, b in enumerate(BANDS):
        img = band_profile(p, k, galaxy).drawImage(nx=size, ny=size, scale=PIXEL_SCALE, offset=offset).array
        out[k] = add_noise(img, b, rng) if noise else img
    return out


def render_chunk(params: dict[str, np.ndarray], size: int, seed: int) -> np.ndarray:
    """Render every galaxy of a chunk (a dict of arrays) into (n, 5, size, size)."""
    n = len(params["id"])
    out = np.empty((n, len(BANDS), size, size), dtype=np.float32)
    for i in range(n):
        out[i] = render_galaxy({k: v[i] for k, v in params.items()}, size, seed)
    return out

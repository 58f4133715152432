"""Drawing the physical parameters of an SDSS Main-Galaxy-Sample-like population.

Everything here is vectorised numpy driven by one generator seeded in the
driver, so the catalogue (and therefore every image) depends only on the seed,
never on how many processes later render it.

Facts used (docs/architecture.md, section 8):
- Luminosity function: Blanton et al. (2003) r-band Schechter, M* - 5 log h =
  -20.44, alpha = -1.05, with luminosity evolution Q = 1.6 mag per unit z.
- Selection: 14.5 < r < 17.77 after extinction correction, z < 0.4, in a
  volume-weighted flat LCDM (H0=70, Om0=0.3) universe.
- Red fraction rising with luminosity; red galaxies near the E template,
  blue ones spread between Sbc and Im.
- Sizes: Shen et al. (2003) size-luminosity relations (early and late types)
  with their luminosity-dependent log-normal scatter; angles via the
  angular-diameter distance.
- Seeing: SDSS median FWHM per band, one field factor per galaxy.
- E(B-V): log-normal, median 0.03; A_b = R_b E(B-V) with Schlafly &
  Finkbeiner (2011) coefficients for SDSS.
"""

from __future__ import annotations

import functools

import numpy as np

from zray.data.shards import BANDS
from zray.data.templates import TEMPLATES, colour_grid

R_MAG_LIMIT = 17.77
R_MAG_BRIGHT = 14.5
Z_MAX = 0.4
Z_MIN = 0.005
H0, OM0 = 70.0, 0.3
M_STAR = -20.44 + 5 * np.log10(H0 / 100.0)
ALPHA = -1.05
Q_EVOLUTION = 1.6
M_RANGE = (-24.0, -15.5)
SEEING_FWHM = dict(zip(BANDS, (1.53, 1.44, 1.32, 1.26, 1.29)))  # arcsec, SDSS medians
EXTINCTION_R = dict(zip(BANDS, (4.239, 3.303, 2.285, 1.698, 1.263)))  # SF11, R_V = 3.1
EBV_MEDIAN, EBV_SIGMA_LN = 0.03, 0.6
COLOUR_SCATTER = 0.015  # mag per band beyond the template mix; with it a kNN on colours gets sigma_MAD ~0.018


@functools.lru_cache(maxsize=1)
def _distances():
    """Distance modulus, angular-diameter distance (kpc) and dV/dz on a z grid."""
    from astropy.cosmology import FlatLambdaCDM

    cosmo = FlatLambdaCDM(H0=H0, Om0=OM0)
    z = np.linspace(0.0, Z_MAX + 0.05, 2001)[1:]
    dm = cosmo.distmod(z).value
    da_kpc = cosmo.angular_diameter_distance(z).to("kpc").value
    dvdz = cosmo.differential_comoving_volume(z).value
    return z, dm, da_kpc, dvdz


def distance_modulus(z) -> np.ndarray:
    zg, dm, _, _ = _distances()
    return np.interp(z, zg, dm)


def arcsec_per_kpc(z) -> np.ndarray:
    zg, _, da, _ = _distances()
    return 206264.806 / np.interp(z, zg, da)


def _schechter_mags(rng, n: int) -> np.ndarray:
    """Absolute magnitudes from the Schechter function by rejection on M_RANGE."""
    out = np.empty(0)
    lo, hi = M_RANGE
    x = 10 ** (-0.4 * (np.linspace(lo, hi, 400) - M_STAR))
    peak = (x ** (ALPHA + 1) * np.exp(-x)).max()
    while out.size < n:
        m = rng.uniform(lo, hi, 2 * n)
        x = 10 ** (-0.4 * (m - M_STAR))
        keep = rng.uniform(0, peak, m.size) < x ** (ALPHA + 1) * np.exp(-x)
        out = np.concatenate([out, m[keep]])
    return out[:n]


def _volume_redshifts(rng, n: int) -> np.ndarray:
    zg, _, _, dvdz = _distances()
    sel = (zg >= Z_MIN) & (zg <= Z_MAX)
    cdf = np.cumsum(dvdz[sel])
    return np.interp(rng.uniform(0, cdf[-1], n), cdf, zg[sel])


def _spectral_types(rng, abs_mag: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(is_red, t): red fraction rises with luminosity; t in [0, 3]."""
    f_red = 0.1 + 0.7 / (1 + np.exp((abs_mag + 20.8) / 0.7))
    red = rng.uniform(size=abs_mag.size) < f_red
    t_red = np.clip(np.abs(rng.normal(0.0, 0.2, abs_mag.size)), 0, 0.8)
    t_blue = rng.uniform(0.9, 3.0, abs_mag.size)
    return red, np.where(red, t_red, t_blue)


def draw_population(n: int, seed: int) -> dict[str, np.ndarray]:
    """Draw ``n`` magnitude-limited galaxies: redshift, type, magnitudes, extinction.

    Draws (z, M) from volume x luminosity function in batches and keeps those
    passing the r-band selection, so the redshift distribution follows from
    the physics rather than being imposed.
    """
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0]))
    grid = colour_grid()
    kept: list[dict[str, np.ndarray]] = []
    have = 0
    batch = max(20_000, 40 * n)
    while have < n:
        z = _volume_redshifts(rng, batch)
        abs_mag = _schechter_mags(rng, batch) - Q_EVOLUTION * (z - 0.1)
        red, t = _spectral_types(rng, abs_mag)
        mags = grid.magnitudes(abs_mag, z, t, distance_modulus(z))
        mags += rng.normal(0.0, COLOUR_SCATTER, mags.shape)
        r = mags[:, BANDS.index("r")]
        sel = (r > R_MAG_BRIGHT) & (r < R_MAG_LIMIT)
        kept.append({"z": z[sel], "abs_mag_r": abs_mag[sel], "t_sed": t[sel], "mags": mags[sel]})
        have += int(sel.sum())
    cat = {k: np.concatenate([b[k] for b in kept])[:n] for k in kept[0]}
    cat["ebv"] = _draw_ebv(rng, n)
    cat.update(draw_morphology(rng, cat["abs_mag_r"], cat["t_sed"], cat["z"]))
    return cat


def _draw_ebv(rng, n: int) -> np.ndarray:
    return np.clip(EBV_MEDIAN * np.exp(rng.normal(0, EBV_SIGMA_LN, n)), 0.0, 0.5)


def population_from_catalog(z, mags, ebv, seed: int) -> dict[str, np.ndarray]:
    """Parameters for given redshifts and dereddened magnitudes; morphology from colour.

    The spectral type is the template mix whose colours at the galaxy's
    redshift best match its magnitudes; that gives the K-correction for the
    absolute magnitude, which sets the size, and the bulge fraction.
    """
    rng = np.random.default_rng(np.random.SeedSequence([seed, 1]))
    z = np.asarray(z, dtype=np.float64)
    mags = np.asarray(mags, dtype=np.float64)
    grid = colour_grid()
    t = grid.best_type(z, mags)
    k_r = grid.colour_terms(z, t)[:, BANDS.index("r")]
    abs_mag = mags[:, BANDS.index("r")] - distance_modulus(z) - k_r
    cat = {"z": z, "abs_mag_r": abs_mag, "t_sed": t, "mags": mags}
    cat["ebv"] = _draw_ebv(rng, z.size) if ebv is None else np.asarray(ebv, dtype=np.float64)
    cat.update(draw_morphology(rng, abs_mag, t, z))
    return cat


def _shen_r50_kpc(rng, abs_mag: np.ndarray, early: np.ndarray) -> np.ndarray:
    """Shen et al. (2003) eqs. 14-18: median R50 and log-normal scatter by type."""
    m0 = -20.52
    log_early = -0.4 * 0.65 * abs_mag - 5.06
    log_late = -0.4 * 0.21 * abs_mag + (0.53 - 0.21) * np.log10(1 + 10 ** (-0.4 * (abs_mag - m0))) - 1.31
    s1, s2 = np.where(early, 0.45, 0.48), np.where(early, 0.27, 0.25)
    sigma_ln = s2 + (s1 - s2) / (1 + 10 ** (-0.8 * (abs_mag - m0)))
    median = 10 ** np.where(early, log_early, log_late)
    return median * np.exp(rng.normal(0, sigma_ln))


def draw_morphology(rng, abs_mag, t, z) -> dict[str, np.ndarray]:
    """Bulge fraction, sizes, axis ratios, angle, centroid offset and seeing per galaxy."""
    n = abs_mag.size
    early = t < 0.9
    bulge_frac = np.clip(0.85 - 0.4 * t + rng.normal(0, 0.1, n), 0.0, 1.0)
    r50_kpc = np.clip(_shen_r50_kpc(rng, abs_mag, early), 0.3, 40.0)
    r50 = r50_kpc * arcsec_per_kpc(z)
    field = np.exp(rng.normal(0.0, 0.12, n))
    out = {
        "type": np.array(TEMPLATES)[np.clip(np.rint(t).astype(int), 0, 3)],
        "red": early,
        "bulge_frac": bulge_frac,
        "r50_kpc": r50_kpc,
        "r50_arcsec": r50,
        "bulge_r50_arcsec": r50 * (0.5 + 0.5 * bulge_frac),
        "disk_r50_arcsec": r50 * (1.0 + 0.3 * bulge_frac),
        "bulge_q": rng.uniform(0.55, 1.0, n),
        "disk_q": rng.uniform(0.2, 1.0, n),
        "angle_deg": rng.uniform(0, 180, n),
        "dx_pix": rng.uniform(-0.5, 0.5, n),
        "dy_pix": rng.uniform(-0.5, 0.5, n),
    }
    for b in BANDS:
        out[f"psf_fwhm_{b}"] = SEEING_FWHM[b] * field
    return out

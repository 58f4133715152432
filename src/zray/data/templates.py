"""Galaxy colours versus redshift from GalSim's CWW templates and speclite's SDSS filters.

Synthetic photometry is done once on a redshift grid (about a second) and
interpolated afterwards, because integrating a redshifted SED through five
filters per galaxy would dominate the simulator's run time.

A galaxy's spectral type is a continuous number ``t`` in [0, 3]: 0 is the
elliptical (E) template, 1 Sbc, 2 Scd, 3 Im; magnitudes between templates are
interpolated linearly, which spreads colours continuously between them as in
real samples instead of four discrete tracks.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass

import numpy as np

from zray.data.shards import BANDS

TEMPLATES = ("E", "Sbc", "Scd", "Im")
FILTERS = tuple(f"sdss2010-{b}" for b in BANDS)
Z_GRID_MAX = 0.5
Z_GRID_STEP = 0.0025


@dataclass(frozen=True)
class ColourGrid:
    """``offsets[t, k, b]``: apparent AB mag in band b of template t at ``z[k]``,
    minus its rest-frame r magnitude, without distance modulus.

    So for a galaxy of rest-frame absolute magnitude ``M_r`` the apparent
    magnitude is ``M_r + DM(z) + offsets[t, z, b]`` (the K-correction and the
    colour in one term).
    """

    z: np.ndarray
    offsets: np.ndarray

    def magnitudes(self, abs_mag_r, z, t, dist_mod) -> np.ndarray:
        """(N, 5) apparent dereddened magnitudes for absolute r mag, z, type t, DM."""
        return np.asarray(abs_mag_r)[:, None] + np.asarray(dist_mod)[:, None] + self.colour_terms(z, t)

    def colour_terms(self, z, t) -> np.ndarray:
        """(N, 5) ``offsets`` interpolated bilinearly in redshift and type."""
        z = np.asarray(z, dtype=np.float64)
        t = np.clip(np.asarray(t, dtype=np.float64), 0.0, len(TEMPLATES) - 1)
        lo = np.minimum(np.floor(t).astype(int), len(TEMPLATES) - 2)
        w = (t - lo)[:, None]
        a = self._at_z(lo, z)
        b = self._at_z(lo + 1, z)
        return (1 - w) * a + w * b

    def _at_z(self, template: np.ndarray, z: np.ndarray) -> np.ndarray:
        pos = np.clip(z / Z_GRID_STEP, 0, len(self.z) - 1.000001)
        k = np.floor(pos).astype(int)
        f = (pos - k)[:, None]
        return (1 - f) * self.offsets[template, k] + f * self.offsets[template, k + 1]

    def best_type(self, z, mags) -> np.ndarray:
        """The type t in [0, 3] whose colours at z best match ``mags`` (N, 5).

        Used to give catalogue galaxies a K-correction and a morphology
        consistent with their colours.
        """
        z = np.asarray(z, dtype=np.float64)
        mags = np.asarray(mags, dtype=np.float64)
        colours = -np.diff(mags, axis=1)
        ts = np.linspace(0.0, len(TEMPLATES) - 1, 61)
        best = np.full(len(z), np.inf)
        best_t = np.zeros(len(z))
        for t in ts:
            model = -np.diff(self.colour_terms(z, np.full(len(z), t)), axis=1)
            d = ((colours - model) ** 2).sum(axis=1)
            better = d < best
            best[better], best_t[better] = d[better], t
        return best_t


def template_path(name: str) -> str:
    import galsim

    return os.path.join(galsim.meta_data.share_dir, "SEDs", f"CWW_{name}_ext.sed")


@functools.lru_cache(maxsize=1)
def colour_grid() -> ColourGrid:
    """Synthetic AB photometry of each redshifted template on a z grid (cached)."""
    import galsim
    import speclite.filters

    filters = speclite.filters.load_filters(*FILTERS)
    wave_aa = np.arange(2900.0, 11200.0, 5.0)  # covers all five SDSS filters
    wave_nm = wave_aa / 10.0
    z = np.arange(0.0, Z_GRID_MAX + Z_GRID_STEP / 2, Z_GRID_STEP)
    offsets = np.empty((len(TEMPLATES), len(z), len(BANDS)))
    for t, name in enumerate(TEMPLATES):
        sed = galsim.SED(template_path(name), wave_type="Ang", flux_type="flambda")
        # GalSim's SED is a photon density; photons/lambda is proportional to
        # f_lambda. atRedshift stretches the photon density without changing
        # its amplitude, which is exactly the physical (1+z) dimming of f_nu
        # per unit frequency, so no extra (1+z) term is needed (checked against
        # the textbook K-correction).
        flam = np.stack([sed.atRedshift(zk)(wave_nm) / wave_nm for zk in z])
        table = filters.get_ab_magnitudes(flam, wave_aa)
        mags = np.stack([np.asarray(table[f]) for f in FILTERS], axis=1)
        offsets[t] = mags - mags[0, BANDS.index("r")]
    return ColourGrid(z=z, offsets=offsets)

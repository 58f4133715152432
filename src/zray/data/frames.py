"""``zray simulate --frames``: survey-like frames, one FITS image per band and field.

What ``zray cutouts`` reads, made offline: a mosaic of ``cols`` x ``rows``
fields whose frames overlap by ``overlap`` pixels at their edges, each band's
frame with its own TAN WCS at :data:`~zray.data.shards.PIXEL_SCALE`: shifted
from the r frame by 15 to 40 pixels along each axis (one shift per band, as
the bands of a drift scan are exposed one after another, plus a jitter of up
to 3 pixels per field) and turned by up to 0.5 degrees. Pixels are
sky-subtracted nanomaggies with the sky's and the sources' noise of the
simulator (:func:`zray.data.render.add_noise`), as in SDSS's frame files.

Each galaxy is drawn with the same GalSim profile as the simulator's direct
cutouts (:func:`zray.data.render.band_profile`), through the frame's WCS
linearised at the galaxy (a GalSim ``JacobianWCS``), at its exact position.
Galaxies come from the simulator's population, placed uniformly over the
mosaic, or from a catalogue (``--catalog``: id, z, mag_u..mag_z [, ebv]
[, ra, dec]; without ra/dec they are placed like the simulator's, with them
the mosaic is centred on them).

The folder holds ``frame-BAND-FIELD.fits`` (FILTER, BUNIT, FIELD in the
header), ``catalog.csv`` (id, ra, dec, z_spec, ebv, mag_u..mag_z: what
``zray cutouts`` takes) and ``truth.parquet`` (every galaxy's parameters, to
render it again directly).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from zray.data.progress import Progress
from zray.data.shards import BANDS, PIXEL_SCALE
from zray.data.survey import _unit, sky_to_tan, tan_to_sky
from zray.errors import ZrayError

FRAME_NAME = "frame-{band}-{field:04d}.fits"
CATALOG_NAME = "catalog.csv"
TRUTH_NAME = "truth.parquet"
CENTRE = (150.0, 2.2)  # degrees: where drawn galaxies go (inside the COSMOS field)
BAND_SHIFT_PIX = (15.0, 40.0)
FIELD_JITTER_PIX = 3.0
MAX_ROTATION_DEG = 0.5
STAMP_PIX = (32, 192)  # the stamp each galaxy is drawn on: GalSim's good size, within these


@dataclass(frozen=True)
class Layout:
    """The mosaic: fields on a grid in the plane tangent at (ra0, dec0), ``step`` pixels apart."""

    ra0: float
    dec0: float
    cols: int
    rows: int
    frame_size: int
    overlap: int
    seed: int

    @property
    def step(self) -> int:
        return self.frame_size - self.overlap

    @property
    def n_fields(self) -> int:
        return self.cols * self.rows

    def half_extent_deg(self) -> tuple[float, float]:
        """Half the mosaic's width and height (degrees), before the bands' shifts."""
        s = PIXEL_SCALE / 3600.0
        return ((self.cols * self.step + self.overlap) / 2 * s, (self.rows * self.step + self.overlap) / 2 * s)

    def _draws(self):
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, 7]))
        shift = rng.uniform(*BAND_SHIFT_PIX, (len(BANDS), 2)) * rng.choice([-1.0, 1.0], (len(BANDS), 2))
        shift[BANDS.index("r")] = 0.0
        jitter = rng.uniform(-FIELD_JITTER_PIX, FIELD_JITTER_PIX, (self.n_fields, len(BANDS), 2))
        rotation = rng.uniform(-MAX_ROTATION_DEG, MAX_ROTATION_DEG, (self.n_fields, len(BANDS)))
        return shift, jitter, rotation

    def frame_wcs(self, field: int, k: int):
        """Band ``k``'s frame of ``field``: TAN, east left, turned and shifted (module docstring)."""
        from astropy.wcs import WCS

        shift, jitter, rotation = self._draws()
        col, row = field % self.cols, field // self.cols
        dx = (col - (self.cols - 1) / 2) * self.step + shift[k, 0] + jitter[field, k, 0]
        dy = (row - (self.rows - 1) / 2) * self.step + shift[k, 1] + jitter[field, k, 1]
        s = PIXEL_SCALE / 3600.0
        ra, dec = tan_to_sky(self.ra0, self.dec0, -dx * s, dy * s)
        t = np.radians(rotation[field, k])
        w = WCS(naxis=2)
        w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
        w.wcs.crval = [float(ra), float(dec)]
        w.wcs.crpix = [(self.frame_size + 1) / 2] * 2
        w.wcs.cd = s * np.array([[-np.cos(t), np.sin(t)], [np.sin(t), np.cos(t)]])
        w.wcs.cunit = ["deg", "deg"]
        return w


def _jacobians(w, ra, dec, x, y, h: float = 0.5) -> np.ndarray:
    """(n, 4): du/dx, du/dy, dv/dx, dv/dy in arcsec per pixel at each galaxy, u west and v north
    (GalSim's sky axes, those of the simulator's cutouts and of zray cutouts' grids)."""
    out = np.empty((len(ra), 4))
    for j, (ddx, ddy) in enumerate(((h, 0.0), (0.0, h))):
        ua, va = [], []
        for sign in (1.0, -1.0):
            r, d = w.pixel_to_world_values(x + sign * ddx, y + sign * ddy)
            xi, eta = sky_to_tan(ra, dec, r, d)
            ua.append(-xi * 3600.0)
            va.append(eta * 3600.0)
        out[:, j] = (ua[0] - ua[1]) / (2 * h)
        out[:, 2 + j] = (va[0] - va[1]) / (2 * h)
    return out


def render_frame(header: str, frame_size: int, k: int, params: dict, seed: int, field: int,
                 noise: bool = True) -> np.ndarray:
    """Band ``k``'s frame (frame_size x frame_size float32 nanomaggies) with the galaxies of
    ``params`` (arrays, with ra and dec) that fall on it."""
    import galsim
    from astropy.io import fits
    from astropy.wcs import WCS

    from zray.data.render import add_noise, band_profile

    w = WCS(fits.Header.fromstring(header))
    n = frame_size
    frame = np.zeros((n, n), dtype=np.float64)
    ra, dec = params["ra"], params["dec"]
    if len(ra):
        x, y = w.world_to_pixel_values(ra, dec)
        pad = STAMP_PIX[1] / 2
        near = np.flatnonzero((x > -pad) & (x < n + pad) & (y > -pad) & (y < n + pad))
        jac = _jacobians(w, ra[near], dec[near], x[near], y[near])
        whole = galsim.BoundsI(1, n, 1, n)
        for j, i in enumerate(near):
            p = {key: v[i] for key, v in params.items()}
            profile = band_profile(p, k)
            size = int(np.clip(profile.getGoodImageSize(PIXEL_SCALE), *STAMP_PIX)) // 2 * 2
            ix, iy = int(np.rint(x[i])) + 1, int(np.rint(y[i])) + 1  # GalSim counts from 1
            bounds = galsim.BoundsI(ix - size // 2, ix + size // 2 - 1, iy - size // 2, iy + size // 2 - 1)
            common = bounds & whole
            if not common.isDefined():
                continue
            stamp = galsim.ImageF(bounds, wcs=galsim.JacobianWCS(*jac[j]))
            profile.drawImage(image=stamp, center=galsim.PositionD(x[i] + 1, y[i] + 1))
            frame[common.ymin - 1: common.ymax, common.xmin - 1: common.xmax] += stamp[common].array
    if noise:
        rng = np.random.default_rng(np.random.SeedSequence([int(seed), int(field), k, 3]))
        frame = add_noise(frame, BANDS[k], rng)
    return frame.astype(np.float32)


@dataclass
class FramesReport:
    out: Path
    galaxies: int
    frames: int
    layout: Layout
    on_frames: int  # galaxies whose position is on at least one frame


def _parse_fields(fields) -> tuple[int, int]:
    if isinstance(fields, str):
        parts = fields.lower().split("x")
        ok = len(parts) == 2 and all(p.strip().isdigit() for p in parts)
        if not ok:
            raise ZrayError(f"--fields {fields!r} is not COLSxROWS; expected e.g. 2x2")
        fields = tuple(int(p) for p in parts)
    cols, rows = (int(v) for v in fields)
    if not (1 <= cols <= 64 and 1 <= rows <= 64):
        raise ZrayError(f"--fields {cols}x{rows}: expected 1 to 64 fields each way")
    return cols, rows


def simulate_frames(
    out,
    n: int | None = None,
    *,
    catalog=None,
    fields="2x2",
    frame_size: int = 512,
    overlap: int = 128,
    seed: int = 0,
    workers: int | None = None,
    noise: bool = True,
    centre: tuple[float, float] | None = None,
    overwrite: bool = False,
    progress: bool = True,
    columns=None,
) -> FramesReport:
    """Render the frames, catalogue and truth into the folder ``out`` (module docstring).
    ``columns``: where ``catalog`` keeps zray's columns (:func:`~zray.data.catalog.parse_columns`).

    ``centre`` (ra, dec in degrees): where the mosaic is centred, by default on the
    catalogue's galaxies or at :data:`CENTRE`; ``noise=False`` draws noise-free frames
    (for comparisons with the direct cutouts)."""
    import pyarrow as pa
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    from zray.atomic import check_output, make_parents, publish_dir, remove_parents
    from zray.data.simulate import _catalog_table, catalog_population

    cols, rows = _parse_fields(fields)
    if not 64 <= int(frame_size) <= 8192:
        raise ZrayError(f"--frame-size must be between 64 and 8192 pixels, but got {frame_size!r}")
    if not 0 <= int(overlap) < int(frame_size) // 2:
        raise ZrayError(f"--overlap must be between 0 and half the frame ({int(frame_size) // 2 - 1} pixels), "
                        f"but got {overlap!r}")
    out = Path(out)
    inputs = (Path(catalog),) if catalog is not None else ()
    check_output(out, kind="frames", overwrite=overwrite, inputs=inputs)
    if catalog is not None:
        params = catalog_population(catalog, seed=seed, limit=n, positions=True, columns=columns)
    else:
        from zray.data.population import draw_population

        if n is None or int(n) < 1:
            raise ZrayError(f"--n must be a positive number of galaxies, but got {n!r}")
        params = draw_population(int(n), int(seed))
        params["id"] = np.arange(int(n), dtype=np.int64)
    count = len(params["id"])
    params["dx_pix"] = np.zeros(count)  # a galaxy sits at its catalogue position exactly
    params["dy_pix"] = np.zeros(count)
    if centre is None and "ra" in params:
        ra = params["ra"]
        unwrapped = (ra - ra[0] + 180.0) % 360.0 - 180.0 + ra[0]
        centre = (float(np.median(unwrapped)) % 360.0, float(np.median(params["dec"])))
    layout = Layout(*(centre or CENTRE), cols, rows, int(frame_size), int(overlap), int(seed))
    if "ra" not in params:
        rng = np.random.default_rng(np.random.SeedSequence([int(seed), 5]))
        hx, hy = layout.half_extent_deg()
        params["ra"], params["dec"] = tan_to_sky(layout.ra0, layout.dec0, rng.uniform(-hx, hx, count),
                                                 rng.uniform(-hy, hy, count))
    keys = ("id", "ra", "dec", "mags", "ebv", "bulge_frac", "bulge_r50_arcsec", "disk_r50_arcsec", "bulge_q",
            "disk_q", "angle_deg", "dx_pix", "dy_pix", *(f"psf_fwhm_{b}" for b in BANDS))
    tasks = []
    on = np.zeros(count, dtype=bool)
    s = PIXEL_SCALE / 3600.0
    gal = _unit(params["ra"], params["dec"])
    for field in range(layout.n_fields):
        for k, b in enumerate(BANDS):
            w = layout.frame_wcs(field, k)
            x, y = w.world_to_pixel_values(params["ra"], params["dec"])
            on |= (x >= -0.5) & (x <= frame_size - 0.5) & (y >= -0.5) & (y <= frame_size - 0.5)
            centre = _unit(*w.wcs.crval)
            reach = np.radians((frame_size / np.sqrt(2) + STAMP_PIX[1]) * s)
            near = np.flatnonzero(gal @ centre > np.cos(reach))
            sub = {key: params[key][near] for key in keys}
            tasks.append((FRAME_NAME.format(band=b, field=field), field, k, w.to_header().tostring(), sub))

    made = make_parents(out)
    import secrets
    import shutil

    tmp = out.parent / f".{out.name}.partial-{os.getpid()}-{secrets.token_hex(4)}"
    tmp.mkdir()
    try:
        bar = Progress("frames", len(tasks), unit="frames", enabled=progress)
        for (name, field, k, header, _), image in zip(tasks, _render_all(tasks, frame_size, seed, noise, workers)):
            _write_frame(tmp / name, image, header, BANDS[k], field, noise)
            bar.update(1)
        z = params["z"]
        table = {"id": pa.array(params["id"]), "ra": params["ra"], "dec": params["dec"],
                 "z_spec": z, "ebv": params["ebv"]}
        table.update({f"mag_{b}": params["mags"][:, k] for k, b in enumerate(BANDS)})
        pcsv.write_csv(pa.table(table).sort_by("id"), tmp / CATALOG_NAME)
        truth = _catalog_table(params)
        truth = truth.append_column("ra", pa.array(params["ra"])).append_column("dec", pa.array(params["dec"]))
        pq.write_table(truth, tmp / TRUTH_NAME)
        check_output(out, kind="frames", overwrite=overwrite, inputs=inputs)
        publish_dir(tmp, out, kind="frames")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if not out.exists():
            remove_parents(made)
        raise
    return FramesReport(out, count, len(tasks), layout, int(on.sum()))


def _write_frame(path: Path, image: np.ndarray, header: str, band: str, field: int, noise: bool) -> None:
    from astropy.io import fits

    h = fits.Header.fromstring(header)
    h["FILTER"] = (band, "band")
    h["BUNIT"] = ("nanomaggy", "sky-subtracted; 22.5 AB mag = 1 nanomaggy")
    h["FIELD"] = (field, "field number")
    h["NOISE"] = (bool(noise), "sky and source noise added")
    h["ORIGIN"] = "zray simulate --frames"
    fits.PrimaryHDU(image, header=h).writeto(path)


def _render_all(tasks, frame_size: int, seed: int, noise: bool, workers: int | None):
    workers = max(1, min(int(workers or os.cpu_count() or 1), len(tasks)))
    if workers == 1:
        for _, field, k, header, sub in tasks:
            yield render_frame(header, frame_size, k, sub, seed, field, noise)
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    ctx = multiprocessing.get_context("spawn")  # not fork: the driver may run Ray or TensorFlow threads
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        futures = [pool.submit(render_frame, header, frame_size, k, sub, seed, field, noise)
                   for _, field, k, header, sub in tasks]
        try:
            for fut in futures:
                yield fut.result()
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

"""``zray cutouts``: aligned five-band cutouts cut from survey frames, into zray shards.

A survey hands out frames: one FITS image per band and field, each with its
own WCS (in SDSS the five bands of a field are exposed one after another as
the sky drifts, so a galaxy sits tens of pixels apart in each band's frame,
and the frames are slightly turned against each other). For every galaxy of
the catalogue (``id``, ``ra``, ``dec``, ``z_spec`` and, when given, ``ebv``
and ``mag_u`` .. ``mag_z``):

0. **Frames** (headers only): each names its band and has an RA/Dec WCS in
   ICRS or FK5, because the plan maps the catalogue's ra and dec to pixels
   through the WCS as it is (a galactic or FK4 frame would put every galaxy in
   the wrong place, silently); all frames share one pixel scale (mixed scales
   mean mixed surveys, whose bands would differ in resolution); a file shorter
   than its header says is refused before any work.
1. **Plan** (in this process, from the headers alone): in each band, the
   frames whose pixels hold the whole cutout (its four corners inside the
   frame); of those the one where the galaxy lies farthest from an edge, so a
   galaxy near the edge of its field's frame takes the neighbouring field's
   frame that covers it. A galaxy without such a frame in some band is
   skipped with its reason: off every frame, a band missing (no frame of that
   band holds it), or on a frame edge (frames hold it, but none the whole
   cutout).
2. **Cut** (a process pool, one task per frame of the reference band r: the
   galaxies whose r pixels come from it): each band resampled onto one grid,
   the gnomonic (TAN) projection centred on the galaxy, north up and east
   left, ``size`` x ``size`` pixels of :data:`~zray.data.shards.PIXEL_SCALE`,
   the galaxy at the grid's centre (between the four central pixels for an
   even size, as GalSim draws the simulator's cutouts), with
   ``reproject.reproject_exact``: each output pixel gets the input pixels'
   values weighted by the exact area where they overlap it (spherical
   polygons), then scaled by the ratio of the pixels' areas, so the flux
   in nanomaggies is conserved to rounding, and no interpolation kernel
   blurs or shifts the image beyond the pixel overlap itself (the
   ``reproject_adaptive(conserve_flux=True)`` alternative smooths with a
   kernel and was slower here: 38 ms against 22 ms per 64x64 band).
3. **Bad pixels**: a pixel that is NaN or infinite in the frame (masked)
   makes the output pixels it overlaps bad; each band's bad pixels are
   counted, the galaxy skipped when any band has more than ``max_bad``
   (default 1%) of its pixels bad, and otherwise set to 0 (the subtracted
   sky) and counted in the shards' ``bad_pixels`` column.
4. **Write**: the cut galaxies, through :class:`~zray.data.writer.DatasetWriter`
   (checked, in the order of a hash of the id, split by id, published whole),
   and beside the dataset ``OUT.skipped.csv``: every galaxy not written, with
   its catalogue row, id, position, reason and detail.

Each task's cutouts are kept in ``.OUT.cutouts-partial/`` beside the output
until the dataset is published, under a key of the inputs (the catalogue's
bytes, the frames' names, sizes and times, the cutout size), so a run that
was interrupted starts again from the frames it had not finished.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from zray.bins import RedshiftBins
from zray.data import skipped as skipped_list
from zray.data.catalog import (
    PLAIN_FITS,
    check_redshifts,
    ebv_or_zero,
    id_column,
    label,
    magnitude_columns,
    numeric_column,
    read_catalog,
    source_record,
    warn_repeats,
    where,
)
from zray.data.cutouts import check_size
from zray.data.progress import Progress
from zray.data.shards import BANDS, DEFAULT_BINS, DEFAULT_ROWS_PER_SHARD, PIXEL_SCALE, Manifest, write_order
from zray.errors import ZrayError, first_line

FITS_SUFFIXES = (".fits", ".fit", ".fts", ".fits.gz", ".fit.gz", ".fits.bz2", ".fit.bz2", ".fits.fz")
# PLAIN_FITS (catalog.py): not compressed, so the file's length shows a truncated download
EQUATORIAL = ("ICRS", "FK5", "")  # the catalogue's ra and dec: ICRS, or FK5 J2000 within 0.1"
SCALE_TOLERANCE = 0.02  # frames' pixel scales that differ by more are from different surveys
UNITS = ("nanomaggy", "nanomaggies", "nmgy")
REFERENCE_BAND = "r"
MAX_BAD_FRACTION = 0.01
BATCH = 256
_KEY_VERSION = 1

# the reasons a galaxy is not written, as the summary counts them
OFF_FRAMES = "off every frame"
MISSING_BAND = "band missing"
ON_EDGE = "on a frame edge"
BAD_PIXELS = "bad pixels"
OUT_OF_RANGE = "z_spec out of range"
# FITS files under --frames that are no frame, as the warning counts them
NO_IMAGE = "hold no 2-D image (tables)"
NO_BAND = "name no band in FILTER or BAND"


# --- the tangent plane ----------------------------------------------------------------------

def tan_to_sky(ra0, dec0, xi, eta):
    """Standard coordinates (xi east, eta north, degrees) on the plane tangent at
    (ra0, dec0) back to the sky (degrees): the gnomonic projection's inverse."""
    a0, d0 = np.radians(ra0), np.radians(dec0)
    x, y = np.radians(xi), np.radians(eta)
    denom = np.cos(d0) - y * np.sin(d0)
    ra = a0 + np.arctan2(x, denom)
    dec = np.arctan2(np.sin(d0) + y * np.cos(d0), np.hypot(x, denom))
    return np.degrees(ra) % 360.0, np.degrees(dec)


def sky_to_tan(ra0, dec0, ra, dec):
    """(ra, dec) in degrees to standard coordinates (xi east, eta north, degrees) on the plane
    tangent at (ra0, dec0)."""
    a0, d0 = np.radians(ra0), np.radians(dec0)
    a, d = np.radians(ra), np.radians(dec)
    cosc = np.sin(d0) * np.sin(d) + np.cos(d0) * np.cos(d) * np.cos(a - a0)
    xi = np.cos(d) * np.sin(a - a0) / cosc
    eta = (np.cos(d0) * np.sin(d) - np.sin(d0) * np.cos(d) * np.cos(a - a0)) / cosc
    return np.degrees(xi), np.degrees(eta)


def grid_wcs(ra: float, dec: float, size: int, scale: float = PIXEL_SCALE):
    """The cutout's grid: TAN centred on (ra, dec), north up, east left, ``scale`` arcsec
    per pixel, the centre at pixel ((size-1)/2, (size-1)/2) counted from 0."""
    from astropy.wcs import WCS

    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [float(ra), float(dec)]
    w.wcs.crpix = [(size + 1) / 2, (size + 1) / 2]
    w.wcs.cdelt = [-scale / 3600.0, scale / 3600.0]
    w.wcs.cunit = ["deg", "deg"]
    return w


def grid_corners(ra, dec, size: int, scale: float = PIXEL_SCALE):
    """(ra, dec), each (n, 4) degrees: the outer corners of each galaxy's cutout grid."""
    half = size / 2 * scale / 3600.0
    dx = np.array([-1, 1, 1, -1]) * half
    dy = np.array([-1, -1, 1, 1]) * half
    ra = np.asarray(ra, dtype=np.float64)[:, None]
    dec = np.asarray(dec, dtype=np.float64)[:, None]
    return tan_to_sky(ra, dec, -dx[None, :], dy[None, :])  # +x is west: xi = -x


def _unit(ra, dec):
    a, d = np.radians(ra), np.radians(dec)
    return np.stack([np.cos(d) * np.cos(a), np.cos(d) * np.sin(a), np.sin(d)], axis=-1)


# --- the catalogue ------------------------------------------------------------------------

def sky_columns(table, path, ids) -> tuple[np.ndarray, np.ndarray]:
    """The ``ra`` and ``dec`` columns (degrees), checked: both present, RA in [0, 360], Dec in [-90, 90].
    Text is read as degrees where it is one number, else as sexagesimal (RA in hours, ``12:34:56.7``
    or ``12 34 56.7`` as VizieR writes it; Dec in degrees, ``-01:02:03``)."""
    for name in ("ra", "dec"):
        if name not in table.column_names:
            raise ZrayError(f"{path}: has {'dec' if name == 'ra' else 'ra'} but no column {name!r}; "
                            "expected both ra and dec in degrees")
    (ra, ra_text), (dec, dec_text) = (_sky_values(table, name, path, ids) for name in ("ra", "dec"))
    for name, values, texts, lo, hi in (("ra", ra, ra_text, 0.0, 360.0), ("dec", dec, dec_text, -90.0, 90.0)):
        bad = np.flatnonzero((values < lo) | (values > hi))
        if bad.size:
            i = int(bad[0])
            value = f"{values[i]:g}" if texts is None else f"{texts[i]!r} ({values[i]:g} degrees)"
            raise ZrayError(f"{path}: {where(i, ids)}: {label(table, name)} {value} is outside [{lo:g}, {hi:g}]; "
                            f"expected {name.upper() if name == 'ra' else 'Dec'} in degrees")
    return ra % 360.0, dec


def _sky_values(table, name: str, path, ids) -> tuple[np.ndarray, list | None]:
    """One of ``ra``/``dec`` in degrees, and the text it was read from (None for numbers): numbers
    as they are; text (or a time of day, as pyarrow reads ``12:34:56`` in a CSV) as one number of
    degrees or as sexagesimal, through astropy's Angle."""
    import pyarrow as pa

    col = table.column(name)
    if not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type) or pa.types.is_time(col.type)):
        return numeric_column(table, name, path, ids), None
    from astropy import units as u
    from astropy.coordinates import Angle

    # a typeset minus (U+2212), as some tables write Dec, is a minus
    texts = [None if t is None else t.strip().replace("\u2212", "-") for t in col.cast(pa.string()).to_pylist()]
    values = np.full(len(texts), np.nan)
    sexagesimal = []
    for i, text in enumerate(texts):
        if not text:
            continue  # missing: named below
        try:
            values[i] = float(text)
        except ValueError:
            sexagesimal.append(i)
    unit = u.hourangle if name == "ra" else u.deg
    try:  # all at once; one by one only to find the row that is not an angle
        values[sexagesimal] = Angle([texts[i] for i in sexagesimal], unit=unit).deg if sexagesimal else []
    except (ValueError, TypeError, u.UnitsError):
        for i in sexagesimal:
            try:
                values[i] = Angle(texts[i], unit=unit).deg
            except (ValueError, TypeError, u.UnitsError):
                form = "hours as 12:34:56.7" if name == "ra" else "degrees as -01:02:03.4"
                raise ZrayError(f"{path}: {where(i, ids)}: {label(table, name)} {texts[i]!r} is not an angle; "
                                f"expected degrees, or sexagesimal {form}") from None
    bad = np.flatnonzero(~np.isfinite(values))
    if bad.size:
        raise ZrayError(f"{path}: {where(bad[0], ids)}: {label(table, name)} is missing or not finite; "
                        "expected a number of degrees")
    return values, texts


@dataclass
class Catalogue:
    """The checked catalogue's columns, in its row order (``ebv`` 0 where it has none)."""

    path: Path
    ids: np.ndarray
    ra: np.ndarray
    dec: np.ndarray
    z: np.ndarray
    ebv: np.ndarray
    extra: dict
    in_bins: np.ndarray  # whether each z_spec lies inside the dataset's bins


def read_survey_catalog(path, bins: RedshiftBins = DEFAULT_BINS, columns=None,
                        drop_out_of_range: bool = False) -> Catalogue:
    """The catalogue ``zray cutouts`` takes, checked with the same rules as ``zray prepare``'s;
    ``columns`` (:func:`~zray.data.catalog.parse_columns`) names its columns that hold zray's;
    ``drop_out_of_range``: a z_spec outside ``bins`` is marked (``in_bins``), not refused."""
    path = Path(path)
    table = read_catalog(path, ("id", "ra", "dec", "z_spec"), columns, hinted=("ebv",))
    ids = id_column(table, path)
    ra, dec = sky_columns(table, path, ids)
    z = numeric_column(table, "z_spec", path, ids)
    in_bins = check_redshifts(z, bins, path, ids, name=label(table, "z_spec"), drop=drop_out_of_range)
    ebv = ebv_or_zero(table, path, ids)
    extra = magnitude_columns(table, path, ids, BANDS)
    warn_repeats(list(zip(np.round(ra, 7), np.round(dec, 7))), path, ids, "their ra and dec")
    return Catalogue(path, ids, ra, dec, z, ebv, extra, in_bins)


# --- the frames ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Frame:
    """One frame's header facts: where it is, its band, its image HDU, shape and WCS (as a
    header string, so a frame travels to the worker processes as plain data)."""

    path: Path
    name: str  # relative to the frames folder
    band: str
    hdu: int
    shape: tuple[int, int]  # (ny, nx)
    wcs_header: str

    def wcs(self):
        from astropy.io import fits
        from astropy.wcs import WCS

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return WCS(fits.Header.fromstring(self.wcs_header))


def fits_files(folder: Path, catalog: Path | None = None) -> list[Path]:
    """The FITS files under ``folder``, but the catalogue itself (a FITS table kept beside the frames)."""
    leave = os.path.realpath(catalog) if catalog is not None else None
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.name.lower().endswith(FITS_SUFFIXES)
                  and not p.name.startswith(".") and os.path.realpath(p) != leave)


def read_frames(folder, catalog: Path | None = None) -> list[Frame]:
    """Every FITS frame under ``folder`` (searched recursively; not ``catalog``), checked from the
    headers: a whole 2-D image naming its band (FILTER or BAND) with an RA/Dec WCS (ICRS or FK5, the
    catalogue's ra and dec), all frames at one pixel scale. A FITS file that is no frame (a table, as
    SDSS's psField and fpM files beside its frames; an image naming no band) is left out, counted in
    a warning; a frame that is damaged or cannot be placed is one sentence naming the file."""
    from astropy.io import fits
    from astropy.wcs import WCS

    from zray.data.ingest import header_band

    folder = Path(folder)
    if not folder.is_dir():
        raise ZrayError(f"{folder}: --frames folder not found")
    files = fits_files(folder, catalog)
    if not files:
        raise ZrayError(f"{folder}: holds no FITS frames ({', '.join('*' + s for s in FITS_SUFFIXES[:2])}); "
                        "expected one FITS image per band and field")
    frames, scales, units = [], [], {}
    not_frames: dict[str, list[str]] = {}  # why -> the files left out for it
    for path in files:
        name = path.relative_to(folder).as_posix()
        try:
            with warnings.catch_warnings():  # astropy's own truncation warning: the check below says it
                warnings.simplefilter("ignore")
                with fits.open(path, memmap=True) as hdul:
                    found = [(k, h.header, _data_end(hdul, k)) for k, h in enumerate(hdul)
                             if getattr(h, "is_image", False) and h.header.get("NAXIS") == 2]
        except Exception as exc:  # astropy raises many types for corrupt files
            raise ZrayError(f"{path}: is not a readable FITS file ({first_line(exc, 120)})") from None
        if not found:
            not_frames.setdefault(NO_IMAGE, []).append(name)
            continue
        k, header, end = found[0]
        if path.name.lower().endswith(PLAIN_FITS) and path.stat().st_size < end:
            raise ZrayError(f"{path}: is {path.stat().st_size} bytes, shorter than its header says ({end}); "
                            "expected a whole FITS file (an interrupted download?)")
        band = header_band(header, str(path))
        if band is None:
            not_frames.setdefault(NO_BAND, []).append(name)
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                wcs = WCS(header).celestial
            ok = wcs.has_celestial and wcs.naxis == 2
        except Exception as exc:
            raise ZrayError(f"{path}: its WCS cannot be read ({first_line(exc, 120)}); expected a celestial "
                            "WCS (CTYPE RA---TAN/DEC--TAN, CRVAL, CRPIX, CD)") from None
        if not ok:
            raise ZrayError(f"{path}: has no celestial WCS; expected each frame to carry its own "
                            "(CTYPE1/2 RA---TAN/DEC--TAN, CRVAL, CRPIX, CD or CDELT)")
        # The plan maps the catalogue's ra, dec to pixels with the WCS as it is, while reproject
        # converts between frames: a galactic or FK4 frame would place galaxies in the wrong pixels.
        system = str(wcs.wcs.radesys).strip().upper()
        if wcs.wcs.lngtyp != "RA" or wcs.wcs.lattyp != "DEC" or system not in EQUATORIAL:
            raise ZrayError(f"{path}: its WCS is in {'/'.join(map(str, wcs.wcs.ctype))}"
                            f"{f' ({system})' if system else ''} coordinates; expected RA/Dec in ICRS or FK5 "
                            "(CTYPE RA---TAN/DEC--TAN), the system of the catalogue's ra and dec")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            area = float(wcs.proj_plane_pixel_area().to_value("arcsec2"))
        if not np.isfinite(area) or area <= 0:
            raise ZrayError(f"{path}: its WCS gives pixels of area {area:g} arcsec^2; expected a CD (or CDELT) "
                            "matrix giving the pixel scale")
        scales.append(np.sqrt(area))
        unit = str(header.get("BUNIT", "")).strip()
        if unit and unit.lower() not in UNITS:
            units.setdefault(unit, name)
        shape = (int(header["NAXIS2"]), int(header["NAXIS1"]))
        frames.append(Frame(path, name, band, k, shape, wcs.to_header(relax=True).tostring()))
    said = ", ".join(f"{len(names)} {why} (such as {names[0]})" for why, names in not_frames.items())
    if not frames:
        raise ZrayError(f"{folder}: holds no frames among its {len(files)} FITS files ({said}); expected one "
                        "FITS image per band and field, naming its band in FILTER or BAND")
    from zray.console import LOG

    if not_frames:
        LOG.warning(f"{folder}: left out {sum(map(len, not_frames.values()))} FITS files that are not frames: {said}")
    _check_scales(frames, np.array(scales))
    if units:
        unit, name = next(iter(units.items()))
        LOG.warning(f"{folder / name}: BUNIT is {unit!r}, not nanomaggies; the cutouts keep the frames' pixel "
                    "values as they are, so calibrate the frames first unless every frame is in the same unit")
    return frames


def _check_scales(frames: list[Frame], scales: np.ndarray) -> None:
    """All frames at one pixel scale (else they are from different surveys or binnings, and the
    bands' resolutions would differ in the cutouts); a scale other than SDSS's is warned about."""
    lo, hi = int(scales.argmin()), int(scales.argmax())
    if scales[hi] > scales[lo] * (1 + SCALE_TOLERANCE):
        raise ZrayError(f"{frames[hi].path}: has pixels of {scales[hi]:.3f}\" but {frames[lo].path} of "
                        f"{scales[lo]:.3f}\"; expected all frames at one pixel scale (one survey)")
    if abs(np.median(scales) / PIXEL_SCALE - 1) > SCALE_TOLERANCE:
        from zray.console import LOG

        LOG.warning(f"the frames' pixels are {np.median(scales):.3f}\", not SDSS's {PIXEL_SCALE}\": the cutouts "
                    f"are resampled to {PIXEL_SCALE}\"/pixel (flux kept), which the networks expect")


# --- the plan -----------------------------------------------------------------------------

@dataclass
class Plan:
    choice: np.ndarray  # (n, 5) frame index per galaxy and band, -1 where none
    reason: list  # (kind, detail) or None per galaxy


def plan_cutouts(frames: list[Frame], ra, dec, size: int) -> Plan:
    """Which frame each galaxy takes in each band (see the module docstring)."""
    n = len(ra)
    choice = np.full((n, len(BANDS)), -1, dtype=np.int64)
    best = np.full((n, len(BANDS)), -np.inf)
    holds = np.zeros((n, len(BANDS)), dtype=bool)  # some frame of the band holds the centre
    edge = [[[] for _ in BANDS] for _ in range(n)]  # frames holding the centre but not the cutout
    c_ra, c_dec = grid_corners(ra, dec, size)
    gal = _unit(ra, dec)
    half_grid = np.radians(size / 2 * np.sqrt(2) * PIXEL_SCALE / 3600.0)
    for f, frame in enumerate(frames):
        w = frame.wcs()
        ny, nx = frame.shape
        centre = w.pixel_to_world_values((nx - 1) / 2, (ny - 1) / 2)
        corners = np.array(w.pixel_to_world_values([-0.5, nx - 0.5, nx - 0.5, -0.5], [-0.5, -0.5, ny - 0.5, ny - 0.5]))
        fc = _unit(*centre)
        radius = np.arccos(np.clip(_unit(corners[0], corners[1]) @ fc, -1, 1)).max()
        near = np.flatnonzero(gal @ fc > np.cos(min(radius + half_grid, np.pi / 2)))
        if near.size == 0:
            continue
        k = BANDS.index(frame.band)
        x, y = w.world_to_pixel_values(ra[near], dec[near])
        margin = np.minimum.reduce([x + 0.5, nx - 0.5 - x, y + 0.5, ny - 0.5 - y])
        inside = margin >= 0
        cx, cy = w.world_to_pixel_values(c_ra[near].ravel(), c_dec[near].ravel())
        cx, cy = cx.reshape(-1, 4), cy.reshape(-1, 4)
        whole = ((cx >= -0.5) & (cx <= nx - 0.5) & (cy >= -0.5) & (cy <= ny - 0.5)).all(axis=1)
        holds[near[inside], k] = True
        for i in near[inside & ~whole]:
            edge[i][k].append(frame.name)
        better = whole & (margin > best[near, k])
        choice[near[better], k] = f
        best[near[better], k] = margin[better]
    reason: list = [None] * n
    for i in np.flatnonzero((choice < 0).any(axis=1)):
        if not holds[i].any():
            reason[i] = (OFF_FRAMES, "no frame of any band holds its position")
            continue
        missing = [b for k, b in enumerate(BANDS) if not holds[i, k]]
        if missing:
            reason[i] = (MISSING_BAND, f"no {','.join(missing)} frame holds its position")
            continue
        k = int(np.flatnonzero(choice[i] < 0)[0])
        names = edge[i][k]
        reason[i] = (ON_EDGE, f"its {size}x{size} cutout crosses the edge of every {BANDS[k]} frame holding it "
                              f"({', '.join(names[:3])}{' ...' if len(names) > 3 else ''})")
    return Plan(choice, reason)


# --- cutting (in the worker processes) ------------------------------------------------------

def _data_end(hdul, k: int) -> int:
    """Where HDU ``k``'s pixels end in the file, as its header says: a tile-compressed image
    (``CompImageHDU``, in a .fits as often as in a .fits.fz) by its compressed table's span,
    whose ``size`` is that of the pixels once decompressed."""
    from astropy.io import fits

    info = hdul.fileinfo(k)
    if isinstance(hdul[k], fits.CompImageHDU):
        return info["datLoc"] + info["datSpan"]
    return info["datLoc"] + hdul[k].size


def _frame_data(frame: Frame) -> np.ndarray:
    from astropy.io import fits

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # not memory-mapped: astropy cannot map integer pixels scaled by BZERO/BSCALE (uint16
            # frames), and the whole frame is read into float64 here anyway
            with fits.open(frame.path, memmap=False) as hdul:
                return np.asarray(hdul[frame.hdu].data, dtype=np.float64)
    except Exception as exc:  # a file changed or truncated (compressed) since its header was read
        raise ZrayError(f"{frame.path}: its pixels cannot be read ({first_line(exc, 120)}); expected a whole "
                        "FITS file") from None


def cut_band(data: np.ndarray, wcs, ra: float, dec: float, size: int) -> np.ndarray:
    """One band of one galaxy: ``data`` (the frame, sky-subtracted flux per pixel) resampled with
    ``reproject_exact`` onto :func:`grid_wcs` and scaled to conserve flux; NaN where bad."""
    from reproject import reproject_exact

    out = grid_wcs(ra, dec, size)
    c_ra, c_dec = grid_corners([ra], [dec], size)
    x, y = wcs.world_to_pixel_values(c_ra[0], c_dec[0])
    ny, nx = data.shape
    x0, x1 = max(int(np.floor(x.min())) - 2, 0), min(int(np.ceil(x.max())) + 3, nx)
    y0, y1 = max(int(np.floor(y.min())) - 2, 0), min(int(np.ceil(y.max())) + 3, ny)
    sub_wcs = wcs[y0:y1, x0:x1]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        img, foot = reproject_exact((data[y0:y1, x0:x1], sub_wcs), out, shape_out=(size, size), parallel=False)
    img *= (PIXEL_SCALE / 3600.0) ** 2 / wcs.proj_plane_pixel_area().value  # per pixel area: flux kept
    img[foot < 0.999] = np.nan
    return img


def cut_group(frames: dict[int, Frame], galaxies: list[tuple[float, float, list[int]]], size: int):
    """The cutouts of one task: ``galaxies`` holds (ra, dec, frame index per band). Returns
    (images (m, 5, size, size) float32 with bad pixels set to 0, bad pixel counts (m, 5))."""
    data, wcs = {}, {}
    images = np.zeros((len(galaxies), len(BANDS), size, size), dtype=np.float32)
    bad = np.zeros((len(galaxies), len(BANDS)), dtype=np.int64)
    for i, (ra, dec, chosen) in enumerate(galaxies):
        for k, f in enumerate(chosen):
            if f not in data:
                data[f], wcs[f] = _frame_data(frames[f]), frames[f].wcs()
            img = cut_band(data[f], wcs[f], ra, dec, size)
            ok = np.isfinite(img)
            bad[i, k] = int((~ok).sum())
            images[i, k] = np.where(ok, img, 0.0)
    return images, bad


# --- the run ------------------------------------------------------------------------------

@dataclass
class CutoutReport:
    manifest: Manifest | None
    written: int
    skipped: list  # (row, id, ra, dec, kind, detail)
    skipped_path: Path
    resumed: int  # tasks whose cutouts came from an interrupted run
    tasks: int
    cut: int  # galaxies cut in this run (not resumed)
    cut_seconds: float
    workers: int
    counts: Counter = field(default_factory=Counter)


def partial_path(out: Path) -> Path:
    return out.parent / f".{out.name}.cutouts-partial"


def _inputs_key(catalog: Path, frames: list[Frame], size: int, columns=None) -> str:
    h = hashlib.sha256()
    if columns:  # the same file read with other columns is other galaxies
        h.update(json.dumps(source_record(columns), sort_keys=True).encode())
    with open(catalog, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    for fr in frames:
        st = fr.path.stat()
        h.update(f"{fr.name}\0{st.st_size}\0{st.st_mtime_ns}\0".encode())
    h.update(f"size={size};v={_KEY_VERSION}".encode())
    return h.hexdigest()


def _open_partial(folder: Path, key: str) -> None:
    """The folder of per-task results, kept when its key matches; else made anew."""
    key_file = folder / "key.json"
    try:
        if json.loads(key_file.read_text())["key"] == key:
            return
    except (OSError, ValueError, KeyError, TypeError):
        pass
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    key_file.write_text(json.dumps({"key": key}) + "\n")


def _load_task(folder: Path, name: str, ids: np.ndarray):
    """A finished task's (images memmap, bad counts), or None where it is missing or differs."""
    try:
        meta = json.loads((folder / f"{name}.json").read_text())
        if meta["ids"] != [int(v) for v in ids]:
            return None
        images = np.load(folder / f"{name}.npy", mmap_mode="r")
        bad = np.asarray(meta["bad"], dtype=np.int64).reshape(len(ids), len(BANDS))
        return (images, bad) if images.shape[0] == len(ids) else None
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _save_task(folder: Path, name: str, ids, images, bad) -> None:
    """Written under temporary names, then renamed: the .json last, so it marks a whole task."""
    tmp = folder / f".{name}.npy.tmp"
    with open(tmp, "wb") as fh:
        np.save(fh, images)
    os.replace(tmp, folder / f"{name}.npy")
    tmp = folder / f".{name}.json.tmp"
    tmp.write_text(json.dumps({"ids": [int(v) for v in ids], "bad": bad.ravel().tolist()}))
    os.replace(tmp, folder / f"{name}.json")


def _task_name(frame: Frame) -> str:
    name = frame.name
    for s in FITS_SUFFIXES:
        if name.lower().endswith(s):
            name = name[: -len(s)]
            break
    return name.replace("/", "__")


def make_cutouts(
    catalog,
    frames_dir,
    out,
    *,
    size: int = 64,
    seed: int = 0,
    max_bad: float = MAX_BAD_FRACTION,
    workers: int | None = None,
    rows_per_shard: int = DEFAULT_ROWS_PER_SHARD,
    bins: RedshiftBins = DEFAULT_BINS,
    overwrite: bool = False,
    progress: bool = True,
    stop_after_tasks: int | None = None,
    columns=None,
    drop_out_of_range: bool = False,
) -> CutoutReport:
    """Cut the catalogue's galaxies from the frames into a dataset at ``out`` (module docstring).

    ``stop_after_tasks`` is a test instrument: the run stops as if interrupted (KeyboardInterrupt)
    once that many tasks are saved, leaving them for the next run. ``columns`` names the catalogue's
    columns that hold zray's (``--column``); ``drop_out_of_range``: a galaxy whose z_spec lies
    outside ``bins`` is skipped (counted and listed) instead of stopping the run."""
    from zray.atomic import check_output
    from zray.console import LOG
    from zray.data.writer import DatasetWriter

    catalog, frames_dir, out = Path(catalog), Path(frames_dir), Path(out)
    check_size(size)
    if not 0 <= float(max_bad) < 1:
        raise ZrayError(f"--max-bad must be a fraction of a cutout's pixels in [0, 1), but got {max_bad!r}")
    cat = read_survey_catalog(catalog, bins, columns, drop_out_of_range)
    frames = read_frames(frames_dir, catalog)
    inputs = (catalog, frames_dir)
    check_output(out, kind="dataset", overwrite=overwrite, inputs=inputs)
    listing = skipped_list.path_for(out)
    if Path(os.path.realpath(out.parent)).is_relative_to(os.path.realpath(frames_dir)):
        # the frames folder is searched recursively, and its files key the resumable partial results
        raise ZrayError(f"{out}: lies inside the --frames folder {frames_dir}; expected the dataset outside it")
    check_output(listing, kind="list of skipped galaxies", overwrite=overwrite,
                 inputs=inputs, ours=skipped_list.is_list)

    plan = plan_cutouts(frames, cat.ra, cat.dec, size)
    for i in np.flatnonzero(~cat.in_bins):
        plan.reason[i] = (OUT_OF_RANGE, f"z_spec {cat.z[i]:.4g} lies outside {bins.z_min} <= z < {bins.z_max}")
    ref = BANDS.index(REFERENCE_BAND)
    todo = [i for i in range(len(cat.ids)) if plan.reason[i] is None]
    groups: dict[int, list[int]] = {}
    for i in todo:
        groups.setdefault(int(plan.choice[i, ref]), []).append(i)

    folder = partial_path(out)
    made = not folder.parent.exists()
    folder.parent.mkdir(parents=True, exist_ok=True)
    _open_partial(folder, _inputs_key(catalog, frames, size, columns))
    results: dict[int, tuple] = {}
    pending = []
    for f, members in sorted(groups.items()):
        found = _load_task(folder, _task_name(frames[f]), cat.ids[members])
        if found is None:
            pending.append(f)
        else:
            results[f] = found
    resumed = len(results)
    if resumed:
        LOG.info(f"resuming: {resumed} of {len(groups)} frames' cutouts kept from an interrupted run")
    bar = Progress("cutouts", len(todo), enabled=progress)
    if results:
        bar.update(sum(len(groups[f]) for f in results))
    workers = max(1, min(int(workers or os.cpu_count() or 1), max(len(pending), 1)))
    cut = sum(len(groups[f]) for f in pending)
    start = time.perf_counter()
    try:
        for f, (images, bad) in _run_tasks(frames, groups, pending, cat, plan, size, workers):
            name = _task_name(frames[f])
            _save_task(folder, name, cat.ids[groups[f]], images, bad)
            results[f] = _load_task(folder, name, cat.ids[groups[f]])
            bar.update(len(groups[f]))
            if stop_after_tasks is not None and len(results) - resumed >= stop_after_tasks:
                raise KeyboardInterrupt
    except ZrayError:
        # A frame that cannot be read: mending it changes the frames' key, so nothing cut so far
        # could be reused; no hidden folder of partial results stays (an interruption keeps it).
        shutil.rmtree(folder, ignore_errors=True)
        if made:
            _remove_empty(folder.parent)
        raise
    cut_seconds = time.perf_counter() - start

    # where each cut galaxy's cutout is, and the bad-pixel limit
    located: dict[int, tuple[int, int]] = {}
    limit = int(np.floor(max_bad * size * size))
    reason = list(plan.reason)
    bad_total = np.zeros(len(cat.ids), dtype=np.int64)
    for f, members in groups.items():
        bad = results[f][1]
        for j, i in enumerate(members):
            worst = int(bad[j].argmax())
            if bad[j, worst] > limit:
                reason[i] = (BAD_PIXELS, f"{bad[j, worst]} of its {size * size} {BANDS[worst]} pixels are NaN or "
                                         f"masked in the frame (limit {max_bad:g}: {limit})")
            else:
                located[i] = (f, j)
                bad_total[i] = int(bad[j].sum())
    keep = np.array(sorted(located), dtype=np.int64)
    skipped = [(i + 1, int(cat.ids[i]), float(cat.ra[i]), float(cat.dec[i]), *reason[i])
               for i in range(len(cat.ids)) if reason[i] is not None]
    counts = Counter(s[4] for s in skipped)
    report = CutoutReport(None, len(keep), skipped, listing, resumed, len(groups), cut, cut_seconds, workers, counts)
    if keep.size == 0:  # nothing to resume from: only the list of reasons stays
        shutil.rmtree(folder, ignore_errors=True)
        _write_skipped(listing, skipped)
        raise ZrayError(f"{catalog}: none of its {len(cat.ids)} galaxies could be cut from the frames in "
                        f"{frames_dir} ({skipped_list.count_line(counts)}); the reasons are listed in {listing}")
    source = {"kind": "cutouts", "catalog": str(catalog), "frames": str(frames_dir), "size": int(size),
              "resampling": "reproject_exact", "max_bad": float(max_bad), "skipped": len(skipped),
              **source_record(columns)}
    with DatasetWriter(out, seed=seed, rows_per_shard=rows_per_shard, bins=bins, overwrite=overwrite,
                       source=source, label=str(catalog), inputs=inputs) as writer:
        order = keep[write_order(cat.ids[keep], seed)]
        for s in range(0, len(order), BATCH):
            rows = order[s: s + BATCH]
            images = np.stack([results[located[i][0]][0][located[i][1]] for i in rows])
            extra = {k: v[rows] for k, v in cat.extra.items()}
            extra["bad_pixels"] = bad_total[rows].astype(np.int32)
            writer.add(cat.ids[rows], images, cat.z[rows], cat.ebv[rows], extra, rows=rows + 1)
    report.manifest = writer.manifest
    _write_skipped(listing, skipped)
    shutil.rmtree(folder, ignore_errors=True)
    if made:
        _remove_empty(folder.parent)
    return report


def _remove_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:  # not empty: something else lives there
        pass


def _write_skipped(path: Path, skipped: list) -> None:
    rows = [[row, gid, f"{ra:.7f}", f"{dec:.7f}", kind, detail] for row, gid, ra, dec, kind, detail in skipped]
    skipped_list.write(path, skipped_list.CUTOUTS_HEADER, rows)


def _run_tasks(frames, groups, pending, cat, plan, size, workers):
    """Yield (frame index, (images, bad)) for each pending task, in a process pool of ``workers``."""

    def args(f):
        members = groups[f]
        chosen = {int(c) for i in members for c in plan.choice[i]}
        galaxies = [(float(cat.ra[i]), float(cat.dec[i]), [int(c) for c in plan.choice[i]]) for i in members]
        return {c: frames[c] for c in chosen}, galaxies, size

    if workers == 1:
        for f in pending:
            yield f, cut_group(*args(f))
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    ctx = multiprocessing.get_context("spawn")  # not fork: the driver may run Ray or TensorFlow threads
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        futures = {pool.submit(cut_group, *args(f)): f for f in pending}
        try:
            for fut in as_completed(futures):
                yield futures[fut], fut.result()
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

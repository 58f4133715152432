"""``zray prepare``: turn real FITS cutouts plus a catalogue into zray shards.

The catalogue (CSV, Parquet or a FITS table) has one row per galaxy with ``id``,
``z_spec``, ``ebv`` and either

* ``file``: one FITS file holding all five bands, in one of two layouts:
  a 3-D image (5, H, W) in the first HDU with data whose header names the band
  of each plane in keywords ``BAND1`` .. ``BAND5`` (plane 1 is the first along
  NAXIS3); or five 2-D image HDUs each naming its band in ``FILTER`` (or
  ``BAND``); or
* ``file_u`` .. ``file_z``: one FITS file per band (2-D image in the first HDU
  with data); the band is the column's, and a ``FILTER``/``BAND`` keyword that
  names another band is an error.

Band names are u, g, r, i, z, case-insensitive, optionally prefixed with
"sdss" (``SDSS_g``, ``sdss-g``). Band order is never assumed from position:
a file without band information is an error. Relative paths are resolved
against ``--images``. Cutouts larger than ``--size`` are centre-cropped;
smaller ones are an error. Each such error about one galaxy's cutout (a
:class:`BadCutout`) stops the run, or with ``--skip-bad`` leaves that galaxy
out, listed in ``OUT.skipped.csv``. Optional ``mag_u`` .. ``mag_z`` columns are
carried into the shards. Pixel values are taken as they are (nanomaggies for
SDSS frames).
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from zray.atomic import check_output
from zray.bins import RedshiftBins
from zray.console import LOG
from zray.data import skipped as skipped_list
from zray.data.catalog import (
    Source,
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
from zray.data.cutouts import MIN_SIZE, check_size, crop_centre
from zray.data.progress import Progress
from zray.data.shards import BANDS, DEFAULT_BINS, DEFAULT_ROWS_PER_SHARD, Manifest, write_order
from zray.data.writer import DatasetWriter
from zray.errors import ZrayError, first_line

BAND_KEYS = ("FILTER", "BAND")
PER_BAND_COLUMNS = tuple(f"file_{b}" for b in BANDS)
BATCH = 256

# Why a galaxy's cutout cannot be used: the reasons ``--skip-bad`` counts and lists.
NO_FILE = "file missing"
UNREADABLE = "unreadable FITS"
WRONG_BANDS = "bands not as expected"
TOO_SMALL = "smaller than the cutout size"
NOT_FINITE = "NaN or infinite pixels"


class BadCutout(ZrayError):
    """One galaxy's cutout cannot be used; ``reason`` is one of the five above."""

    def __init__(self, message: str, reason: str, fits: int | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.fits = fits  # for TOO_SMALL: the largest --size this cutout would give


def normalise_band(value) -> str | None:
    """'g', 'G', 'sdss_g', 'SDSS g' -> 'g'; anything else -> None."""
    s = re.sub(r"[\s_\-'.]", "", str(value).strip().lower())
    if s.startswith("sdss"):
        s = s[4:]
    return s if s in BANDS else None


def _open(path: Path, label: str):
    from astropy.io import fits

    if not path.is_file():
        raise BadCutout(f"{label}: FITS file {path} not found", NO_FILE)
    hdul = None
    try:
        hdul = fits.open(path, memmap=False)
        _ = [h.data for h in hdul]  # force reading: truncated files fail here
    except Exception as exc:  # astropy raises many types for corrupt files
        if hdul is not None:
            hdul.close()
        raise BadCutout(f"{label}: {path} is not a readable FITS file ({first_line(exc, 120)})", UNREADABLE) from None
    return hdul


def header_value(header, key: str, what: str):
    """``header[key]``, or None where the header has no such card. astropy parses a card only
    when it is read: one it cannot parse is an unreadable file, named by ``what``."""
    try:
        return header[key] if key in header else None
    except Exception as exc:  # astropy's VerifyError, or ValueError, for a malformed card
        raise BadCutout(f"{what} header card {key} cannot be parsed ({first_line(exc, 120)})", UNREADABLE) from None


def header_band(header, what: str) -> str | None:
    """The band a FITS header names in FILTER (or BAND), normalised; None where it names none.
    ``what`` starts the message when the keyword holds no band (the file, and the catalogue row)."""
    for key in BAND_KEYS:
        value = header_value(header, key, what)
        if value is not None:
            band = normalise_band(value)
            if band is None:
                raise BadCutout(f"{what} header {key}={value!r} is not a band; expected one of u,g,r,i,z",
                                WRONG_BANDS)
            return band
    return None


def read_multiband(path: Path, label: str) -> np.ndarray:
    """(5, H, W) in u,g,r,i,z order from one FITS file (see module docstring)."""
    with _open(path, label) as hdul:
        images = [(k, h) for k, h in enumerate(hdul) if h.data is not None and getattr(h, "is_image", False)]
        if not images:
            raise BadCutout(f"{label}: {path} has no image data; expected a 5-band cutout", WRONG_BANDS)
        first = images[0][1]
        if first.data.ndim == 3 and not (len(images) > 1 and first.data.shape[0] == 1):
            cube = first.data
            if cube.shape[0] != len(BANDS):
                raise BadCutout(f"{label}: {path} holds {cube.shape[0]} bands; expected 5 (u,g,r,i,z)", WRONG_BANDS)
            order = []
            for k in range(len(BANDS)):
                key = f"BAND{k + 1}"
                band = normalise_band(header_value(first.header, key, f"{label}: {path}") or "")
                if band is None:
                    raise BadCutout(
                        f"{label}: {path} header has no valid {key} keyword; expected BAND1..BAND5 "
                        f"naming the band (u,g,r,i,z) of each plane", WRONG_BANDS
                    )
                order.append(band)
            return _in_band_order(dict(zip(order, cube)), path, label)
        planes = {}
        for k, hdu in images:
            data = hdu.data[0] if hdu.data.ndim == 3 and hdu.data.shape[0] == 1 else hdu.data  # (1, H, W): one plane
            if data.ndim != 2:
                raise BadCutout(f"{label}: {path} HDU {k} has {hdu.data.ndim} axes; expected 2-D images", WRONG_BANDS)
            band = header_band(hdu.header, f"{label}: {path}")
            if band is None:
                raise BadCutout(
                    f"{label}: {path} HDU {k} has no FILTER or BAND keyword; "
                    f"expected each image HDU to name its band", WRONG_BANDS
                )
            if band in planes:
                raise BadCutout(f"{label}: {path} has band {band} twice; expected each of u,g,r,i,z once", WRONG_BANDS)
            planes[band] = data
        if len(planes) != len(BANDS):
            raise BadCutout(f"{label}: {path} holds {len(planes)} bands ({','.join(planes)}); "
                            "expected 5 (u,g,r,i,z)", WRONG_BANDS)
        return _in_band_order(planes, path, label)


def _in_band_order(planes: dict, path: Path, label: str) -> np.ndarray:
    missing = [b for b in BANDS if b not in planes]
    if missing:
        raise BadCutout(f"{label}: {path} lacks band(s) {','.join(missing)}; expected each of u,g,r,i,z once",
                        WRONG_BANDS)
    shapes = {planes[b].shape for b in BANDS}
    if len(shapes) != 1:
        raise BadCutout(f"{label}: {path} bands have different shapes {sorted(shapes)}; expected one shape",
                        WRONG_BANDS)
    return np.stack([np.asarray(planes[b], dtype=np.float32) for b in BANDS])


def read_single_band(path: Path, band: str, label: str) -> np.ndarray:
    with _open(path, label) as hdul:
        hdu = next((h for h in hdul if h.data is not None and getattr(h, "is_image", False)), None)
        if hdu is None or hdu.data.ndim != 2:
            raise BadCutout(f"{label}: {path} has no 2-D image; expected one band ({band}) per file", WRONG_BANDS)
        found = header_band(hdu.header, f"{label}: {path}")
        if found is not None and found != band:
            raise BadCutout(f"{label}: {path} header says band {found} but it is listed as file_{band}", WRONG_BANDS)
        return np.asarray(hdu.data, dtype=np.float32)


def _crop(image: np.ndarray, size: int, label: str) -> np.ndarray:
    try:
        return crop_centre(image, size, label)
    except ZrayError as exc:  # its one refusal: smaller than size
        raise BadCutout(str(exc), TOO_SMALL, fits=min(image.shape[-2:])) from None


def check_units_and_scale(files: list[Path], catalog: Path) -> None:
    """Warn where a cutout's header says its pixels are not what the networks learn from: a BUNIT
    other than nanomaggies, or a WCS whose pixels are not SDSS's 0.396". One galaxy's files are
    read, as one tool writes all of a catalogue's cutouts alike; a file that cannot be read is left
    to the reading proper, which names it."""
    from astropy.io import fits
    from astropy.utils.exceptions import AstropyWarning
    from astropy.wcs import WCS

    from zray.data.shards import PIXEL_SCALE
    from zray.data.survey import SCALE_TOLERANCE, UNITS

    for path in files:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", AstropyWarning)
                hdul = fits.open(path, memmap=False)
            with hdul:
                hdu = next(h for h in hdul if h.data is not None and getattr(h, "is_image", False))
                unit = str(hdu.header.get("BUNIT", "")).strip()
                wcs = WCS(hdu.header, naxis=2)
                scale = float(np.sqrt(wcs.proj_plane_pixel_area().to_value("arcsec2"))) if wcs.has_celestial else None
        except Exception:  # noqa: BLE001 - unreadable here is named by the reading proper
            continue
        if unit and unit.lower() not in UNITS:
            LOG.warning(f"{path}: BUNIT is {unit!r}, not nanomaggies (as {catalog}'s other cutouts, likely); the "
                        "networks learn from pixels in nanomaggies, sky subtracted: calibrate the cutouts first")
        if scale and np.isfinite(scale) and abs(scale / PIXEL_SCALE - 1) > SCALE_TOLERANCE:
            LOG.warning(f"{path}: its WCS gives pixels of {scale:.3f}\", not SDSS's {PIXEL_SCALE}\" (as {catalog}'s "
                        f"other cutouts, likely); the networks learn from {PIXEL_SCALE}\" pixels: resample the cutouts "
                        "(zray cutouts does, from survey frames)")
        return


def _cutout(files: list[Path], per_band: bool, size: int, label: str) -> np.ndarray:
    """One galaxy's (5, size, size) cutout, or :class:`BadCutout` saying why it cannot be used.

    astropy's warnings about a file (a header off the standard) are not shown: a file it can
    read is used, one it cannot is a BadCutout naming it, and a catalogue of thousands of
    downloads would otherwise bury zray's own lines under them."""
    from astropy.utils.exceptions import AstropyWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AstropyWarning)
        return _read_cutout(files, per_band, size, label)


def _read_cutout(files: list[Path], per_band: bool, size: int, label: str) -> np.ndarray:
    if per_band:
        image = np.stack([_crop(read_single_band(p, b, label), size, f"{label}: {p}") for p, b in zip(files, BANDS)])
    else:
        image = _crop(read_multiband(files[0], label), size, f"{label}: {files[0]}")
    for k, b in enumerate(BANDS):
        if not np.isfinite(image[k]).all():
            src = files[k] if per_band else files[0]
            raise BadCutout(f"{label}: {src} band {b} has NaN or infinite pixels; expected finite values", NOT_FINITE)
    return image


def prepare_dataset(
    catalog,
    images_dir,
    out,
    *,
    size: int = 64,
    seed: int = 0,
    rows_per_shard: int = DEFAULT_ROWS_PER_SHARD,
    bins: RedshiftBins = DEFAULT_BINS,
    overwrite: bool = False,
    progress: bool = True,
    skip_bad: bool = False,
    columns: Mapping[str, Source] | None = None,
    drop_out_of_range: bool = False,
) -> Manifest:
    """Read the catalogue and its FITS cutouts into a dataset at ``out``; ``columns``
    (:func:`~zray.data.catalog.parse_columns`) names the catalogue's columns that hold zray's.

    A galaxy whose cutout cannot be used (its file missing or unreadable, its
    bands not as expected, smaller than ``size``, NaN pixels) stops the run,
    naming it (and how many others have no file); with ``skip_bad`` it is
    left out instead, and once the dataset is written the left-out galaxies
    are counted in a warning and listed with their reasons in
    ``OUT.skipped.csv`` beside it. A ``z_spec`` outside ``bins`` stops the run
    too; with ``drop_out_of_range`` such galaxies are left out and counted.
    """
    listing = skipped_list.path_for(Path(out))
    inputs = (Path(catalog), Path(images_dir))
    if skip_bad:
        check_output(listing, kind="list of skipped galaxies", overwrite=overwrite, inputs=inputs,
                     ours=skipped_list.is_list)
    manifest, left_out = write_shards(catalog, images_dir, out, size=size, seed=seed, rows_per_shard=rows_per_shard,
                                      bins=bins, overwrite=overwrite, progress=progress, skip_bad=skip_bad,
                                      listing=listing, columns=columns, drop_out_of_range=drop_out_of_range)
    skipped_list.publish(listing, left_out, source=catalog, total=manifest.total_rows + len(left_out),
                         overwrite=overwrite, inputs=inputs)
    return manifest


def write_shards(catalog, images_dir, out, *, size: int, seed: int = 0, rows_per_shard: int = DEFAULT_ROWS_PER_SHARD,
                 bins: RedshiftBins = DEFAULT_BINS, overwrite: bool = False, progress: bool = True,
                 skip_bad: bool = False, listing: Path | None = None,
                 labelled: bool = True, task: str = "prepare", table=None,
                 columns: Mapping[str, Source] | None = None,
                 drop_out_of_range: bool | None = None) -> tuple[Manifest, list[list]]:
    """:func:`prepare_dataset`'s work: the dataset, and the ``[row, id, reason, detail]`` of each
    galaxy left out (``skip_bad``). ``listing`` is named in the error's hint.
    ``labelled=False`` (for predicting) ignores any ``z_spec`` column: every row gets the
    placeholder ``bins.z_min``. ``task`` names the work on the progress line; ``table`` is the
    catalogue as :func:`~zray.data.catalog.read_catalog` read it, where the caller has it already
    (else it is read with ``columns``). ``drop_out_of_range``: leave out the galaxies whose
    ``z_spec`` lies outside ``bins`` (None: the command has no such option, nor ``--z-max``)."""
    catalog = Path(catalog)
    images_dir = Path(images_dir)
    check_size(size)
    if not images_dir.is_dir():
        raise ZrayError(f"{images_dir}: --images directory not found")
    if table is None:
        table = read_catalog(catalog, ("id", "z_spec") if labelled else ("id",), columns, hinted=("ebv",))
    per_band = _layout(table.column_names, catalog)
    ids = id_column(table, catalog)
    if labelled:
        z = numeric_column(table, "z_spec", catalog, ids)
        outside = np.flatnonzero(~check_redshifts(z, bins, catalog, ids, name=label(table, "z_spec"),
                                                  drop=drop_out_of_range))
    else:
        z, outside = np.full(len(ids), bins.z_min, dtype=np.float64), np.zeros(0, dtype=np.int64)
    out_of_range = set(outside.tolist())  # left out before their files are looked for
    ebv = ebv_or_zero(table, catalog, ids)
    extra = magnitude_columns(table, catalog, ids, BANDS)
    hint = "--skip-bad leaves out the galaxies whose cutouts cannot be used" + (
        f" and lists them in {listing}" if listing is not None else "")
    files, left_out = _file_lists(table, per_band, images_dir, catalog, ids)
    left_out = {i: e for i, e in left_out.items() if i not in out_of_range}
    wanted = len(ids) - len(out_of_range)
    if left_out and not skip_bad:
        first = min(left_out)
        others = f" ({len(left_out)} of the {wanted} galaxies have no file)" if len(left_out) > 1 else ""
        raise ZrayError(f"{left_out[first]}{others}; {hint}")
    todo = np.array([i for i in range(len(ids)) if i not in left_out and i not in out_of_range], dtype=np.int64)
    warn_repeats([("left out", i) if i in left_out or i in out_of_range else
                  tuple(os.path.normpath(p) for p in paths) for i, paths in enumerate(files)],
                 catalog, ids, "their FITS file(s)")
    if todo.size:
        check_units_and_scale(files[todo[0]], catalog)
    bar = Progress(task, len(todo), enabled=progress)
    source = {"kind": "prepare", "catalog": str(catalog), "images": str(images_dir), "size": int(size),
              **source_record(columns)}
    with DatasetWriter(out, seed=seed, rows_per_shard=rows_per_shard, bins=bins,
                       overwrite=overwrite, source=source, label=str(catalog), inputs=(catalog, images_dir)) as writer:
        # Rows go in the order of a hash of the id, never the catalogue's; errors
        # still name the catalogue's own row.
        order = todo[write_order(ids[todo], seed)]
        for start in range(0, len(order), BATCH):
            kept, images = [], []
            for i in order[start: start + BATCH]:
                try:
                    images.append(_cutout(files[i], per_band, size, f"{catalog}: {where(i, ids)}"))
                    kept.append(i)
                except BadCutout as exc:
                    if not skip_bad:
                        size_hint = (f"--size {exc.fits} takes cutouts of {exc.fits}x{exc.fits} pixels (the networks' "
                                     f"input size), or " if (exc.fits or 0) >= MIN_SIZE and task == "prepare" else "")
                        raise ZrayError(f"{exc}; {size_hint}{hint}") from None
                    left_out[i] = exc
            if kept:
                rows = np.array(kept, dtype=np.int64)
                writer.add(ids[rows], np.stack(images), z[rows], ebv[rows], {k: v[rows] for k, v in extra.items()},
                           rows=rows + 1)  # counted from 1, as the catalogue's own messages
            bar.update(len(order[start: start + BATCH]))
        if left_out and len(left_out) == wanted:
            first = str(left_out[min(left_out)]).removeprefix(f"{catalog}: ")
            beyond = f", {len(out_of_range)} z_spec out of range" if out_of_range else ""
            raise ZrayError(f"{catalog}: none of its {len(ids)} galaxies has a cutout that can be used "
                            f"({skipped_list.reasons(e.reason for e in left_out.values())}{beyond}; the first: "
                            f"{first})")
        if skip_bad:
            writer.source["skipped"] = len(left_out)
        if out_of_range:
            writer.source["out_of_range"] = len(out_of_range)
    if out_of_range:
        LOG.info(f"{catalog}: left out {len(out_of_range)} of its {len(ids)} galaxies whose {label(table, 'z_spec')} "
                 f"lies outside {bins.z_min} <= z < {bins.z_max} (--drop-out-of-range)")
    listed = [[i + 1, int(ids[i]), left_out[i].reason, str(left_out[i]).removeprefix(f"{catalog}: {where(i, ids)}: ")]
              for i in sorted(left_out)]
    return writer.manifest, listed


def _layout(columns: list[str], catalog: Path) -> bool:
    """True for one file per band, False for one 5-band file per row."""
    has_single = "file" in columns
    per_band = [c for c in PER_BAND_COLUMNS if c in columns]
    if has_single and per_band:
        raise ZrayError(f"{catalog}: has both 'file' and {', '.join(per_band)}; expected one layout")
    if has_single:
        return False
    if not per_band:
        raise ZrayError(
            f"{catalog}: missing column(s) 'file' or {', '.join(PER_BAND_COLUMNS)}; "
            f"expected one 5-band FITS per row or one FITS per band"
        )
    missing = [c for c in PER_BAND_COLUMNS if c not in columns]
    if missing:
        raise ZrayError(f"{catalog}: missing column(s) {', '.join(missing)}; expected one FITS column per band")
    return True


def _file_lists(table, per_band: bool, images_dir: Path, catalog: Path, ids) -> tuple[list, dict]:
    """Each row's FITS paths, and ``{row index: BadCutout}`` for the rows whose files are not there."""
    cols = PER_BAND_COLUMNS if per_band else ("file",)
    values = [table.column(c).to_pylist() for c in cols]
    out, missing = [], {}
    for i in range(table.num_rows):
        paths = []
        for c, vals in zip(cols, values):
            label = f"{catalog}: {where(i, ids)}"
            if vals[i] is None or str(vals[i]).strip() == "":
                missing[i] = BadCutout(f"{label}: column {c} is empty; expected a FITS file name", NO_FILE)
                break
            p = Path(str(vals[i]).strip())
            p = p if p.is_absolute() else images_dir / p
            try:
                is_dir, is_file = p.is_dir(), p.is_file()
            except OSError as exc:  # a name too long for the file system, say
                missing[i] = BadCutout(f"{label}: {c} {str(p)[:120]!r} cannot be looked up ({exc.strerror}); "
                                       "expected a FITS file name", NO_FILE)
                break
            if is_dir:
                missing[i] = BadCutout(f"{label}: {c} names the folder {p}; expected a FITS file name", NO_FILE)
                break
            if not is_file:
                missing[i] = BadCutout(f"{label}: FITS file {p} not found", NO_FILE)
                break
            paths.append(p)
        out.append(paths)
    return out, missing

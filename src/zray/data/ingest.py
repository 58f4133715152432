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
smaller ones are an error. Optional ``mag_u`` .. ``mag_z`` columns are
carried into the shards. Pixel values are taken as they are (nanomaggies for
SDSS frames).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from zray.bins import RedshiftBins
from zray.data.catalog import (
    check_redshifts,
    ebv_column,
    id_column,
    magnitude_columns,
    numeric_column,
    read_catalog,
    warn_repeats,
    where,
)
from zray.data.cutouts import check_size, crop_centre
from zray.data.progress import Progress
from zray.data.shards import BANDS, DEFAULT_BINS, DEFAULT_ROWS_PER_SHARD, Manifest, write_order
from zray.data.writer import DatasetWriter
from zray.errors import ZrayError, first_line

BAND_KEYS = ("FILTER", "BAND")
PER_BAND_COLUMNS = tuple(f"file_{b}" for b in BANDS)
BATCH = 256


def normalise_band(value) -> str | None:
    """'g', 'G', 'sdss_g', 'SDSS g' -> 'g'; anything else -> None."""
    s = re.sub(r"[\s_\-'.]", "", str(value).strip().lower())
    if s.startswith("sdss"):
        s = s[4:]
    return s if s in BANDS else None


def _open(path: Path, label: str):
    from astropy.io import fits

    if not path.is_file():
        raise ZrayError(f"{label}: FITS file {path} not found")
    hdul = None
    try:
        hdul = fits.open(path, memmap=False)
        _ = [h.data for h in hdul]  # force reading: truncated files fail here
    except Exception as exc:  # astropy raises many types for corrupt files
        if hdul is not None:
            hdul.close()
        raise ZrayError(f"{label}: {path} is not a readable FITS file ({first_line(exc, 120)})") from None
    return hdul


def header_band(header, what: str) -> str | None:
    """The band a FITS header names in FILTER (or BAND), normalised; None where it names none.
    ``what`` starts the message when the keyword holds no band (the file, and the catalogue row)."""
    for key in BAND_KEYS:
        if key in header:
            band = normalise_band(header[key])
            if band is None:
                raise ZrayError(f"{what} header {key}={header[key]!r} is not a band; expected one of u,g,r,i,z")
            return band
    return None


def read_multiband(path: Path, label: str) -> np.ndarray:
    """(5, H, W) in u,g,r,i,z order from one FITS file (see module docstring)."""
    with _open(path, label) as hdul:
        images = [(k, h) for k, h in enumerate(hdul) if h.data is not None and getattr(h, "is_image", False)]
        if not images:
            raise ZrayError(f"{label}: {path} has no image data; expected a 5-band cutout")
        first = images[0][1]
        if first.data.ndim == 3 and not (len(images) > 1 and first.data.shape[0] == 1):
            cube = first.data
            if cube.shape[0] != len(BANDS):
                raise ZrayError(f"{label}: {path} holds {cube.shape[0]} bands; expected 5 (u,g,r,i,z)")
            order = []
            for k in range(len(BANDS)):
                key = f"BAND{k + 1}"
                band = normalise_band(first.header.get(key, ""))
                if band is None:
                    raise ZrayError(
                        f"{label}: {path} header has no valid {key} keyword; expected BAND1..BAND5 "
                        f"naming the band (u,g,r,i,z) of each plane"
                    )
                order.append(band)
            return _in_band_order(dict(zip(order, cube)), path, label)
        planes = {}
        for k, hdu in images:
            data = hdu.data[0] if hdu.data.ndim == 3 and hdu.data.shape[0] == 1 else hdu.data  # (1, H, W): one plane
            if data.ndim != 2:
                raise ZrayError(f"{label}: {path} HDU {k} has {hdu.data.ndim} axes; expected 2-D images")
            band = header_band(hdu.header, f"{label}: {path}")
            if band is None:
                raise ZrayError(
                    f"{label}: {path} HDU {k} has no FILTER or BAND keyword; "
                    f"expected each image HDU to name its band"
                )
            if band in planes:
                raise ZrayError(f"{label}: {path} has band {band} twice; expected each of u,g,r,i,z once")
            planes[band] = data
        if len(planes) != len(BANDS):
            raise ZrayError(f"{label}: {path} holds {len(planes)} bands ({','.join(planes)}); expected 5 (u,g,r,i,z)")
        return _in_band_order(planes, path, label)


def _in_band_order(planes: dict, path: Path, label: str) -> np.ndarray:
    missing = [b for b in BANDS if b not in planes]
    if missing:
        raise ZrayError(f"{label}: {path} lacks band(s) {','.join(missing)}; expected each of u,g,r,i,z once")
    shapes = {planes[b].shape for b in BANDS}
    if len(shapes) != 1:
        raise ZrayError(f"{label}: {path} bands have different shapes {sorted(shapes)}; expected one shape")
    return np.stack([np.asarray(planes[b], dtype=np.float32) for b in BANDS])


def read_single_band(path: Path, band: str, label: str) -> np.ndarray:
    with _open(path, label) as hdul:
        hdu = next((h for h in hdul if h.data is not None and getattr(h, "is_image", False)), None)
        if hdu is None or hdu.data.ndim != 2:
            raise ZrayError(f"{label}: {path} has no 2-D image; expected one band ({band}) per file")
        found = header_band(hdu.header, f"{label}: {path}")
        if found is not None and found != band:
            raise ZrayError(f"{label}: {path} header says band {found} but it is listed as file_{band}")
        return np.asarray(hdu.data, dtype=np.float32)


def _cutout(files: list[Path], per_band: bool, size: int, label: str) -> np.ndarray:
    if per_band:
        planes = [crop_centre(read_single_band(p, b, label), size, f"{label}: {p}") for p, b in zip(files, BANDS)]
        image = np.stack(planes)
    else:
        image = crop_centre(read_multiband(files[0], label), size, f"{label}: {files[0]}")
    for k, b in enumerate(BANDS):
        if not np.isfinite(image[k]).all():
            src = files[k] if per_band else files[0]
            raise ZrayError(f"{label}: {src} band {b} has NaN or infinite pixels; expected finite values")
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
) -> Manifest:
    """Read the catalogue and its FITS cutouts into a dataset at ``out``."""
    catalog = Path(catalog)
    images_dir = Path(images_dir)
    check_size(size)
    if not images_dir.is_dir():
        raise ZrayError(f"{images_dir}: --images directory not found")
    table = read_catalog(catalog, ("id", "z_spec", "ebv"))
    per_band = _layout(table.column_names, catalog)
    ids = id_column(table, catalog)
    z = numeric_column(table, "z_spec", catalog, ids)
    check_redshifts(z, bins, catalog, ids)
    ebv = ebv_column(table, catalog, ids)
    files = _file_lists(table, per_band, images_dir, catalog, ids)
    warn_repeats([tuple(os.path.normpath(p) for p in paths) for paths in files], catalog, ids, "their FITS file(s)")
    extra = magnitude_columns(table, catalog, ids, BANDS)
    bar = Progress("prepare", len(ids), enabled=progress)
    source = {"kind": "prepare", "catalog": str(catalog), "images": str(images_dir), "size": int(size)}
    with DatasetWriter(out, seed=seed, rows_per_shard=rows_per_shard, bins=bins,
                       overwrite=overwrite, source=source, label=str(catalog),
                       inputs=(catalog, images_dir)) as writer:
        # Rows go in the order of a hash of the id, never the catalogue's; errors
        # still name the catalogue's own row.
        order = write_order(ids, seed)
        for start in range(0, len(ids), BATCH):
            rows = order[start: start + BATCH]
            images = np.stack([_cutout(files[i], per_band, size, f"{catalog}: {where(i, ids)}") for i in rows])
            writer.add(ids[rows], images, z[rows], ebv[rows], {k: v[rows] for k, v in extra.items()},
                       rows=rows + 1)  # counted from 1, as the catalogue's own messages
            bar.update(len(rows))
    return writer.manifest


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


def _file_lists(table, per_band: bool, images_dir: Path, catalog: Path, ids) -> list[list[Path]]:
    cols = PER_BAND_COLUMNS if per_band else ("file",)
    values = [table.column(c).to_pylist() for c in cols]
    out = []
    for i in range(table.num_rows):
        paths = []
        for c, vals in zip(cols, values):
            if vals[i] is None or str(vals[i]).strip() == "":
                raise ZrayError(f"{catalog}: {where(i, ids)}: column {c} is empty; expected a FITS file name")
            p = Path(str(vals[i]).strip())
            p = p if p.is_absolute() else images_dir / p
            if p.is_dir():
                raise ZrayError(f"{catalog}: {where(i, ids)}: {c} names the folder {p}; expected a FITS file name")
            if not p.is_file():
                raise ZrayError(f"{catalog}: {where(i, ids)}: FITS file {p} not found")
            paths.append(p)
        out.append(paths)
    return out

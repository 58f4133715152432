"""``zray simulate``: SDSS-like five-band cutouts with known redshifts.

The driver draws every galaxy's parameters from one seeded generator
(:mod:`zray.data.population`), worker processes render chunks of galaxies
with GalSim (:mod:`zray.data.render`), and the rendered chunks stream in id
order into a :class:`~zray.data.shards.DatasetWriter`. The output is therefore
identical for a seed whatever the number of workers, and memory is bounded
by a few chunks per worker plus one shard per split.

Besides the shards, the dataset holds ``catalog.parquet``: the true
parameters of every galaxy (redshift, type, dereddened magnitudes, sizes,
seeing, E(B-V); magnitudes as mag_u..mag_z) for checks such as ``scripts/check_simulation.py``.
"""

from __future__ import annotations

import os
from collections import deque
from pathlib import Path

import numpy as np
import pyarrow as pa

from zray.bins import RedshiftBins
from zray.data.catalog import (
    check_redshifts,
    column_hints,
    ebv_column,
    id_column,
    label,
    magnitude_columns,
    numeric_column,
    read_catalog,
    source_record,
)
from zray.data.cutouts import check_size
from zray.data.progress import Progress
from zray.data.shards import BANDS, DEFAULT_BINS, DEFAULT_ROWS_PER_SHARD, Manifest, write_order
from zray.data.writer import DatasetWriter
from zray.errors import ZrayError

CATALOG_NAME = "catalog.parquet"
MAG_COLUMNS = tuple(f"mag_{b}" for b in BANDS)  # "z" is the redshift, so bands get a prefix
CHUNK = 16  # galaxies per worker task: small enough for smooth progress
_RENDER_KEYS = (
    "id", "mags", "ebv", "bulge_frac", "bulge_r50_arcsec", "disk_r50_arcsec", "bulge_q",
    "disk_q", "angle_deg", "dx_pix", "dy_pix", *(f"psf_fwhm_{b}" for b in BANDS),
)


def simulate(
    out,
    n: int,
    *,
    size: int = 64,
    seed: int = 0,
    workers: int | None = None,
    rows_per_shard: int = DEFAULT_ROWS_PER_SHARD,
    overwrite: bool = False,
    progress: bool = True,
) -> Manifest:
    """Simulate ``n`` galaxies into a dataset at ``out``; see the module docstring."""
    from zray.data.population import draw_population

    if int(n) < 1:
        raise ZrayError(f"--n must be a positive number of galaxies, but got {n!r}")
    check_size(size)
    params = draw_population(int(n), int(seed))
    params["id"] = np.arange(int(n), dtype=np.int64)
    source = {"kind": "simulate", "n": int(n), "seed": int(seed), "size": int(size)}
    return _render_dataset(out, params, size, seed, workers, rows_per_shard, overwrite, progress, source)


def simulate_from_catalog(
    catalog_path,
    out,
    *,
    size: int = 64,
    seed: int = 0,
    workers: int | None = None,
    limit: int | None = None,
    rows_per_shard: int = DEFAULT_ROWS_PER_SHARD,
    bins: RedshiftBins = DEFAULT_BINS,
    overwrite: bool = False,
    progress: bool = True,
    columns=None,
) -> Manifest:
    """Render cutouts for a catalogue of id, z (or z_spec), dereddened mag_u..mag_z [, ebv];
    ``columns`` (:func:`~zray.data.catalog.parse_columns`) names the catalogue's columns that hold those.

    Morphology (bulge fraction, size from the absolute magnitude) is drawn
    per galaxy consistent with its colours; E(B-V) is drawn if not given.
    ``limit`` keeps that many galaxies, chosen by a hash of the id (not the
    first rows: a catalogue sorted by redshift starts with its lowest). The
    catalogue's row order changes nothing: rows are drawn one after another,
    rendered and written in the order of a hash of the id, and each galaxy's
    noise comes from its id. The whole file is checked, whatever ``limit``.
    """
    check_size(size)
    params = catalog_population(catalog_path, seed=seed, limit=limit, bins=bins, columns=columns)
    source = {"kind": "simulate_from_catalog", "catalog": str(catalog_path), "seed": int(seed), "size": int(size),
              **source_record(columns)}
    return _render_dataset(out, params, size, seed, workers, rows_per_shard, overwrite, progress, source)


def catalog_population(catalog_path, *, seed: int = 0, limit: int | None = None,
                       bins: RedshiftBins = DEFAULT_BINS, positions: bool = False,
                       columns=None) -> dict[str, np.ndarray]:
    """The parameters of a catalogue's galaxies (see :func:`simulate_from_catalog`), in the order
    of a hash of the id. ``positions``: also ``ra`` and ``dec`` (degrees) where the catalogue
    has both columns (``zray simulate --frames``)."""
    from zray.data.population import population_from_catalog

    table = read_catalog(catalog_path, ("id", *MAG_COLUMNS), columns)
    # the true redshift: z, or z_spec as the other commands' catalogues call it (or --column names it)
    order = ("z_spec",) if "z_spec" in (columns or {}) else ("z", "z_spec")
    name = next((c for c in order if c in table.column_names), None)
    if name is None:
        raise ZrayError(f"{catalog_path}: missing column z; expected each galaxy's redshift as z (or z_spec) "
                        f"beside id and {', '.join(MAG_COLUMNS)}{column_hints(['z_spec'], table.column_names)}")
    ids = id_column(table, catalog_path)
    z = numeric_column(table, name, catalog_path, ids)
    check_redshifts(z, bins, catalog_path, ids, name=label(table, name))
    mags = np.stack(list(magnitude_columns(table, catalog_path, ids, BANDS).values()), axis=1)  # all five: required
    ebv = ebv_column(table, catalog_path, ids)
    sky = {}
    if positions and ("ra" in table.column_names or "dec" in table.column_names):
        from zray.data.survey import sky_columns

        sky = dict(zip(("ra", "dec"), sky_columns(table, catalog_path, ids)))
    # Morphology is drawn in the order of the id hash, not the catalogue's: the
    # same galaxy gets the same parameters (and pixels) however the file is sorted.
    order = write_order(ids, seed)
    if limit is not None:
        order = order[: int(limit)]
    ids, z, mags = ids[order], z[order], mags[order]
    ebv = None if ebv is None else ebv[order]
    params = population_from_catalog(z, mags, ebv, int(seed))
    params["id"] = ids
    params["row"] = order + 1  # the catalogue's own row, for messages
    params.update({k: v[order] for k, v in sky.items()})
    return params


def _render_dataset(out, params, size, seed, workers, rows_per_shard, overwrite, progress, source) -> Manifest:
    """Render ``params`` and write them in :func:`write_order` (a hash of the id)."""
    order = write_order(params["id"], seed)
    params = {k: v[order] for k, v in params.items()}
    n = len(params["id"])
    workers = max(1, int(workers or os.cpu_count() or 1))
    bar = Progress("simulate", n, enabled=progress)
    inputs = (Path(source["catalog"]),) if "catalog" in source else ()
    with DatasetWriter(out, seed=seed, rows_per_shard=rows_per_shard, overwrite=overwrite,
                       source=source, label=source.get("catalog", "simulate"), inputs=inputs) as writer:
        for start, images in _render_all(params, size, seed, workers):
            sl = slice(start, start + len(images))
            extra = {f"mag_{b}": params["mags"][sl, k] for k, b in enumerate(BANDS)}
            rows = params["row"][sl] if "row" in params else None  # a catalogue's rows, as in the file
            writer.add(params["id"][sl], images, params["z"][sl], params["ebv"][sl], extra, rows=rows)
            bar.update(len(images))
        writer.add_sidecar(CATALOG_NAME, _catalog_table(params))
    return writer.manifest


def _render_all(params, size: int, seed: int, workers: int):
    """Yield (start, images) chunks in order, rendered in ``workers`` processes."""
    from zray.data.render import render_chunk

    n = len(params["id"])
    chunks = [(s, {k: params[k][s: s + CHUNK] for k in _RENDER_KEYS}) for s in range(0, n, CHUNK)]
    if workers == 1:
        for start, chunk in chunks:
            yield start, render_chunk(chunk, size, seed)
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    # spawn, not fork: the driver may already run Ray or TensorFlow threads.
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        pending: deque = deque()
        todo = iter(chunks)
        try:
            for start, chunk in todo:
                pending.append((start, pool.submit(render_chunk, chunk, size, seed)))
                if len(pending) >= 4 * workers:
                    s, fut = pending.popleft()
                    yield s, fut.result()
            while pending:
                s, fut = pending.popleft()
                yield s, fut.result()
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


def _catalog_table(params) -> pa.Table:
    cols = {"id": pa.array(params["id"]), "z": params["z"], "type": params["type"].tolist()}
    for k, b in enumerate(BANDS):
        cols[f"mag_{b}"] = params["mags"][:, k]
    for key in ("ebv", "t_sed", "red", "abs_mag_r", "r50_kpc", "r50_arcsec", "bulge_frac",
                "bulge_r50_arcsec", "disk_r50_arcsec", "bulge_q", "disk_q", "angle_deg",
                *(f"psf_fwhm_{b}" for b in BANDS)):
        cols[key] = params[key]
    return pa.table(cols)


def catalog_path(root) -> Path:
    return Path(root) / CATALOG_NAME

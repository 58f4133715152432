"""Batch inference: a bundle over a dataset, streamed through Ray Data.

Shards are read by Ray Data read tasks and fed, batch by batch, to a fixed
pool of actors that each hold the bundle's models (loaded once per actor, on
CPU); the driver writes each result batch to Parquet as it arrives. Only a
few batches are in flight at a time, so memory stays bounded whatever the
input size. ``zray predict`` and ``zray evaluate`` share this path, so both
see the same predictions.

The bundle folder must be readable by every Ray node (on a cluster: shared
storage), as must the shards.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from zray.atomic import check_output, make_parents, remove_parents
from zray.console import LOG
from zray.errors import ZrayError
from zray.metrics import ODDS_WINDOW

__all__ = ["FORMATS", "POINT_COLUMNS", "Predictor", "iter_predictions", "open_input", "predict"]

#: Per galaxy, beside id and pdf: the point estimates, the central 68.27% and 95% intervals,
#: ODDS (probability within z_mode +- 0.03 (1 + z_mode)) and one random draw from the PDF.
POINT_COLUMNS = ("z_mean", "z_median", "z_mode", "z_std", "z_lo68", "z_hi68", "z_lo95", "z_hi95", "odds", "z_draw")
#: --format: zray's Parquet (one row per galaxy), or a qp ensemble in HDF5 (what RAIL reads).
FORMATS = ("parquet", "qp")
PARQUET_SUFFIXES = (".parquet", ".pq")
# Galaxies per model call unless the caller says: in this process, small batches
# (the first result sooner; 4,000 galaxies at 0.63x of the in-memory model here);
# through Ray Data, large enough that its per-block costs vanish (100,000
# galaxies stream at 0.82x after start-up, 0.46x at 256), about 170 MB at 64x64.
IN_PROCESS_BATCH = 256
STREAMING_BATCH = 2048


class Predictor:
    """Ray Data callable class: raw shard batches in, point estimates (+ PDFs) out."""

    def __init__(self, bundle_path: str, with_pdf: bool = True, passthrough: tuple[str, ...] = ()) -> None:
        from zray.bundle import Bundle
        from zray.runtime import quiet_logs

        quiet_logs(load=_ray_running())  # with no Ray here, nothing of Ray's to configure
        self.bundle = Bundle(bundle_path)
        self.with_pdf = with_pdf
        self.passthrough = passthrough

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from zray.qp_format import estimate_columns

        pdf = self.bundle.predict(batch["image"], batch["ebv"], batch_size=max(len(batch["id"]), 1))
        out = {"id": np.asarray(batch["id"])}  # int64, or uint64 as the dataset keeps them
        est = estimate_columns(pdf, self.bundle.bins, out["id"])
        for column in POINT_COLUMNS:
            out[column] = est[column]
        for column in self.passthrough:
            out[column] = np.asarray(batch[column])
        if self.with_pdf:
            out["pdf"] = pdf
        return out


def iter_predictions(
    bundle_path,
    manifest,
    splits: tuple[str, ...],
    *,
    batch_size: int | None = None,
    with_pdf: bool = True,
    passthrough: tuple[str, ...] = (),
    workers: int = 1,
    cpus_per_worker: float = 1.0,
) -> Iterator[dict[str, np.ndarray]]:
    """Yield result batches (numpy dicts) for the rows of ``splits``, in input order.

    Up to :data:`IN_PROCESS_ROWS` rows (and one worker, no Ray already
    running) are predicted in this process: starting Ray and its actors costs
    more than predicting a few thousand galaxies. Larger inputs stream through
    Ray Data actors with bounded memory.
    """
    files = [str(f) for s in splits for f in manifest.files(s)]
    if not files:
        raise ZrayError(f"{manifest.root}: split(s) {', '.join(splits)} hold no rows; expected data to predict on")
    rows = sum(manifest.rows[s] for s in splits)
    if workers == 1 and rows <= IN_PROCESS_ROWS and not _ray_running():
        yield from _predict_in_process(bundle_path, files, batch_size or IN_PROCESS_BATCH, with_pdf, passthrough)
        return
    yield from _predict_with_ray(bundle_path, manifest, files, batch_size=batch_size or STREAMING_BATCH,
                                 with_pdf=with_pdf,
                                 passthrough=passthrough, workers=workers, cpus_per_worker=cpus_per_worker)


# Inputs up to this many rows are predicted without Ray (see iter_predictions).
IN_PROCESS_ROWS = 20_000


def _ray_running() -> bool:
    """A Ray this process is connected to, or one RAY_ADDRESS names: use it."""
    if os.environ.get("RAY_ADDRESS"):
        return True
    if "ray" not in sys.modules:  # not even imported: not connected (and importing it costs 0.3 s)
        return False
    import ray

    return ray.is_initialized()


def _predict_in_process(bundle_path, files, batch_size, with_pdf, passthrough) -> Iterator[dict]:
    import pyarrow.parquet as pq

    predictor = Predictor(str(Path(bundle_path).resolve()), with_pdf, tuple(passthrough))
    columns = ["id", "image", "ebv", *passthrough]
    for path in files:
        for record_batch in pq.ParquetFile(path).iter_batches(batch_size=batch_size, columns=columns):
            batch = {}
            for name in columns:
                column = record_batch.column(name)
                batch[name] = column.to_numpy_ndarray() if name == "image" else column.to_numpy()
            yield predictor(batch)


def _predict_with_ray(bundle_path, manifest, files, *, batch_size, with_pdf, passthrough, workers,
                      cpus_per_worker) -> Iterator[dict]:
    import ray
    from ray.data import ActorPoolStrategy, DataContext

    from zray.ray_workarounds import actor_pool_cpus, spare_cpus
    from zray.runtime import init_ray

    init_ray()
    cpus = ray.cluster_resources().get("CPU", 0.0)
    if workers > cpus > 0:  # each actor holds a copy of the model: more than one per CPU only costs memory
        raise ZrayError(f"--workers {workers}: the Ray this runs on has {cpus:g} CPUs; expected at most "
                        f"{int(cpus)} workers, one per CPU (on a cluster, start its nodes first)")
    cpus_per_worker = actor_pool_cpus(workers, cpus_per_worker)
    _say_if_waiting_for_cpus(cpus, workers * cpus_per_worker + spare_cpus(cpus))
    ctx = DataContext.get_current()
    saved = ctx.execution_options.preserve_order, ctx.target_max_block_size
    ctx.execution_options.preserve_order = True
    # Blocks of about one batch (Ray's default is 128 MiB, thousands of small
    # cutouts): results then arrive, and progress moves, batch by batch.
    row_bytes = 4 * int(np.prod(manifest.image_shape)) + 64
    ctx.target_max_block_size = max(1 << 20, batch_size * row_bytes)
    try:
        columns = ["id", "image", "ebv", *passthrough]
        ds = ray.data.read_parquet(files).select_columns(columns)
        ds = ds.map_batches(
            Predictor,
            fn_constructor_args=(str(Path(bundle_path).resolve()), with_pdf, tuple(passthrough)),
            batch_size=batch_size,
            batch_format="numpy",
            compute=ActorPoolStrategy(size=workers),
            num_cpus=cpus_per_worker,
        )
        yield from ds.iter_batches(batch_size=None, batch_format="numpy", prefetch_batches=1)
    finally:
        ctx.execution_options.preserve_order, ctx.target_max_block_size = saved


def _say_if_waiting_for_cpus(cpus: float, need: float) -> None:
    """Say so when the Ray has fewer CPUs free than the actors and their reads ask for
    (a search, or another job, holds them): Ray then waits, silently, until they come free."""
    import ray

    free = ray.available_resources().get("CPU", 0.0)
    if free + 1e-6 < need:
        LOG.warning(f"the Ray this runs on has {free:.3g} of its {cpus:g} CPUs free (a search or another job "
                    f"holds the rest); predicting starts once {need:.3g} are free (`ray status` shows who holds them)")


@contextlib.contextmanager
def open_input(source, *, images=None, bundle=None, progress: bool = True, skip_bad: bool = False,
               skipped_to=None, columns=None) -> Iterator[Any]:
    """``(manifest, z_spec, left_out)`` for ``source``: a shard folder, or a catalogue + FITS folder.

    A catalogue is turned into shards in a temporary folder (removed on
    exit) by ``zray prepare``'s code at the bundle's image size. Predicting
    never needs a redshift: the shards get a placeholder, and a catalogue's
    own ``z_spec`` (any values, even outside the bundle's bins or the -1 of
    "unknown") comes back as ``(ids, z)`` to be joined to the predictions by
    id. ``z_spec`` is ``True`` for a shard folder (the shards carry it),
    ``None`` for a catalogue without one. ``left_out`` lists the galaxies
    whose cutouts ``skip_bad`` left out (``[row, id, reason, detail]``), for
    the caller to publish beside its output at ``skipped_to``. ``columns``
    (:func:`~zray.data.catalog.parse_columns`) names a catalogue's columns that hold zray's.
    """
    from zray.data.shards import read_manifest

    source = Path(source)
    if not source.exists():
        raise ZrayError(f"{source}: no such file or folder; expected a shard folder or a catalogue file")
    if source.is_dir():
        if images is not None:
            raise ZrayError(f"{source}: is a shard folder; --images is only for a catalogue file")
        if skip_bad:
            raise ZrayError(f"{source}: is a shard folder, whose cutouts were checked when it was written; "
                            "--skip-bad is only for a catalogue file")
        yield read_manifest(source), True, []
        return
    if images is None:
        raise ZrayError(
            f"{source}: is not a shard folder; a catalogue file needs --images DIR with its FITS cutouts"
        )
    from zray.data.catalog import column_hints, id_column, read_catalog
    from zray.data.ingest import write_shards

    table = read_catalog(source, ("id",), columns, hinted=("ebv",))
    known = None
    if "z_spec" in table.column_names:
        try:
            z = np.asarray(table.column("z_spec").to_numpy(zero_copy_only=False), dtype=np.float64)
        except (TypeError, ValueError):
            raise ZrayError(f"{source}: column z_spec holds values that are not numbers; expected redshifts, "
                            "or no z_spec column for galaxies without one") from None
        known = (id_column(table, source), z)
    elif hint := column_hints(["z_spec"], table.column_names):  # a redshift under a survey's name
        from zray.console import LOG

        LOG.info(f"{source}: no z_spec column, so the predictions carry no known redshift{hint} "
                 "(joined to each galaxy's predictions by id)")
    tmp = Path(tempfile.mkdtemp(prefix="zray-predict-"))
    try:
        manifest, left_out = write_shards(source, images, tmp / "data", size=bundle.image_size, bins=bundle.bins,
                                          progress=progress, skip_bad=skip_bad, listing=skipped_to, labelled=False,
                                          task="reading cutouts", table=table)
        yield manifest, known, left_out
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _with_known_z(batches, known) -> Iterator[dict[str, np.ndarray]]:
    """Each batch with the catalogue's z_spec joined by id (missing or not finite: null)."""
    from zray.data.catalog import id_key

    ids, z = id_key(known[0]), known[1]
    order = np.argsort(ids, kind="stable")
    ids, z = ids[order], z[order]  # sorted once: the catalogue may be large, and batches are many
    for batch in batches:
        keys = id_key(batch["id"])
        at = np.clip(np.searchsorted(ids, keys), 0, len(ids) - 1)
        found = ids[at] == keys
        yield {**batch, "z_spec": np.where(found, z[at], np.nan)}


def _arrow_table(batch: dict[str, np.ndarray], n_bins: int):
    import pyarrow as pa

    columns = {}
    for name, values in batch.items():
        if name == "pdf":
            flat = pa.array(np.ascontiguousarray(values, dtype=np.float32).reshape(-1))
            columns[name] = pa.FixedSizeListArray.from_arrays(flat, n_bins)
        elif name == "z_spec":  # an unknown redshift is null, never NaN
            values = np.asarray(values, dtype=np.float64)
            columns[name] = pa.array(values, mask=~np.isfinite(values))
        else:
            columns[name] = pa.array(values)
    return pa.table(columns)


def predict(
    bundle_path,
    source,
    out,
    *,
    images=None,
    splits: tuple[str, ...] | None = None,
    batch_size: int | None = None,
    with_pdf: bool = True,
    workers: int = 1,
    progress: bool = True,
    overwrite: bool = False,
    fmt: str = "parquet",
    skip_bad: bool = False,
    columns=None,
) -> dict[str, Any]:
    """Predict every object of ``source`` with the bundle into ``out``.

    ``fmt="parquet"``: columns id, z_spec (when the input has it), the
    :data:`POINT_COLUMNS` and ``pdf`` (a fixed-size list of n_bins float32)
    unless ``with_pdf`` is false; the file's metadata records the bundle and
    its bins. ``fmt="qp"``: a qp ``hist`` ensemble in HDF5 (``out`` ends in
    .hdf5 or .h5) with the same figures as ancillary columns under RAIL's
    names (:data:`zray.qp_format.ANCIL_NAMES`). Written to a temporary name
    and renamed when complete. With ``skip_bad``, a catalogue's galaxies
    whose cutouts cannot be used are left out and listed in
    ``OUT.skipped.csv`` (as ``zray prepare --skip-bad`` does). ``columns`` names a catalogue's
    columns that hold zray's (``zray prepare --column``).

        >>> from zray.predict import predict
        >>> predict("bundles/quickstart", "data/new-cutouts", "new.parquet")["rows"]   # doctest: +SKIP
        4000
    """
    from zray.bundle import read_bundle
    from zray.data import skipped as skipped_list
    from zray.data.shards import SPLITS

    out = Path(out)
    _check_format(out, fmt, with_pdf)
    if out.is_dir():
        raise ZrayError(f"{out}: is a folder; expected a file name for --out")
    inputs = [Path(bundle_path), Path(source), *([Path(images)] if images else [])]
    sealed = [Path(bundle_path), *([Path(source)] if Path(source).is_dir() else [])]  # not the FITS folder
    check_output(out, kind="predictions file", overwrite=overwrite, inputs=inputs, ours=written_by_predict,
                 sealed=sealed)
    if splits and Path(source).is_file():
        # a catalogue has no splits of its own: zray's split hash would pick a share of its galaxies
        raise ZrayError(f"{source}: is a catalogue file, and --split {' '.join(splits)} chooses among a shard "
                        "folder's splits; expected no --split (every galaxy of a catalogue is predicted)")
    if columns and Path(source).is_dir():
        raise ZrayError(f"{source}: is a shard folder, whose columns are zray's own; --column is only for "
                        "a catalogue file")
    info = read_bundle(bundle_path)
    if batch_size is not None and batch_size < 1:
        raise ZrayError(f"--batch-size must be a positive integer, but got {batch_size!r}")
    splits = tuple(dict.fromkeys(splits or SPLITS))  # a split named twice is still predicted once
    t0 = time.perf_counter()
    listing = skipped_list.path_for(out)
    if skip_bad:
        check_output(listing, kind="list of skipped galaxies", overwrite=overwrite, inputs=inputs,
                     ours=skipped_list.is_list, sealed=sealed)
    with open_input(source, images=images, bundle=info, progress=progress, skip_bad=skip_bad,
                    skipped_to=listing, columns=columns) as (manifest, known_z, left_out):
        info.check_data(manifest)
        batches = iter_predictions(bundle_path, manifest, splits, batch_size=batch_size, with_pdf=with_pdf,
                                   passthrough=("z_spec",) if known_z is True else (), workers=workers)
        if isinstance(known_z, tuple):
            batches = _with_known_z(batches, known_z)
        meta = {"bundle": str(Path(bundle_path).resolve()), "bins": info.data["bins"],
                "bands": list(info.bands), "source": str(source), "splits": list(splits),
                "odds_window": ODDS_WINDOW, "draw_seed": 0}
        if fmt == "qp" and isinstance(known_z, tuple):
            # qp's ancillary table has no null: a redshift column is written only when every galaxy
            # predicted (not one --skip-bad left out) has one
            predicted = ~np.isin(known_z[0], np.array([row[1] for row in left_out], dtype=known_z[0].dtype))
            if not np.all(np.isfinite(known_z[1][predicted])):
                batches = ({k: v for k, v in b.items() if k != "z_spec"} for b in batches)
        done, first = _write_output(batches, out, meta, info.bins, fmt=fmt,
                                    total=sum(manifest.rows[s] for s in splits), progress=progress, source=source)
    skipped_list.publish(listing, left_out, source=source, total=done + len(left_out), overwrite=overwrite,
                         inputs=inputs)
    elapsed = time.perf_counter() - t0
    first = (first[0] - t0, first[1])
    # After the first batch: throughput without Ray's and the model's start-up.
    steady = (done - first[1]) / max(elapsed - first[0], 1e-9) if done > first[1] else None
    return {"rows": done, "out": str(out), "seconds": elapsed, "first_batch_s": first[0],
            "galaxies_per_s": done / max(elapsed, 1e-9), "steady_galaxies_per_s": steady,
            "members": len(info.member_dirs),
            "skipped": len(left_out), "skipped_list": str(listing) if left_out else None}


def _check_format(out: Path, fmt: str, with_pdf: bool) -> None:
    """One sentence for a format that cannot be written as asked, before any work."""
    from zray.qp_format import QP_SUFFIXES, require_qp

    if fmt not in FORMATS:
        raise ZrayError(f"--format {fmt!r} is not a format; expected one of {', '.join(FORMATS)}")
    suffix = out.suffix.lower()
    if fmt == "qp":
        require_qp("--format qp")
        if suffix not in QP_SUFFIXES:
            raise ZrayError(f"{out}: --format qp writes HDF5, the format RAIL reads; expected a file name ending "
                            f"in {' or '.join(QP_SUFFIXES)}")
        if not with_pdf:
            raise ZrayError("--format qp writes the PDFs themselves, so --no-pdf cannot go with it; expected one of "
                            "the two")
    elif suffix in QP_SUFFIXES:
        raise ZrayError(f"{out}: an HDF5 name, but --format is parquet; expected --format qp for a qp file, or a "
                        ".parquet name")
    elif suffix not in PARQUET_SUFFIXES:
        raise ZrayError(f"{out}: --format parquet writes Parquet, whatever the name says; expected a name ending in "
                        ".parquet or .pq (pandas.read_parquet reads it; .to_csv makes a CSV of it)")


def written_by_predict(path: Path) -> bool:
    """Whether ``path`` is a predictions file of ``zray predict`` (its metadata names a bundle)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from zray.qp_format import QP_SUFFIXES, written_by_zray

    if path.suffix.lower() in QP_SUFFIXES:
        return written_by_zray(path)
    try:
        meta = pq.read_schema(path).metadata or {}
        return "bundle" in json.loads(meta.get(b"zray", b"{}"))
    except (pa.ArrowException, OSError, ValueError, TypeError):
        return False


class _ParquetSink:
    def __init__(self, path: Path, meta: dict, bins) -> None:
        self.path, self.meta, self.n_bins = path, meta, bins.n_bins
        self.writer = None

    def write(self, batch: dict) -> int:
        import pyarrow.parquet as pq

        table = _arrow_table(batch, self.n_bins)
        if self.writer is None:
            self.writer = pq.ParquetWriter(self.path, table.schema.with_metadata({"zray": json.dumps(self.meta)}))
        self.writer.write_table(table.cast(self.writer.schema))
        return table.num_rows

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    abort = close


def _write_output(batches, out: Path, meta: dict, bins, *, fmt: str, total: int, progress: bool,
                  source) -> tuple[int, tuple[float, int]]:
    """Stream prediction batches into ``out`` (via a temporary name, renamed when complete).
    Returns the rows written and (clock time, rows) when the first batch was written."""
    from zray.data.progress import Progress
    from zray.qp_format import QpWriter

    made = make_parents(out)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    sink = QpWriter(tmp, bins, total, {**meta, "format": "qp"}) if fmt == "qp" else _ParquetSink(tmp, meta, bins)
    bar = Progress("predict", total, enabled=progress)
    first = None
    try:
        for batch in batches:
            bar.update(sink.write(batch))
            if first is None:
                first = (time.perf_counter(), bar.done)
        if first is None:
            raise ZrayError(f"{source}: no rows to predict; expected a non-empty dataset")
        sink.close()
        tmp.replace(out)
    finally:
        sink.abort()
        tmp.unlink(missing_ok=True)
        if not out.exists():
            remove_parents(made)
    return bar.done, first

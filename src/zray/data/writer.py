"""Writing datasets: rows in, checked, into Parquet shards and ``manifest.json``.

Writes are atomic: everything goes into a hidden temporary directory beside
the destination which is renamed only once complete, so a crash or a bad row
never leaves a half-written dataset behind. Every row is checked as it is
added (shapes, finite pixels, redshift inside the bins, E(B-V) >= 0, unique
ids), and a bad one is named by its row and id.

    >>> import numpy as np
    >>> from zray.data import write_dataset
    >>> m = write_dataset("data/mine", np.arange(100), np.ones((100, 5, 32, 32), np.float32),
    ...                   np.full(100, 0.1), np.zeros(100))   # doctest: +SKIP
    >>> m.rows                                                # doctest: +SKIP
    {'train': 80, 'val': 10, 'test': 10}
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from zray.atomic import check_output, make_parents, publish_dir, remove_parents
from zray.bins import RedshiftBins
from zray.data.catalog import MAX_ID
from zray.data.shards import (
    _ROW_GROUP_ROWS,
    BANDS,
    BASE_COLUMNS,
    DEFAULT_BINS,
    DEFAULT_FRACTIONS,
    DEFAULT_ROWS_PER_SHARD,
    MANIFEST_NAME,
    PIXEL_SCALE,
    SPLITS,
    Manifest,
    ShardInfo,
    _check_fractions,
    assign_split,
    content_hash,
    shard_schema,
    write_order,
)
from zray.errors import ZrayError

__all__ = ["DatasetWriter", "write_dataset"]


class DatasetWriter:
    """Streams batches of rows into shards, then publishes the dataset atomically.

    Use as a context manager: rows are validated as they arrive, shards are
    written whenever a split has ``rows_per_shard`` rows buffered (in the
    order the rows were added: zray's own callers add them in
    :func:`~zray.data.shards.write_order`), and on a
    clean exit the manifest is written and the temporary directory renamed to
    ``out_dir``. On any exception the temporary directory is removed.
    Memory stays bounded by about ``3 * rows_per_shard`` rows.
    """

    def __init__(
        self,
        out_dir,
        *,
        seed: int = 0,
        fractions=DEFAULT_FRACTIONS,
        rows_per_shard: int = DEFAULT_ROWS_PER_SHARD,
        bins: RedshiftBins = DEFAULT_BINS,
        overwrite: bool = False,
        source: Mapping | None = None,
        label: str = "write_dataset",
        inputs: tuple = (),
    ) -> None:
        if int(rows_per_shard) < 1:
            raise ZrayError(f"rows_per_shard must be >= 1, but got {rows_per_shard!r}")
        self.out = Path(out_dir)
        self.seed = int(seed)
        self.fractions = _check_fractions(fractions)
        self.rows_per_shard = int(rows_per_shard)
        self.bins = bins
        self.overwrite = overwrite
        self.source = dict(source or {})
        self.label = label
        self.inputs = tuple(inputs)
        check_output(self.out, kind="dataset", overwrite=overwrite, inputs=self.inputs)
        self.image_shape: tuple[int, int, int] | None = None
        self.extra_types: dict[str, pa.DataType] | None = None
        self.id_type: pa.DataType | None = None  # int64, or uint64 for ids given as such (SDSS specObjIDs)
        self._buffers: dict[str, list[pa.Table]] = {s: [] for s in SPLITS}
        self._buffered = dict.fromkeys(SPLITS, 0)
        self._shards: dict[str, list[ShardInfo]] = {s: [] for s in SPLITS}
        self._ids: set[int] = set()
        self._rows_seen = 0
        self._sidecars: dict[str, pa.Table] = {}
        self._row_numbers: np.ndarray | None = None
        self._tmp: Path | None = None
        self._made: list[Path] = []

    # context management ------------------------------------------------
    def __enter__(self) -> DatasetWriter:
        self._made = make_parents(self.out)
        self._tmp = self.out.parent / f".{self.out.name}.partial-{os.getpid()}-{secrets.token_hex(4)}"
        self._tmp.mkdir()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self._discard()
            return
        try:
            self.manifest = self._publish()
        except BaseException:
            self._discard()
            raise

    def _discard(self) -> None:
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None
            if not self.out.exists():
                remove_parents(self._made)

    # rows ----------------------------------------------------------------
    def add(self, ids, images, z_spec, ebv, extra_columns: Mapping | None = None, *, rows=None) -> None:
        """Validate and buffer one batch of rows (arrays of equal length).

        ``rows``: the rows' own numbers in the caller's input, used in error
        messages (default: their position among all rows added).
        """
        if self._tmp is None:
            raise RuntimeError("DatasetWriter.add called outside its `with` block")
        self._row_numbers = None if rows is None else np.asarray(rows)
        ids, images, z_spec, ebv, extra = self._validate(ids, images, z_spec, ebv, extra_columns)
        split_idx = assign_split(ids, self.seed, self.fractions)
        table = pa.table(
            {
                "id": pa.array(ids, self.id_type),
                "image": pa.FixedShapeTensorArray.from_numpy_ndarray(images),
                "z_spec": pa.array(z_spec, pa.float32()),
                "ebv": pa.array(ebv, pa.float32()),
                **{k: pa.array(v, self.extra_types[k]) for k, v in extra.items()},
            },
            schema=shard_schema(self.image_shape, self.extra_types, self.id_type),
        )
        for k, split in enumerate(SPLITS):
            rows = np.flatnonzero(split_idx == k)
            if rows.size:
                self._buffers[split].append(table.take(pa.array(rows)))
                self._buffered[split] += rows.size
                while self._buffered[split] >= self.rows_per_shard:
                    self._flush(split, self.rows_per_shard)

    def add_sidecar(self, name: str, table: pa.Table) -> None:
        """Write ``table`` as ``name`` (Parquet) into the dataset, e.g. the true catalogue."""
        self._sidecars[name] = table

    def _row(self, i):
        # the caller's own row numbers (a catalogue's, from 1), else the position among the rows added (from 0,
        # as write_dataset's arrays are indexed)
        return self._row_numbers[i] if self._row_numbers is not None else self._rows_seen + i

    def _where(self, i: int, ids=None) -> str:
        row = self._row(i)
        ident = f" (id {int(ids[i])})" if ids is not None else ""
        return f"{self.label}: row {row}{ident}"

    def _validate(self, ids, images, z_spec, ebv, extra_columns):
        from zray.data.cutouts import check_cutouts

        images = np.asarray(images)
        if images.ndim != 4:
            raise ZrayError(
                f"{self.label}: images have shape {images.shape}; expected (N, 5, H, W)"
            )
        n = images.shape[0]
        ids = np.asarray(ids)
        z_spec = np.asarray(z_spec, dtype=np.float64)
        ebv = np.asarray(ebv, dtype=np.float64)
        for name, arr in (("ids", ids), ("z_spec", z_spec), ("ebv", ebv)):
            if arr.shape != (n,):
                raise ZrayError(
                    f"{self.label}: {name} has shape {arr.shape}; expected ({n},) to match the images"
                )
        if n and not np.issubdtype(ids.dtype, np.integer):
            raise ZrayError(f"{self.label}: ids have dtype {ids.dtype}; expected integers")
        ids = self._typed_ids(ids)
        images = np.ascontiguousarray(images, dtype=np.float32)
        check_cutouts(images, n_bands=len(BANDS), label=self.label, bands=",".join(BANDS),
                      row=lambda i: self._where(i, ids))
        shape = tuple(int(v) for v in images.shape[1:])
        if self.image_shape is None:
            self.image_shape = shape  # type: ignore[assignment]
        elif shape != self.image_shape:
            raise ZrayError(
                f"{self.label}: rows from {self._row(0)} have image shape {shape}; "
                f"expected {self.image_shape} like the earlier rows"
            )
        bad = ~(np.isfinite(z_spec) & self.bins.contains(z_spec))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ZrayError(
                f"{self._where(i, ids)}: z_spec {float(z_spec[i]):g} is outside the binning range; "
                f"expected {self.bins.z_min} <= z < {self.bins.z_max}"
            )
        bad = ~(np.isfinite(ebv) & (ebv >= 0))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ZrayError(f"{self._where(i, ids)}: ebv {float(ebv[i]):g} is invalid; expected a finite E(B-V) >= 0")
        self._check_ids(ids)
        extra = self._extra(extra_columns or {}, n)
        self._rows_seen += n
        return ids, images, z_spec, ebv, extra

    def _typed_ids(self, ids: np.ndarray) -> np.ndarray:
        """The ids as the dataset's type, set by its first rows: uint64 where they come as uint64
        (ids above the signed 64-bit range), else int64. Never wraps one round to another value."""
        if self.id_type is None:
            self.id_type = pa.uint64() if ids.dtype == np.uint64 else pa.int64()
        unsigned = pa.types.is_unsigned_integer(self.id_type)
        bad = ids < 0 if unsigned else ids > MAX_ID  # numpy compares each with the Python int exactly
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            kind = "unsigned (>= 0)" if unsigned else f"at most {MAX_ID}"
            raise ZrayError(f"{self._where(i)}: id {int(ids[i])} does not fit the earlier rows' ids, which are "
                            f"64-bit integers {kind}; expected ids of one kind")
        return ids.astype(np.uint64 if unsigned else np.int64)

    def _check_ids(self, ids: np.ndarray) -> None:
        uniq, first, counts = np.unique(ids, return_index=True, return_counts=True)
        if (counts > 1).any():
            dup = uniq[counts > 1][0]
            rows = sorted(int(self._row(i)) for i in np.flatnonzero(ids == dup)[:2])
            raise ZrayError(f"{self.label}: id {int(dup)} appears in rows {rows[0]} and {rows[1]}; expected unique ids")
        seen = [int(v) for v in uniq if int(v) in self._ids]
        if seen:
            i = int(np.flatnonzero(ids == seen[0])[0])
            raise ZrayError(f"{self._where(i, ids)}: id {seen[0]} was already written; expected unique ids")
        self._ids.update(int(v) for v in uniq)

    def _extra(self, extra_columns: Mapping, n: int) -> dict[str, np.ndarray]:
        out = {}
        for name, values in extra_columns.items():
            if name in BASE_COLUMNS:
                raise ZrayError(f"{self.label}: extra column {name!r} clashes with a built-in column")
            arr = np.asarray(values)
            if arr.shape != (n,):
                raise ZrayError(f"{self.label}: extra column {name!r} has shape {arr.shape}; expected ({n},)")
            if np.issubdtype(arr.dtype, np.floating):
                arr = arr.astype(np.float32)
            out[name] = arr
        types = {k: pa.from_numpy_dtype(v.dtype) if v.dtype.kind != "U" else pa.string() for k, v in out.items()}
        if self.extra_types is None:
            self.extra_types = types
        elif types != self.extra_types:
            raise ZrayError(
                f"{self.label}: extra columns {sorted(types)} differ from the earlier rows' "
                f"{sorted(self.extra_types)}; expected the same columns in every batch"
            )
        return out

    # shards --------------------------------------------------------------
    def _flush(self, split: str, rows: int) -> None:
        table = pa.concat_tables(self._buffers[split])
        head, rest = table.slice(0, rows), table.slice(rows)
        name = f"{split}-{len(self._shards[split]):05d}.parquet"
        pq.write_table(
            head,
            self._tmp / name,
            row_group_size=_ROW_GROUP_ROWS,
            compression={c: ("none" if c == "image" else "snappy") for c in head.column_names},
        )
        self._shards[split].append(ShardInfo(name, head.num_rows))
        self._buffers[split] = [rest] if rest.num_rows else []
        self._buffered[split] = rest.num_rows

    def _publish(self) -> Manifest:
        if self._rows_seen == 0:
            raise ZrayError(f"{self.label}: no rows to write; expected at least one galaxy")
        for split in SPLITS:
            if self._buffered[split]:
                self._flush(split, self._buffered[split])
        for name, table in self._sidecars.items():
            pq.write_table(table, self._tmp / name)
        files = [sh.file for s in SPLITS for sh in self._shards[s]]
        manifest = Manifest(
            root=self.out,
            bands=BANDS,
            image_shape=self.image_shape,  # type: ignore[arg-type]
            pixel_scale=PIXEL_SCALE,
            split_seed=self.seed,
            split_fractions=self.fractions,
            z_range=(float(self.bins.z_min), float(self.bins.z_max)),
            rows_per_shard=self.rows_per_shard,
            shards={s: tuple(v) for s, v in self._shards.items()},
            columns=tuple(shard_schema(self.image_shape, self.extra_types).names),
            hash=content_hash(self._tmp, files),
            source=self.source,
        )
        (self._tmp / MANIFEST_NAME).write_text(json.dumps(manifest.to_dict(), indent=2) + "\n")
        # Checked again: it may have appeared meanwhile.
        check_output(self.out, kind="dataset", overwrite=self.overwrite, inputs=self.inputs)
        publish_dir(self._tmp, self.out, kind="dataset")
        self._tmp = None
        return manifest


def write_dataset(
    out_dir,
    ids,
    images,
    z_spec,
    ebv,
    extra_columns: Mapping | None = None,
    *,
    seed: int = 0,
    fractions=DEFAULT_FRACTIONS,
    rows_per_shard: int = DEFAULT_ROWS_PER_SHARD,
    bins: RedshiftBins = DEFAULT_BINS,
    overwrite: bool = False,
    source: Mapping | None = None,
) -> Manifest:
    """Validate every row and write a complete dataset to ``out_dir`` atomically.

    ``images`` is (N, 5, H, W) float in nanomaggies, bands u,g,r,i,z; square
    cutouts. ``extra_columns`` maps names (e.g. ``mag_r``) to length-N arrays.
    An existing dataset at ``out_dir`` is an error unless ``overwrite``.
    Rows are written in :func:`~zray.data.shards.write_order` (a hash of the
    id), whatever order they came in. For data that does not fit in memory
    use :class:`DatasetWriter`.
    """
    columns = {"images": images, "z_spec": z_spec, "ebv": ebv, **(extra_columns or {})}
    ids = np.asarray(ids)
    order = None
    if ids.ndim == 1 and np.issubdtype(ids.dtype, np.integer) and all(
            np.shape(v)[:1] == ids.shape for v in columns.values()):  # else the writer names what is wrong
        order = write_order(ids, seed)
        ids = ids[order]
        columns = {k: np.asarray(v)[order] for k, v in columns.items()}
    images, z_spec, ebv = columns.pop("images"), columns.pop("z_spec"), columns.pop("ebv")
    extra_columns = columns or None
    with DatasetWriter(
        out_dir,
        seed=seed,
        fractions=fractions,
        rows_per_shard=rows_per_shard,
        bins=bins,
        overwrite=overwrite,
        source=source,
    ) as writer:
        writer.add(ids, images, z_spec, ebv, extra_columns, rows=order)
    return writer.manifest

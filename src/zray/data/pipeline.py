"""Reading shards for training and evaluation.

Training reads through Ray Data (:func:`read_split`), which streams shards
in read tasks, so memory stays bounded whatever the dataset size. The image
column is a fixed-shape tensor, so batches arrive as (N, 5, H, W) arrays with
no per-row decode. :func:`preprocess_batch` is the one numpy batch function
that turns them into network input; evaluation and benchmarks that want plain
numpy use :func:`load_arrays` and the same function, so both paths see
identical pixels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from zray.bins import edge_above, edge_below
from zray.console import LOG
from zray.data.shards import BASE_COLUMNS, column_problems, id_dtype, read_manifest
from zray.errors import ZrayError, first_line


def scale_pixels(x: np.ndarray) -> np.ndarray:
    """``sign(x) * (sqrt(|x| + 1) - 1)``: compresses the bright cores while
    keeping the noise near zero almost linear (Lin et al. 2022)."""
    return _scale_in_place(np.array(x, dtype=np.float32))


def _scale_in_place(x: np.ndarray) -> np.ndarray:
    """:func:`scale_pixels` on a float32 array we own, with one temporary."""
    sign = np.sign(x)
    np.abs(x, out=x)
    x += np.float32(1)
    np.sqrt(x, out=x)
    x -= np.float32(1)
    x *= sign
    return x


def preprocess_batch(batch: dict) -> dict:
    """Network input from a raw batch: image (N,5,H,W) -> (N,H,W,5) float32, scaled.

    Other columns pass through unchanged. Augmentation (the 8 symmetries of
    the square) happens later, inside the training step on the worker
    (:func:`zray.train.steps.dihedral`), so every epoch sees fresh draws.
    """
    images = np.asarray(batch["image"])
    if images.ndim != 4:
        raise ZrayError(f"preprocess_batch: image batch has shape {images.shape}; expected (N, 5, H, W)")
    out = dict(batch)
    x = np.array(np.transpose(images, (0, 2, 3, 1)), dtype=np.float32, order="C", copy=True)
    out["image"] = _scale_in_place(x)
    return out


def read_split(root, split: str, columns=BASE_COLUMNS, files=None):
    """A lazy, streaming ``ray.data.Dataset`` of one split's rows.

    Columns default to id, image (N,5,H,W float32 in batches), z_spec and
    ebv. Apply :func:`preprocess_batch` with ``ds.map_batches``. ``files``
    (default: all the split's shards) narrows it to some of them, e.g. the
    ones :class:`ShardCheck` kept.
    """
    import ray.data

    if files is None:
        files = read_manifest(root).files(split)
    if not files:
        raise ZrayError(f"{Path(root)}: split {split!r} has no rows; expected a non-empty split")
    return ray.data.read_parquet([str(f) for f in files]).select_columns(list(columns))


def load_arrays(root, split: str, columns=BASE_COLUMNS) -> dict[str, np.ndarray]:
    """Read a whole split into numpy with pyarrow (raw images, (N, 5, H, W)).

    For evaluation and benchmarks on data that fits in memory; training
    streams through :func:`read_split` instead.
    """
    import pyarrow.parquet as pq

    manifest = read_manifest(root)
    files = manifest.files(split)
    n = manifest.rows[split]
    shape = tuple(manifest.image_shape)
    out: dict[str, np.ndarray] = {}
    for name in columns:
        if name == "image":
            out[name] = np.empty((n, *shape), dtype=np.float32)
    pos = 0
    for path in files:
        table = pq.read_table(path, columns=list(columns))
        for name in table.column_names:
            col = table.column(name)
            if name == "image":
                at = pos
                for chunk in col.chunks:  # copy chunk by chunk: no second full-size buffer
                    out[name][at: at + len(chunk)] = chunk.to_numpy_ndarray()
                    at += len(chunk)
                continue
            values = col.to_numpy()
            if name not in out:
                out[name] = np.empty((n, *values.shape[1:]), dtype=values.dtype)
            out[name][pos: pos + table.num_rows] = values
        pos += table.num_rows
    for name in columns:  # an empty split still gets typed, empty columns
        out.setdefault(name, np.empty(0, id_dtype(manifest) if name == "id" else np.float32))
    return out



# ---------------------------------------------------------------------------
# Corrupt shards: found by name, stopped on or, when asked, skipped and counted


@dataclass
class ShardCheck:
    """Which shards of each split a run reads, and which it skipped as corrupt.

    ``skipped`` holds ``(path, rows, reason)``; its rows are reported in every
    epoch's metrics so a skip is never a silent loss.
    """

    root: Path
    skip_corrupt: bool
    files: dict[str, list[Path]] = field(default_factory=dict)
    skipped: list[tuple[str, int, str]] = field(default_factory=list)
    rows: dict[Path, int] = field(default_factory=dict)

    # With data.drop_out_of_range: the bins' (z_min, z_max), rows outside which are left out,
    # and how many there are per split (check_labels).
    z_range: tuple[float, float] | None = None
    out_of_range: dict[str, int] = field(default_factory=dict)

    @property
    def rows_skipped(self) -> int:
        return sum(rows for _, rows, _ in self.skipped)

    @property
    def rows_out_of_range(self) -> int:
        return sum(self.out_of_range.values()) if self.z_range else 0

    def check_labels(self, bins, drop: bool) -> None:
        """Count the labels outside ``bins`` (z_spec read alone, cheap); refuse them,
        naming the count and both ways forward, or (``drop``) note them to leave out.

        A label outside the bins would otherwise land silently in the first or
        last bin and teach the network a redshift the galaxy does not have.
        """
        import pyarrow as pa
        import pyarrow.parquet as pq

        lo, hi = bins.z_min, bins.z_max
        top, bottom = -math.inf, math.inf  # the extremes of the labels outside
        for split, files in self.files.items():
            out = 0
            for path in list(files):
                try:
                    z = pq.read_table(path, columns=["z_spec"]).column("z_spec").to_numpy()
                except (OSError, pa.ArrowException) as exc:  # a damaged page behind a sound footer
                    self.reject(split, path, first_line(exc, 160))  # stops here unless skip_corrupt
                    continue
                inside = (z >= lo) & (z < hi)
                out += int((~inside).sum())
                if not inside.all():
                    top = max(top, float(np.nanmax(z, initial=-math.inf)))
                    bottom = min(bottom, float(np.nanmin(z, initial=math.inf)))
            self.out_of_range[split] = out
        total = sum(self.out_of_range.values())
        if not total:
            return
        counts = ", ".join(f"{n} of {split}" for split, n in self.out_of_range.items() if n)
        if not drop:
            sets = ([f"--set data.z_max={edge_above(top):g}"] if top >= hi else []) + (
                [f"--set data.z_min={edge_below(bottom):g}"] if bottom < lo and edge_below(bottom) < lo else [])
            wider = f" ({' '.join(sets)})" if sets else ""
            raise ZrayError(
                f"{self.root}: {total} galaxies ({counts}) have z_spec outside the bins {lo:g} <= z < {hi:g}; "
                f"expected every label inside them: widen the bins{wider} or leave those galaxies out "
                "(--drop-out-of-range)"
            )
        for split, n in self.out_of_range.items():
            if n and n >= sum(self.rows.get(f, 0) for f in self.files[split]):
                raise ZrayError(f"{self.root}: every {split} galaxy has z_spec outside {lo:g} <= z < {hi:g}; "
                                "expected some inside the bins (check data.z_min and data.z_max)")
        self.z_range = (lo, hi)
        LOG.info(f"leaving out {total} galaxies ({counts}) with z_spec outside {lo:g} <= z < {hi:g} "
                 "(--drop-out-of-range)")

    def reject(self, split: str, path: Path, reason: str) -> None:
        """Skip ``path`` (with ``skip_corrupt``) or stop with a sentence naming it."""
        rows = self.rows.get(path, 0)
        if not self.skip_corrupt:
            raise ZrayError(
                f"{path}: shard is corrupt ({reason}); expected a readable zray shard "
                f"(rewrite the dataset, or set data.skip_corrupt: true to train without its {rows} rows)"
            )
        self.files[split] = [f for f in self.files[split] if f != path]
        self.skipped.append((str(path), rows, reason))
        LOG.info(f"skipping corrupt shard {path} ({rows} rows): {reason}")
        if not self.files[split]:
            raise ZrayError(f"{self.root}: every {split} shard is corrupt; expected at least one readable shard")


def check_shards(root, splits=("train", "val"), *, skip_corrupt: bool = False) -> ShardCheck:
    """Cheap preflight of every shard a run reads: its Parquet footer opens,
    holds the manifest's row count and the base columns.

    A damaged data page behind a sound footer is found later, when the rows
    are read (:func:`find_unreadable`).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    manifest = read_manifest(root)
    check = ShardCheck(Path(root), skip_corrupt)
    for split in splits:
        infos = manifest.shards[split]
        check.files[split] = [Path(root) / info.file for info in infos]
        for info in infos:
            check.rows[Path(root) / info.file] = info.rows
        for info in infos:
            path = Path(root) / info.file
            try:
                meta = pq.ParquetFile(path).metadata
                schema = meta.schema.to_arrow_schema()
            except FileNotFoundError:
                check.reject(split, path, "missing")
                continue
            except (OSError, pa.ArrowException) as exc:
                check.reject(split, path, f"unreadable footer: {first_line(exc, 160)}")
                continue
            if meta.num_rows != info.rows:
                check.reject(split, path, f"holds {meta.num_rows} rows but the manifest says {info.rows}")
            elif wrong := column_problems(schema, manifest.image_shape):
                check.reject(split, path, wrong[0])
    return check


def find_unreadable(files, columns=BASE_COLUMNS) -> tuple[Path, str] | None:
    """The first of ``files`` whose rows cannot be decoded, with the reason, or None.

    Reads one file at a time (memory bounded by a shard); used after a read
    failed, to name the file at fault, and to screen shards before streaming.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    for path in files:
        try:
            pq.read_table(path, columns=list(columns))
        except (OSError, pa.ArrowException) as exc:
            return Path(path), first_line(exc, 160)
    return None

"""The on-disk dataset format: Parquet shards per split plus ``manifest.json``.

A dataset directory holds ``{split}-{k:05d}.parquet`` files for the splits
train/val/test and a ``manifest.json`` that describes them (bands, image
shape, pixel scale, split seed and fractions, rows per shard and split, the
redshift range and a content hash). Images are stored as a pyarrow
fixed-shape tensor column so readers (pyarrow, Ray Data) get ``(N, 5, H, W)``
arrays back with no per-row decode.

Writing is :mod:`zray.data.writer` (atomic: a hidden temporary directory
renamed only once complete).

A row's split is a function of its ``id`` and the split seed only, so adding
rows later never moves existing rows between splits.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from zray import __version__
from zray.bins import RedshiftBins
from zray.data.catalog import id_key
from zray.errors import ZrayError, first_line
from zray.paths import inside

SCHEMA_VERSION = 1
BANDS = ("u", "g", "r", "i", "z")
SPLITS = ("train", "val", "test")
DEFAULT_FRACTIONS = (0.8, 0.1, 0.1)
PIXEL_SCALE = 0.396  # arcsec per pixel, SDSS
MANIFEST_NAME = "manifest.json"
BASE_COLUMNS = ("id", "image", "z_spec", "ebv")
DEFAULT_ROWS_PER_SHARD = 1000
DEFAULT_BINS = RedshiftBins()  # Pasquet et al.: 180 bins over 0 <= z < 0.4
_ROW_GROUP_ROWS = 256  # small row groups let readers stream within a shard

_U64 = np.uint64
_MASK53 = float(2**53)


# --------------------------------------------------------------------- hashing
def _splitmix64(x: np.ndarray) -> np.ndarray:
    """A fast, well-mixed 64-bit hash (wrapping uint64 arithmetic is intended)."""
    x = x + _U64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> _U64(30))) * _U64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> _U64(27))) * _U64(0x94D049BB133111EB)
    return x ^ (x >> _U64(31))


def id_hash(ids, seed: int) -> np.ndarray:
    """Hash of (id, seed) as uint64: the basis for assigning rows to splits.

    Depends only on the id and the seed, never on row order or batch
    boundaries, which is what keeps splits stable however the data is
    sharded or extended.
    """
    ids = id_key(ids).view(np.uint64)  # an id's 64 bits, signed or not
    with np.errstate(over="ignore"):
        salt = _splitmix64(np.array([seed & 0xFFFFFFFFFFFFFFFF], dtype=np.uint64))[0]
        return _splitmix64(ids ^ salt)


def id_dtype(manifest) -> np.dtype:
    """A dataset's id type (int64, or uint64 for ids above the signed range), from any of its
    shards: an empty split's ids then join the others' without turning into floats."""
    import pyarrow.parquet as pq

    files = [f for s in manifest.splits for f in manifest.files(s)]
    return np.dtype(pq.read_schema(files[0]).field("id").type.to_pandas_dtype()) if files else np.dtype(np.int64)


def assign_split(ids, seed: int = 0, fractions=DEFAULT_FRACTIONS) -> np.ndarray:
    """Index into :data:`SPLITS` for each id (0 train, 1 val, 2 test)."""
    u = (id_hash(ids, seed) >> _U64(11)).astype(np.float64) / _MASK53
    cuts = np.cumsum(np.asarray(fractions, dtype=np.float64))[:-1]
    return np.searchsorted(cuts, u, side="right").astype(np.int8)


def write_order(ids, seed: int = 0) -> np.ndarray:
    """The order in which zray's writers write rows: by a hash of the id, never
    the catalogue's order.

    Catalogues arrive sorted (by redshift, plate, sky position); written in
    this order, every shard and every run of rows is a random sample of its
    split, whatever tool later reads them in order. The same ids give the
    same order however the catalogue was sorted. (Salted apart from the split
    hash, so the order within a split is not the split's own hash range.)
    """
    return np.argsort(id_hash(ids, int(seed) ^ 0x5EED0D3E), kind="stable")


def _check_fractions(fractions) -> tuple[float, float, float]:
    fr = tuple(float(f) for f in fractions)
    if len(fr) != 3 or any(f < 0 for f in fr) or abs(sum(fr) - 1.0) > 1e-6:
        raise ZrayError(
            f"split fractions must be three non-negative numbers (train, val, test) "
            f"summing to 1, but got {fractions!r}"
        )
    return fr


# -------------------------------------------------------------------- manifest
@dataclass(frozen=True)
class ShardInfo:
    """One shard file (name relative to the dataset root) and its row count."""

    file: str
    rows: int


@dataclass(frozen=True)
class Manifest:
    """What ``manifest.json`` says about a dataset; see :func:`read_manifest`."""

    root: Path
    bands: tuple[str, ...]
    image_shape: tuple[int, int, int]
    pixel_scale: float
    split_seed: int
    split_fractions: tuple[float, float, float]
    z_range: tuple[float, float]
    rows_per_shard: int
    shards: Mapping[str, tuple[ShardInfo, ...]]
    columns: tuple[str, ...]
    hash: str
    schema_version: int = SCHEMA_VERSION
    source: Mapping = field(default_factory=dict)

    @property
    def splits(self) -> tuple[str, ...]:
        """The split names, in order (train, val, test), including empty ones."""
        return SPLITS

    @property
    def rows(self) -> dict[str, int]:
        """Rows per split."""
        return {s: sum(sh.rows for sh in self.shards.get(s, ())) for s in SPLITS}

    @property
    def total_rows(self) -> int:
        return sum(self.rows.values())

    def files(self, split: str) -> list[Path]:
        """Absolute paths of the shard files of ``split``, in order."""
        if split not in SPLITS:
            raise ZrayError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
        return [self.root / sh.file for sh in self.shards.get(split, ())]

    def all_files(self) -> list[Path]:
        return [p for s in SPLITS for p in self.files(s)]

    def to_dict(self) -> dict:
        return {
            "schema_version": self.schema_version,
            "bands": list(self.bands),
            "image_shape": list(self.image_shape),
            "pixel_scale": self.pixel_scale,
            "units": "nanomaggies",
            "split": {
                "seed": self.split_seed,
                "fractions": dict(zip(SPLITS, self.split_fractions)),
            },
            "z_range": list(self.z_range),
            "rows_per_shard": self.rows_per_shard,
            "rows": {"total": self.total_rows, **self.rows},
            "splits": {
                s: [{"file": sh.file, "rows": sh.rows} for sh in self.shards.get(s, ())]
                for s in SPLITS
            },
            "columns": list(self.columns),
            "hash": self.hash,
            "source": dict(self.source),
            "created_by": f"zray {__version__}",
        }


def read_manifest(root) -> Manifest:
    """Read and check ``root/manifest.json``; errors name the field at fault."""
    root = Path(root)
    path = root / MANIFEST_NAME
    if root.exists() and not root.is_dir():
        raise ZrayError(f"{root}: a file, not a dataset directory; expected a folder written by "
                        "`zray simulate` or `zray prepare`")
    if not root.is_dir():
        raise ZrayError(f"{root}: no such dataset directory")
    if not path.is_file():
        raise ZrayError(
            f"{root}: no {MANIFEST_NAME}; expected a dataset written by "
            f"`zray simulate` or `zray prepare`"
        )
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ZrayError(f"{path}: not readable JSON ({first_line(exc)})") from None
    try:
        return _manifest_from_dict(root, data)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError, OverflowError) as exc:
        raise ZrayError(f"{path}: missing or malformed field ({exc}); expected a zray manifest") from None


def _manifest_from_dict(root: Path, data: dict) -> Manifest:
    version = data["schema_version"]
    if version != SCHEMA_VERSION:
        raise ZrayError(
            f"{root / MANIFEST_NAME}: schema_version {version!r} is not supported; "
            f"expected {SCHEMA_VERSION}"
        )
    shape = tuple(int(v) for v in data["image_shape"])
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"image_shape {shape} must be 3 positive sizes")
    bands = data["bands"]
    if not (isinstance(bands, list) and len(bands) == shape[0] and all(isinstance(b, str) and b for b in bands)):
        raise ValueError(f"bands {bands!r} must name each of the {shape[0]} bands")
    z_range = tuple(float(v) for v in data["z_range"])
    if len(z_range) != 2 or not all(map(math.isfinite, z_range)) or not z_range[0] < z_range[1]:
        raise ValueError(f"z_range {list(z_range)} must be two finite numbers, low < high")
    splits = data["splits"]
    shards = {
        s: tuple(ShardInfo(_shard_file(root, e["file"]), _rows(e["rows"])) for e in splits.get(s, ()))
        for s in SPLITS
    }
    fr = data["split"]["fractions"]
    return Manifest(
        root=root,
        schema_version=version,
        bands=tuple(bands),
        image_shape=shape,  # type: ignore[arg-type]
        pixel_scale=float(data["pixel_scale"]),
        split_seed=int(data["split"]["seed"]),
        split_fractions=tuple(float(fr[s]) for s in SPLITS),  # type: ignore[arg-type]
        z_range=z_range,  # type: ignore[arg-type]
        rows_per_shard=int(data["rows_per_shard"]),
        shards=shards,
        columns=tuple(data["columns"]),
        hash=str(data["hash"]),
        source=dict(data.get("source", {})),
    )


def _rows(value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"shard rows {value!r} must be a whole number >= 0")
    return value


def _shard_file(root: Path, file) -> str:
    """A shard's file name from the manifest, refused unless it lies inside the dataset."""
    if not isinstance(file, str):
        raise TypeError(f"shard file {file!r} must be a string")
    inside(root, file, f"{root / MANIFEST_NAME}: splits")
    return file


def content_hash(root: Path, files: list[str]) -> str:
    """sha256 over each shard's name and bytes, in sorted name order."""
    h = hashlib.sha256()
    for name in sorted(files):
        h.update(name.encode())
        h.update(b"\0")
        with open(root / name, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return "sha256:" + h.hexdigest()


def image_type(shape) -> pa.DataType:
    """The Arrow type of the image column for a (5, H, W) shape."""
    return pa.fixed_shape_tensor(pa.float32(), tuple(int(v) for v in shape))


def column_problems(schema: pa.Schema, image_shape) -> list[str]:
    """What is wrong with a shard's base columns (missing, or of a type zray cannot read).

    Integers for id, floating point for z_spec and ebv (a file rewritten by
    another tool may widen float32 to float64), the manifest's image tensor.
    """
    expected = {"id": (pa.types.is_integer, "an integer"), "z_spec": (pa.types.is_floating, "floating point"),
                "ebv": (pa.types.is_floating, "floating point")}
    problems = []
    for name in ("id", "image", "z_spec", "ebv"):
        if name not in schema.names:
            problems.append(f"column {name!r} is missing; expected columns id, image, z_spec and ebv")
            continue
        typ = schema.field(name).type
        if name == "image":
            if typ != image_type(image_shape):
                problems.append(f"column 'image' has type {typ}; expected {image_type(image_shape)} as in the manifest")
        elif not expected[name][0](typ):
            problems.append(f"column {name!r} has type {typ}; expected {expected[name][1]}")
    return problems


def shard_schema(image_shape, extra: Mapping[str, pa.DataType] | None = None,
                 id_type: pa.DataType | None = None) -> pa.Schema:
    """A shard's columns: ``id`` is int64, or uint64 in a dataset whose catalogue gave such ids."""
    fields = [
        pa.field("id", id_type or pa.int64(), nullable=False),
        pa.field("image", image_type(image_shape), nullable=False),
        pa.field("z_spec", pa.float32(), nullable=False),
        pa.field("ebv", pa.float32(), nullable=False),
    ]
    fields += [pa.field(name, typ) for name, typ in (extra or {}).items()]
    return pa.schema(fields)

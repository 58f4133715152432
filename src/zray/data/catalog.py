"""Reading user catalogues (CSV or Parquet) with checked columns.

Shared by ``zray simulate --catalog``, ``zray prepare`` and ``zray cutouts``. Rows in messages
are counted from 1 over the data rows (the CSV header is not a row), and the
object's id is given too, so users can find the line either way.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

from zray.bins import RedshiftBins
from zray.errors import ZrayError, first_line


def read_catalog(path, required: tuple[str, ...]) -> pa.Table:
    """Read a CSV or Parquet catalogue and check the ``required`` columns exist."""
    path = Path(path)
    if not path.is_file():
        raise ZrayError(f"{path}: catalogue file not found")
    suffix = path.suffix.lower()
    try:
        if suffix in (".parquet", ".pq"):
            import pyarrow.parquet as pq

            table = pq.read_table(path)
        elif suffix in (".csv", ".txt"):
            import pyarrow.csv as pcsv

            table = pcsv.read_csv(path)
        else:
            raise ZrayError(f"{path}: unknown catalogue format {suffix!r}; expected .csv or .parquet")
    except (OSError, pa.ArrowException) as exc:
        raise ZrayError(f"{path}: not a readable catalogue ({first_line(exc)})") from None
    missing = [c for c in required if c not in table.column_names]
    if missing:
        raise ZrayError(
            f"{path}: missing column(s) {', '.join(missing)}; expected columns "
            f"{', '.join(required)} (found {', '.join(table.column_names) or 'none'})"
        )
    twice = sorted({c for c in table.column_names if table.column_names.count(c) > 1})
    if twice:
        raise ZrayError(f"{path}: column {twice[0]!r} appears more than once; expected each column once")
    if table.num_rows == 0:
        raise ZrayError(f"{path}: catalogue has no rows")
    return table


def numeric_column(table: pa.Table, name: str, path, ids=None) -> np.ndarray:
    """A column as float64; nulls, text or non-finite values name their row."""
    col = table.column(name)
    try:
        values = col.to_numpy(zero_copy_only=False).astype(np.float64)
    except (ValueError, TypeError, pa.ArrowException):
        raise ZrayError(f"{path}: column {name!r} has type {col.type}; expected numbers") from None
    bad = np.flatnonzero(~np.isfinite(values))
    if bad.size:
        raise ZrayError(f"{path}: {where(bad[0], ids)}: {name} is missing or not finite; expected a number")
    return values


def id_column(table: pa.Table, path) -> np.ndarray:
    """The ``id`` column as unique int64; duplicates name both rows."""
    col = table.column("id")
    if not pa.types.is_integer(col.type):
        raise ZrayError(f"{path}: column 'id' has type {col.type}; expected integers")
    if col.null_count:
        row = int(np.flatnonzero(col.is_null().to_numpy(zero_copy_only=False))[0])
        raise ZrayError(f"{path}: row {row + 1}: id is missing; expected an integer")
    ids = col.to_numpy().astype(np.int64)
    order = np.argsort(ids, kind="stable")
    dup = np.flatnonzero(ids[order][1:] == ids[order][:-1])
    if dup.size:
        a, b = sorted(order[dup[0]: dup[0] + 2])
        raise ZrayError(f"{path}: rows {a + 1} and {b + 1} share id {ids[a]}; expected unique ids")
    return ids


def check_redshifts(z: np.ndarray, bins: RedshiftBins, path, ids, name: str = "z_spec") -> None:
    bad = np.flatnonzero(~bins.contains(z))
    if bad.size:
        i = bad[0]
        raise ZrayError(
            f"{path}: {where(i, ids)}: {name} {z[i]:.4g} is outside the binning range; "
            f"expected {bins.z_min} <= z < {bins.z_max}"
        )


def ebv_column(table: pa.Table, path, ids) -> np.ndarray | None:
    """The ``ebv`` column (E(B-V), magnitudes, >= 0), or None where the catalogue has none."""
    if "ebv" not in table.column_names:
        return None
    ebv = numeric_column(table, "ebv", path, ids)
    if (ebv < 0).any():
        i = int(np.flatnonzero(ebv < 0)[0])
        raise ZrayError(f"{path}: {where(i, ids)}: ebv {ebv[i]} is negative; expected E(B-V) >= 0")
    return ebv


def magnitude_columns(table: pa.Table, path, ids, bands: str) -> dict[str, np.ndarray]:
    """The optional ``mag_<band>`` columns the catalogue has, checked, to carry into the shards."""
    return {f"mag_{b}": numeric_column(table, f"mag_{b}", path, ids) for b in bands
            if f"mag_{b}" in table.column_names}


def where(i: int, ids=None) -> str:
    return f"row {int(i) + 1}" + (f" (id {int(ids[i])})" if ids is not None else "")

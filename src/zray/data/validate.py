"""Checking a dataset directory against its manifest.

One scan serves two callers: :func:`validate_dataset` stops at the first
problem and raises it as a :class:`ZrayError` (training refuses bad data),
while :func:`inspect_dataset` collects every problem and the z distribution
for ``zray inspect``. The scan reads one shard at a time, so memory stays
bounded by the largest shard.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from zray.data.shards import (
    SPLITS,
    Manifest,
    assign_split,
    column_problems,
    content_hash,
    read_manifest,
)
from zray.errors import ZrayError, first_line


@dataclass
class DatasetReport:
    """What a scan found: the manifest, redshift/E(B-V) values and problems."""

    manifest: Manifest
    z_spec: dict[str, np.ndarray] = field(default_factory=dict)
    ebv: np.ndarray | None = None
    problems: list[str] = field(default_factory=list)
    problems_dropped: int = 0
    # Splits whose row order follows redshift (see :func:`order_warnings`).
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems and not self.problems_dropped


class _Collector:
    """Raise on the first problem (strict) or keep up to ``limit`` of them."""

    def __init__(self, report: DatasetReport, strict: bool, limit: int) -> None:
        self.report, self.strict, self.limit = report, strict, limit

    def __call__(self, message: str) -> None:
        if self.strict:
            raise ZrayError(message)
        if len(self.report.problems) < self.limit:
            self.report.problems.append(message)
        else:
            self.report.problems_dropped += 1


def validate_dataset(root) -> Manifest:
    """Check every shard against the manifest; raise the first problem found.

    Checks: each shard is readable Parquet with the expected schema and row
    count, pixels are finite, ids are unique across splits and sit in the
    split their hash assigns, z_spec is in the manifest's range, and the
    content hash matches. Returns the manifest when all is well.
    """
    return _scan(Path(root), strict=True, limit=1).manifest


def inspect_dataset(root, *, max_problems: int = 20) -> DatasetReport:
    """Scan the whole dataset and report its z distribution, all problems and
    the warnings of :func:`order_warnings`."""
    report = _scan(Path(root), strict=False, limit=max_problems)
    report.warnings = order_warnings(report)
    return report


# A split's row order counts as following redshift when Spearman's rank
# correlation between row position and z_spec reaches this size and is
# significant. zray writes rows in an order set by a hash of the id, so on its
# own files the correlation is noise (|rho| ~ 1/sqrt(rows): 0.03 for 1,000
# rows); catalogues sorted by redshift give |rho| near 1.
ORDER_RHO = 0.1
ORDER_P = 1e-3


def order_warnings(report: DatasetReport) -> list[str]:
    """One sentence per split whose rows sit in redshift order (files from another tool).

    zray's training reshuffles every epoch, so this is not a problem for zray;
    it is for a tool that reads the shards in order (or takes the first rows).
    """
    from scipy.stats import spearmanr

    out = []
    for split, z in report.z_spec.items():
        if len(z) < 10 or np.ptp(z) == 0:
            continue
        rho, p = spearmanr(np.arange(len(z)), z)
        if abs(rho) >= ORDER_RHO and p < ORDER_P:
            way = "increasing" if rho > 0 else "decreasing"
            out.append(
                f"split {split!r}: row order follows redshift ({way}; Spearman rho {rho:+.2f} over "
                f"{len(z)} rows, threshold |rho| >= {ORDER_RHO}); zray shuffles every epoch, but a tool "
                "that reads these shards in order, or takes their first rows, sees a biased sample"
            )
    return out


def _scan(root: Path, *, strict: bool, limit: int) -> DatasetReport:
    manifest = read_manifest(root)
    report = DatasetReport(manifest)
    problem = _Collector(report, strict, limit)
    listed = {sh.file for s in SPLITS for sh in manifest.shards[s]}
    on_disk = {p.name for p in root.glob("*.parquet") if p.name.split("-")[0] in SPLITS}
    for name in sorted(on_disk - listed):
        problem(f"{root / name}: shard is not listed in {root / 'manifest.json'}; expected only listed shards")
    seen_ids: dict[int, str] = {}
    ebvs = []
    for split in SPLITS:
        zs = []
        for info in manifest.shards[split]:
            path = root / info.file
            table = _read_shard(path, manifest, info.rows, problem)
            if table is None:
                continue
            z, ebv = _check_rows(path, table, manifest, split, seen_ids, problem)
            zs.append(z)
            ebvs.append(ebv)
        report.z_spec[split] = np.concatenate(zs) if zs else np.zeros(0, np.float32)
    report.ebv = np.concatenate(ebvs) if ebvs else np.zeros(0, np.float32)
    if listed and all((root / f).is_file() for f in listed):
        actual = content_hash(root, sorted(listed))
        if actual != manifest.hash:
            problem(
                f"{root / 'manifest.json'}: content hash {manifest.hash} does not match the "
                f"shards ({actual}); the shards were changed after writing"
            )
    return report


def _read_shard(path: Path, manifest: Manifest, rows: int, problem) -> pa.Table | None:
    if not path.is_file():
        problem(f"{path}: shard listed in the manifest is missing")
        return None
    try:
        pf = pq.ParquetFile(path)
        schema = pf.schema_arrow
        table = pf.read()
    except (OSError, pa.ArrowException) as exc:
        problem(f"{path}: not a readable Parquet file ({first_line(exc)}); expected a zray shard")
        return None
    wrong = column_problems(schema, manifest.image_shape)
    if wrong:
        problem(f"{path}: {wrong[0]}")
        return None
    if table.num_rows != rows:
        problem(f"{path}: holds {table.num_rows} rows but the manifest says {rows}")
    return table


def _check_rows(path, table: pa.Table, manifest: Manifest, split: str, seen_ids: dict, problem):
    ids = table.column("id").to_numpy()
    z = table.column("z_spec").to_numpy()
    ebv = table.column("ebv").to_numpy()
    image = table.column("image").combine_chunks().to_numpy_ndarray()
    bad = np.flatnonzero(~np.isfinite(image).reshape(len(ids), -1).all(axis=1))
    for i in bad[:3]:
        problem(f"{path}: row {i} (id {ids[i]}): image has NaN or infinite pixels; expected finite values")
    z_min, z_max = manifest.z_range
    bad = np.flatnonzero(~((z >= z_min) & (z < z_max)))
    for i in bad[:3]:
        problem(f"{path}: row {i} (id {ids[i]}): z_spec {float(z[i]):.4g} is outside the range; "
                f"expected {z_min} <= z < {z_max}")
    bad = np.flatnonzero(~(np.isfinite(ebv) & (ebv >= 0)))
    for i in bad[:3]:
        problem(f"{path}: row {i} (id {ids[i]}): ebv {float(ebv[i]):g} is invalid; expected a finite E(B-V) >= 0")
    want = assign_split(ids, manifest.split_seed, manifest.split_fractions)
    bad = np.flatnonzero(want != SPLITS.index(split))
    for i in bad[:3]:
        problem(
            f"{path}: row {i} (id {ids[i]}) belongs to split {SPLITS[want[i]]!r} under seed "
            f"{manifest.split_seed}; expected only {split!r} rows in this shard"
        )
    for i, ident in enumerate(ids.tolist()):
        if ident in seen_ids:
            problem(f"{path}: row {i}: id {ident} duplicates a row of {seen_ids[ident]}; expected unique ids")
        else:
            seen_ids[ident] = path.name
    return z, ebv


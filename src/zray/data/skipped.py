"""The galaxies a command left out, and why: ``OUT.skipped.csv`` beside its output.

``zray cutouts`` (always) and ``zray prepare --skip-bad`` (when asked) write
a dataset of the galaxies they could use and, beside it, one CSV row per
galaxy they could not: its catalogue row (counted from 1, as the header is
row 0), its id, a short reason (``file missing``) and the detail (which file,
what was wrong). The file is written whole or not at all, and replaced only
when it is recognisably one of these lists.
"""

from __future__ import annotations

import csv
import os
from collections import Counter
from pathlib import Path

SUFFIX = ".skipped.csv"
#: The two lists' header rows: ``zray prepare`` and ``zray predict`` (a catalogue of cutout files),
#: ``zray cutouts`` (a catalogue of positions).
PREPARE_HEADER = ["row", "id", "reason", "detail"]
CUTOUTS_HEADER = ["row", "id", "ra", "dec", "reason", "detail"]


def path_for(out: Path) -> Path:
    """``data/mine`` -> ``data/mine.skipped.csv``."""
    out = Path(out)
    return out.parent / f"{out.name}{SUFFIX}"


def is_list(path: Path) -> bool:
    """True where ``path`` is a list of skipped galaxies zray wrote (its header row says so)."""
    try:
        with open(path, newline="") as fh:
            header = next(csv.reader(fh), None)
    except (OSError, UnicodeDecodeError, csv.Error):
        return False
    return header in (PREPARE_HEADER, CUTOUTS_HEADER)


def write(path: Path, header: list[str], rows: list) -> None:
    """Write the list atomically: a temporary name in the same folder (made if missing), then a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(header)
            w.writerows(rows)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def count_line(counts: Counter) -> str:
    """``3 off every frame, 1 band missing``: galaxies not written, by reason, the most first
    (ties in alphabetical order)."""
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0].lower()))
    return ", ".join(f"{v} {k}" for k, v in ranked) or "none"

"""The galaxies a command left out, and why: ``OUT.skipped.csv`` beside its output.

``zray cutouts`` (always) and ``zray prepare --skip-bad`` / ``zray predict
--skip-bad`` (when asked) write the galaxies they could use and, beside their
output, one CSV row per galaxy they could not: its catalogue row (counted
from 1, as the header is row 0), its id, a short reason (``file missing``)
and the detail (which file, what was wrong). The file is written whole or
not at all, once the output it describes is in place, and replaced or
removed only when it is recognisably one of these lists.
"""

from __future__ import annotations

import csv
import os
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from zray.console import LOG

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


def reasons(kinds: Iterable[str]) -> str:
    """``3 file missing, 1 unreadable FITS``: the reasons of the galaxies left out, counted."""
    return count_line(Counter(kinds))


def publish(listing: Path, listed: list[list], *, source, total: int, overwrite: bool, inputs) -> None:
    """Once the output is in place: the list of the galaxies left out (``[row, id, reason,
    detail]``, as ``zray prepare`` and ``zray predict`` give them), and a warning counting them;
    or, with nothing left out, the list an output replaced by ``overwrite`` had."""
    if listed:
        write(listing, PREPARE_HEADER, listed)
        LOG.warning(f"{source}: left out {len(listed)} of {total} galaxies whose cutouts cannot be used "
                    f"({reasons(row[2] for row in listed)}); listed with their reasons in {listing}")
    elif overwrite and listing.is_file() and is_list(listing) \
            and not any(os.path.realpath(listing) == os.path.realpath(p) for p in inputs):
        listing.unlink()  # it described the output just replaced

"""Writing outputs: checked first, published in one step, replacing only what zray wrote.

Every command that writes a file or folder the user names (``--out``) goes
through here, so the rules hold everywhere:

- :func:`check_output` before any work: the output must not be, hold, or
  lie inside an input of the same command (``zray predict --out`` naming one
  of its own shards); an existing output is replaced only with
  ``--overwrite``, and only when zray wrote it: a folder must hold nothing but
  the files recorded in its :data:`RECORD` (``zray evaluate --overwrite``
  never deletes a file the user put in the report folder), a single file
  must be recognised by the command as its own.
- :func:`publish_dir` at the end: the finished temporary folder renamed into
  place, with the list of its files recorded, so no reader ever sees half
  of it.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path

from zray.errors import ZrayError

__all__ = ["RECORD", "check_output", "make_parents", "publish_dir", "remove_parents"]

# The list of files zray wrote into an output folder, and what kind of output it is.
RECORD = ".zray-files.json"
# Files zray adds to a published folder of that kind later, outside its record:
# a dataset's reference predictors (zray.baselines), kept with the data on first use.
WRITTEN_LATER = {"dataset": ("baselines.json", "baselines.parquet")}


def publish_dir(tmp: Path, out: Path, kind: str | None = None) -> None:
    """Rename the complete folder ``tmp`` to ``out``, replacing any earlier ``out``.

    With ``kind`` (``"dataset"``, ``"bundle"``, ``"report"``), the files of
    ``tmp`` are first recorded in :data:`RECORD`, so a later ``--overwrite``
    can tell them from files someone else put there. The earlier folder is
    moved aside first and removed only once the new one is in place, so a
    crash in between leaves one of the two whole.
    """
    if kind is not None:
        files = sorted(p.relative_to(tmp).as_posix() for p in tmp.rglob("*") if p.is_file())
        (tmp / RECORD).write_text(json.dumps({"kind": kind, "files": files}, indent=1) + "\n")
    old = out.with_name(f".{out.name}.old-{os.getpid()}")
    if out.exists():
        out.rename(old)
    tmp.rename(out)
    shutil.rmtree(old, ignore_errors=True)


def make_parents(out: Path) -> list[Path]:
    """Make ``out``'s missing parent folders; returns them, deepest first, so that a
    command that fails can take them away again (:func:`remove_parents`)."""
    made = []
    for parent in Path(out).parents:
        if parent.exists():
            break
        made.append(parent)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    return made


def remove_parents(made: list[Path]) -> None:
    """Remove the folders :func:`make_parents` made, where they are still empty."""
    for folder in made:
        try:
            folder.rmdir()
        except OSError:
            return


def check_output(out: Path, *, kind: str, overwrite: bool, inputs: Iterable[Path] = (),
                 ours: Callable[[Path], bool] | None = None, sealed: Iterable[Path] = ()) -> None:
    """Refuse an output that would replace an input or anything zray did not write.

    ``kind`` names the output (``"dataset"``, ``"bundle"``, ``"report"``, ``"frames"`` for a
    folder published by :func:`publish_dir`; anything else for a single
    file, which ``ours(path)`` must recognise as zray's own before it is
    replaced). ``inputs`` are the paths the same command reads: the output
    may not be one, nor hold one. ``sealed`` are input folders zray wrote (a
    dataset, a bundle, a search's run): the output may not lie anywhere
    inside them either, even as a new file, where it would become a stray
    shard or member. A plain input folder (the user's FITS cutouts, read by
    name) may hold a new output; any file of theirs it would replace is
    refused below, as not zray's.
    """
    out = Path(out)
    target = Path(os.path.realpath(out))  # unlike Path.resolve, never raises on a link loop
    sealed = list(sealed)
    for given in (*inputs, *sealed):
        source = Path(os.path.realpath(given))
        clash = target == source or source.is_relative_to(target) or (given in sealed and target.is_relative_to(source))
        if clash:
            raise ZrayError(f"{out}: is, holds or lies inside {given}, an input of this command; "
                            "expected an output apart from the command's inputs")
    if not out.exists() and not out.is_symlink():
        return
    folder = kind in ("dataset", "bundle", "report", "frames")
    if folder:
        if not out.is_dir() or out.is_symlink():
            raise ZrayError(f"{out}: exists and is not a folder; expected a new or empty folder for the {kind}")
        if not any(out.iterdir()):
            return
        recorded = _recorded(out)
        if recorded is None:
            raise ZrayError(f"{out}: already exists and was not written by zray; expected a new or empty folder")
        found_kind, files = recorded
        files = files | set(WRITTEN_LATER.get(found_kind, ()))
        foreign = sorted(p.relative_to(out).as_posix() for p in out.rglob("*")
                         if (p.is_file() or p.is_symlink()) and p.name != RECORD
                         and p.relative_to(out).as_posix() not in files)
        if foreign:
            raise ZrayError(f"{out}: holds {foreign[0]}, which zray did not write; expected a folder holding only "
                            f"zray's {found_kind} files (move yours elsewhere, or choose another --out)")
        if found_kind != kind:
            raise ZrayError(f"{out}: holds a zray {found_kind}, not a {kind}; choose another --out")
    elif out.is_dir() or not (ours and ours(out)):
        raise ZrayError(f"{out}: exists and was not written by zray; expected a new file name "
                        "(zray replaces only its own outputs)")
    if not overwrite:
        raise ZrayError(f"{out}: already exists (a zray {kind}); use --overwrite to replace it, or another --out")


def _recorded(out: Path) -> tuple[str, set[str]] | None:
    """(kind, files) from ``out``'s record, or None where there is no readable record."""
    try:
        data = json.loads((out / RECORD).read_text())
        return str(data["kind"]), {str(f) for f in data["files"]}
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError):
        return None

"""Paths the user typed, made absolute once, where the command was started.

Ray runs a search's trials, Ray Train's workers and Ray Data's tasks in
processes whose working directory is not the user's, so a relative path
handed down to them points somewhere else. Every path a user gives (in a
search-space file or on the command line) goes through :func:`absolute`
before Ray starts; nothing downstream depends on the working directory.
Object-store URIs (``s3://``, ``gs://``, ...) pass through unchanged.

Paths the user gives for their own data and outputs go where the user says.
Names that zray puts *under* a root are another matter: an experiment name
under the runs folder, a member under its bundle, a shard under its dataset.
Those come from a command line or from a file someone else may have written,
so they pass through :func:`check_name` or :func:`inside`, which refuse a
name that would lead out of its root (``..``, an absolute path, a symbolic
link pointing out) or that no file system could hold.
"""

from __future__ import annotations

import os
import re
from pathlib import Path, PurePosixPath

from zray.errors import ZrayError

__all__ = ["NAME_MAX", "absolute", "check_name", "click_absolute", "click_name", "inside", "name_problem"]

# An experiment or run name is one folder: letters, digits, '-', '_', '.', not
# starting with a dot (so never '.' or '..'), and short enough that the trial
# folders zray derives from it (name, identity, trial id) stay well under the
# 255-byte limit of file names on every common file system.
NAME_MAX = 100
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def absolute(path: str | os.PathLike | None, base: str | os.PathLike | None = None):
    """``path`` made absolute against ``base`` (default: the current directory).

    Returns the same type family it was given: a ``str`` for a ``str`` (so a
    URI stays a ``str``), a ``Path`` for a ``Path``; ``None`` stays ``None``.

    >>> absolute("s3://bucket/zray")
    's3://bucket/zray'
    >>> absolute("/data/sim")
    '/data/sim'
    """
    if path is None:
        return None
    text = os.fspath(path)
    if "://" in text:
        return text
    try:
        given = Path(text).expanduser()
    except RuntimeError:  # ~someone without a home directory here: the name is taken as written
        given = Path(text)
    resolved = Path(os.path.abspath(Path(base or os.getcwd()) / given))
    return resolved if isinstance(path, Path) else str(resolved)


def click_absolute(ctx, param, value):
    """A click callback: the option's or argument's path(s) made absolute."""
    if isinstance(value, tuple):
        return tuple(absolute(v) for v in value)
    return absolute(value)


def name_problem(name: str) -> str | None:
    """What is wrong with ``name`` as a folder name under a root, or ``None``."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        return f"must be letters, digits, '-', '_' or '.' (not starting with '.' or '-'), got {name!r}"
    if len(name) > NAME_MAX:
        return f"must be at most {NAME_MAX} characters, got {len(name)}"
    return None


def check_name(name: str, what: str) -> str:
    """``name`` if it is one safe folder name, else a :class:`ZrayError` naming ``what``."""
    problem = name_problem(name)
    if problem:
        raise ZrayError(f"{what}: {problem}; expected one folder name such as quickstart-2")
    return name


def click_name(ctx, param, value):
    """A click callback: an experiment or run name checked by :func:`check_name`."""
    if value is None:
        return None
    problem = name_problem(value)
    if problem:
        import click

        raise click.BadParameter(f"{problem}; expected one folder name such as quickstart-2")
    return value


def inside(root: str | os.PathLike, relative: str, what: str) -> Path:
    """``root / relative``, refused when it would lead out of ``root``.

    ``relative`` is a path read from a file (a shard in a manifest, a member
    in ``bundle.json``): it must be relative, without ``..``, and must not
    reach out of ``root`` through a symbolic link. ``what`` names the file and
    field it came from, for the error.

    >>> str(inside("/data/sim", "train-00000.parquet", "manifest.json"))
    '/data/sim/train-00000.parquet'
    """
    root = Path(root)
    text = relative if isinstance(relative, str) else ""
    rel = PurePosixPath(text)
    escapes = (not text or "\0" in text or "\\" in text or rel.is_absolute() or ".." in rel.parts
               or any(len(part.encode()) > 255 for part in rel.parts))
    path = root / rel
    if not escapes:
        try:
            escapes = not path.resolve().is_relative_to(root.resolve())
        except (OSError, RuntimeError):  # a symlink loop, or a name the OS will not take
            escapes = True
    if escapes:
        raise ZrayError(f"{what}: path {relative!r} is not inside {root}; expected a relative path "
                        "within that folder (no '..', no absolute path, no link leading out)")
    return path

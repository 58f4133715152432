"""Paths the user typed, made absolute once, where the command was started.

Ray runs a search's trials, Ray Train's workers and Ray Data's tasks in
processes whose working directory is not the user's, so a relative path
handed down to them points somewhere else. Every path a user gives (in a
search-space file or on the command line) goes through :func:`absolute`
before Ray starts; nothing downstream depends on the working directory.
Object-store URIs (``s3://``, ``gs://``, ...) pass through unchanged.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["absolute", "click_absolute"]


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
    resolved = Path(os.path.abspath(Path(base or os.getcwd()) / Path(text).expanduser()))
    return resolved if isinstance(path, Path) else str(resolved)


def click_absolute(ctx, param, value):
    """A click callback: the option's or argument's path(s) made absolute."""
    if isinstance(value, tuple):
        return tuple(absolute(v) for v in value)
    return absolute(value)

"""Cutout arrays: the one shape check and the one centre crop.

Raw cutouts travel as ``(N, bands, H, W)`` float32 in nanomaggies (the shard
format, :mod:`zray.data.shards`); the network sees ``(N, S, S, bands)``
after :func:`zray.data.pipeline.preprocess_batch` and a centre crop to the
model's image size. Ingest, the shard writer, training and bundles all use
these two functions, so a cutout is judged and cropped the same way everywhere.

    >>> import numpy as np
    >>> crop_centre(np.zeros((2, 5, 40, 40)), 32).shape
    (2, 5, 32, 32)
    >>> check_cutouts(np.zeros((2, 5, 40, 40)), n_bands=5, label="cutouts.npy", min_size=32)
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from zray.errors import ZrayError

__all__ = ["crop_centre", "check_cutouts", "check_size"]

MIN_SIZE, MAX_SIZE = 8, 512


def check_size(size) -> None:
    """The ``--size`` every command that makes cutouts takes: MIN_SIZE to MAX_SIZE pixels."""
    if not MIN_SIZE <= int(size) <= MAX_SIZE:
        raise ZrayError(f"--size must be between {MIN_SIZE} and {MAX_SIZE} pixels, but got {size!r}")


def crop_centre(image: np.ndarray, size: int, label: str = "cutouts", axes: tuple[int, int] = (-2, -1)) -> np.ndarray:
    """Centre-crop ``axes`` (default the last two) to size x size; smaller cutouts are an error."""
    h, w = image.shape[axes[0]], image.shape[axes[1]]
    if h < size or w < size:
        raise ZrayError(f"{label}: cutout is {h}x{w} pixels; expected at least {size}x{size}")
    if (h, w) == (size, size):
        return image
    y0, x0 = (h - size) // 2, (w - size) // 2
    index = [slice(None)] * image.ndim
    index[axes[0]] = slice(y0, y0 + size)
    index[axes[1]] = slice(x0, x0 + size)
    return image[tuple(index)]


def check_cutouts(images: np.ndarray, *, n_bands: int, label: str, min_size: int | None = None,
                  row: Callable[[int], str] | None = None, bands: str = "") -> None:
    """Raise one :class:`ZrayError` sentence unless ``images`` is ``(N, n_bands, S, S)``
    (S >= ``min_size``) with finite pixels. ``row(i)`` names row i in the message
    (default ``LABEL: row i``); ``bands`` (e.g. ``u,g,r,i,z``) is quoted when the count is wrong."""
    images = np.asarray(images)
    order = f" in band order {bands}" if bands else ""
    if images.ndim != 4 or images.shape[1] != n_bands:
        raise ZrayError(f"{label}: images have shape {images.shape}; expected (N, {n_bands}, H, W) raw "
                        f"cutouts{order}")
    h, w = images.shape[2:]
    if h != w:
        raise ZrayError(f"{label}: images are {h}x{w}; expected square cutouts")
    if min_size is not None and h < min_size:
        raise ZrayError(f"{label}: images are {h}x{w} pixels; expected at least {min_size}x{min_size}")
    bad = ~np.isfinite(images).reshape(len(images), -1).all(axis=1)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        where = row(i) if row else f"{label}: row {i}"
        raise ZrayError(f"{where}: image has NaN or infinite pixels; expected finite values")

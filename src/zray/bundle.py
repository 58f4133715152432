"""Reading bundles: what ``zray export`` wrote, checked, and loaded for prediction.

A bundle is a directory::

    bundle.json          what predicting needs, and where the models came from
    members/m0/          model.json + weights.weights.h5 (zray.models.save_model)
    members/m1/ ...      further members of an ensemble

:func:`read_bundle` checks ``bundle.json`` and the members' files without
TensorFlow (the driver of ``zray predict`` does it before Ray starts);
:func:`load` returns a :class:`Bundle` whose ``predict`` takes raw cutouts
exactly as the shards hold them. Every problem is a
:class:`~zray.errors.ZrayError` naming the file and what was expected.
Writing bundles is :mod:`zray.export`.

    >>> import zray
    >>> bundle = zray.load("bundles/quickstart")            # doctest: +SKIP
    >>> pdf = bundle.predict(images, ebv)                    # doctest: +SKIP
    >>> pdf.shape                                            # doctest: +SKIP
    (1000, 180)
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from zray import __version__
from zray.bins import RedshiftBins
from zray.errors import ZrayError
from zray.models._saving import INFO_FILE, WEIGHTS_FILE, read_info, sha256_of
from zray.paths import inside

__all__ = ["BUNDLE_FILE", "FORMAT_VERSION", "MEMBERS_DIR", "PREPROCESSING", "Bundle", "BundleInfo",
           "load", "read_bundle"]

FORMAT_VERSION = 2  # 2: a SHA-256 of every member file in bundle.json, required
BUNDLE_FILE = "bundle.json"
MEMBERS_DIR = "members"
PREPROCESSING = {
    "pixel_scaling": "asinh-like sqrt scaling sign(x)(sqrt(|x|+1)-1) of nanomaggies",
    "input_layout": "raw images (N, bands, H, W) in nanomaggies, as in the shards",
    "model_layout": "channels last (N, image_size, image_size, bands)",
    "crop": "centre crop to image_size x image_size after scaling",
    "ebv": "E(B-V) as a second input of shape (N, 1)",
}



@dataclass(frozen=True)
class BundleInfo:
    """The checked contents of ``bundle.json``; reading it needs no TensorFlow."""

    path: Path
    data: dict[str, Any]
    bins: RedshiftBins
    bands: tuple[str, ...]
    image_size: int
    member_dirs: tuple[Path, ...]
    temperature: float = 1.0

    @property
    def manifest_hash(self) -> str | None:
        return self.data.get("data", {}).get("manifest_hash")

    @property
    def data_path(self) -> Path | None:
        """Where the training data was at export (bundle.json's data.path), or None if not recorded."""
        path = self.data.get("data", {}).get("path")
        return Path(path) if isinstance(path, str) and path else None

    def check_data(self, manifest) -> None:
        """Refuse data whose band order or image size does not fit this bundle."""
        where = manifest.root / "manifest.json"
        if tuple(manifest.bands) != self.bands:
            raise ZrayError(
                f"{where}: bands are {','.join(manifest.bands)} but bundle {self.path} expects "
                f"{','.join(self.bands)}; expected data in the bundle's band order"
            )
        h, w = manifest.image_shape[-2:]
        if min(h, w) < self.image_size:
            raise ZrayError(
                f"{where}: images are {h}x{w} pixels but bundle {self.path} needs at least "
                f"{self.image_size}x{self.image_size}; expected cutouts at least as large as the training ones"
            )


def read_bundle(path, verify: bool = True) -> BundleInfo:
    """Read and check ``bundle.json`` and every member's ``model.json``, without TensorFlow.

    Nothing in a bundle is trusted: fields are typed and ranged, each member
    lies inside the bundle, and each member file has a checksum in
    ``bundle.json`` (required); with ``verify`` the files are hashed and
    compared. The driver of ``zray predict`` runs this before Ray starts, so
    a broken bundle is one sentence, not a traceback from every worker.
    """
    path = Path(path)
    file = path / BUNDLE_FILE
    if not path.is_dir():
        raise ZrayError(f"{path}: no such bundle directory; expected the --out folder of `zray export`")
    try:
        data = json.loads(file.read_text())
    except FileNotFoundError:
        raise ZrayError(f"{file}: not found; expected a bundle written by `zray export`") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ZrayError(f"{file}: unreadable ({exc}); expected JSON written by `zray export`") from None
    if not isinstance(data, dict):
        raise ZrayError(f"{file}: holds {type(data).__name__}; expected a JSON object written by `zray export`")
    if data.get("format") != FORMAT_VERSION:
        raise ZrayError(
            f"{file}: bundle format {data.get('format')!r} is not supported by zray {__version__}; "
            f"expected format {FORMAT_VERSION} (export the run again with `zray export`)"
        )
    try:
        b = data["bins"]
        bins = RedshiftBins(_number(b["z_min"], "bins.z_min", low=0.0), _number(b["z_max"], "bins.z_max"),
                            _count(b["n_bins"], "bins.n_bins", low=2))
        if not bins.z_max > bins.z_min:
            raise ValueError(f"'bins.z_max' must be > bins.z_min ({bins.z_min}), got {bins.z_max}")
        bands = data["bands"]
        if not (isinstance(bands, list) and bands and all(isinstance(x, str) and x for x in bands)):
            raise ValueError(f"'bands' must be a non-empty list of band names, got {bands!r}")
        image_size = _count(data["image_size"], "image_size", low=1)
        temperature = _number(data.get("calibration", {}).get("temperature", 1.0), "calibration.temperature")
        if not temperature > 0:
            raise ValueError(f"'calibration.temperature' must be > 0, got {temperature}")
        entries = data["members"]
        if not isinstance(entries, list):
            raise ValueError(f"'members' must be a list, got {type(entries).__name__}")
        members = tuple(_member(path, file, i, m) for i, m in enumerate(entries))
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ZrayError(
            f"{file}: missing or malformed field {exc}; expected bins, bands, image_size and members as "
            "`zray export` writes them"
        ) from None
    if not members:
        raise ZrayError(f"{file}: lists no members; expected at least one model")
    for member_dir, checksums in members:
        for name, expected in checksums.items():
            if not (member_dir / name).is_file():
                raise ZrayError(f"{member_dir / name}: not found; expected every member listed in {file} "
                                "to be complete")
            if verify and sha256_of(member_dir / name) != expected:
                raise ZrayError(f"{member_dir / name}: checksum differs from {file}; the file is corrupt or "
                                "was replaced")
        spec = read_info(member_dir).spec
        if spec.bins != bins or spec.image_size != image_size:
            raise ZrayError(
                f"{member_dir}: model bins or image size ({spec.bins.n_bins} bins over {spec.bins.z_min}-"
                f"{spec.bins.z_max}, {spec.image_size} px) differ from {file} ({bins.n_bins} bins over "
                f"{bins.z_min}-{bins.z_max}, {image_size} px); expected every member to match the bundle"
            )
    return BundleInfo(path, data, bins, tuple(bands), image_size, tuple(m for m, _ in members), temperature)


def _member(root: Path, file: Path, i: int, entry) -> tuple[Path, dict[str, str]]:
    """A member's folder (inside the bundle) and its required checksums."""
    if not isinstance(entry, dict):
        raise ValueError(f"'members[{i}]' must be an object, got {type(entry).__name__}")
    folder = inside(root, entry["path"], f"{file}: members[{i}].path")
    checksums = entry.get("sha256")
    names = (INFO_FILE, WEIGHTS_FILE)
    if not (isinstance(checksums, dict) and all(_is_sha256(checksums.get(n)) for n in names)):
        raise ValueError(f"'members[{i}].sha256' must give the SHA-256 of {' and '.join(names)}")
    return folder, {n: checksums[n] for n in names}


def _is_sha256(text) -> bool:
    return isinstance(text, str) and len(text) == 64 and all(c in "0123456789abcdef" for c in text)


def _number(value, field: str, low: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{field!r} must be a finite number, got {value!r}")
    if low is not None and value < low:
        raise ValueError(f"{field!r} must be >= {low}, got {value!r}")
    return float(value)


def _count(value, field: str, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{field!r} must be a whole number >= {low}, got {value!r}")
    return value


class Bundle:
    """A loaded bundle: ``predict(images, ebv)`` returns PDFs over ``bins``.

    ``images`` are raw cutouts as the shards hold them, ``(N, bands, H, W)``
    in nanomaggies with H, W >= ``image_size``; the bundle applies the
    training preprocessing (pixel scaling, channels last, centre crop).
    ``ebv`` is E(B-V), shape ``(N,)`` or ``(N, 1)``. Use
    :meth:`predict_scaled` for images already preprocessed.
    """

    def __init__(self, path) -> None:
        from zray.models import load_model

        self.info = read_bundle(path)  # every member file checked against bundle.json first
        self.models = [load_model(member)[0] for member in self.info.member_dirs]
        # Fitted at export (zray.calibration); 1.0 leaves the PDFs as the members give them.
        self.temperature = self.info.temperature

    @property
    def bins(self) -> RedshiftBins:
        return self.info.bins

    @property
    def bands(self) -> tuple[str, ...]:
        return self.info.bands

    @property
    def image_size(self) -> int:
        return self.info.image_size

    def __repr__(self) -> str:
        return (f"Bundle({str(self.info.path)!r}, members={len(self.models)}, "
                f"image_size={self.image_size}, bins={self.bins})")

    def preprocess(self, images) -> np.ndarray:
        """Raw ``(N, bands, H, W)`` cutouts -> scaled, cropped ``(N, S, S, bands)``."""
        from zray.data.cutouts import check_cutouts, crop_centre
        from zray.data.pipeline import preprocess_batch

        images = np.asarray(images)
        check_cutouts(images, n_bands=len(self.bands), label=f"bundle {self.info.path}",
                      min_size=self.image_size, bands=",".join(self.bands))
        x = preprocess_batch({"image": crop_centre(images, self.image_size)})["image"]
        return np.ascontiguousarray(x, dtype=np.float32)

    def predict_scaled(self, x, ebv) -> np.ndarray:
        """PDFs ``(N, n_bins)`` for preprocessed images: the members' mean for an
        ensemble, tempered by the bundle's calibration temperature."""
        from zray.calibration import temper

        ebv = np.asarray(ebv, dtype=np.float32).reshape(-1, 1)
        if len(ebv) != len(x):
            raise ZrayError(f"ebv has {len(ebv)} values for {len(x)} images; expected one per image")
        pdf = None
        for model in self.models:
            p = np.asarray(model.predict_on_batch([x, ebv]), dtype=np.float64)
            pdf = p if pdf is None else pdf + p
        pdf /= len(self.models)
        if self.temperature != 1.0:
            pdf = temper(pdf, self.temperature)
        return pdf.astype(np.float32)

    def member_pdfs(self, images, ebv, batch_size: int = 256) -> np.ndarray:
        """Each member's own PDFs for raw cutouts, ``(members, N, n_bins)`` float64, not
        tempered: what the ensemble averages (export scores them one by one)."""
        images = np.asarray(images)
        ebv = np.asarray(ebv, dtype=np.float32).reshape(-1, 1)
        if len(ebv) != len(images):
            raise ZrayError(f"ebv has {len(ebv)} values for {len(images)} images; expected one per image")
        out = np.empty((len(self.models), len(images), self.bins.n_bins), dtype=np.float64)
        for start in range(0, len(images), batch_size):
            sl = slice(start, start + batch_size)
            x = self.preprocess(images[sl])
            for i, model in enumerate(self.models):
                out[i, sl] = np.asarray(model.predict_on_batch([x, ebv[sl]]), dtype=np.float64)
        return out

    def predict(self, images, ebv, batch_size: int = 256) -> np.ndarray:
        """PDFs ``(N, n_bins)`` (float32) for raw cutouts; see the class docstring."""
        images = np.asarray(images)
        ebv = np.asarray(ebv, dtype=np.float32).reshape(-1)
        if len(ebv) != len(images):
            raise ZrayError(f"ebv has {len(ebv)} values for {len(images)} images; expected one per image")
        out = np.empty((len(images), self.bins.n_bins), dtype=np.float32)
        for start in range(0, len(images), batch_size):
            sl = slice(start, start + batch_size)
            out[sl] = self.predict_scaled(self.preprocess(images[sl]), ebv[sl])
        return out


def load(path) -> Bundle:
    """Load a bundle written by ``zray export`` (see :class:`Bundle`)."""
    return Bundle(path)



"""Export bundles: the best trial(s) of a search, ready for inference anywhere.

A bundle is a directory::

    bundle.json          what predicting needs, and where the models came from
    members/m0/          model.json + weights.weights.h5 (zray.models.save_model)
    members/m1/ ...      further members of an ensemble (--top-k K > 1)

Members are stored in zray's safe format (architecture rebuilt from the
registry, numbers read from HDF5; nothing is unpickled or executed), so a
bundle from someone else can be loaded without trusting it. An ensemble's
PDF is the mean of its members' PDFs.

``bundle.json`` records the preprocessing (pixel scaling, channel order,
centre crop), band order, image size and redshift bins, so :func:`load`
takes raw cutouts exactly as the shards hold them; and provenance: the
experiment, each member's trial, checkpoint and validation metrics, the
training data's manifest hash and the versions of zray, TensorFlow and Ray.

Reading a bundle (:func:`read_bundle`) needs no TensorFlow; every problem
with it (missing or unreadable ``bundle.json``, an unknown format version,
missing member weights) and every mismatch with the data (band order, image
size) is a :class:`~zray.errors.ZrayError` naming the file and what was
expected.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from zray import __version__
from zray.atomic import publish_dir
from zray.bins import RedshiftBins
from zray.errors import ZrayError

FORMAT_VERSION = 1
BUNDLE_FILE = "bundle.json"
MEMBERS_DIR = "members"
PREPROCESSING = {
    "pixel_scaling": "asinh-like sqrt scaling sign(x)(sqrt(|x|+1)-1) of nanomaggies",
    "input_layout": "raw images (N, bands, H, W) in nanomaggies, as in the shards",
    "model_layout": "channels last (N, image_size, image_size, bands)",
    "crop": "centre crop to image_size x image_size after scaling",
    "ebv": "E(B-V) as a second input of shape (N, 1)",
}


# ---------------------------------------------------------------------------
# Reading


@dataclass(frozen=True)
class BundleInfo:
    """The checked contents of ``bundle.json``; reading it needs no TensorFlow."""

    path: Path
    data: dict[str, Any]
    bins: RedshiftBins
    bands: tuple[str, ...]
    image_size: int
    member_dirs: tuple[Path, ...]

    @property
    def manifest_hash(self) -> str | None:
        return self.data.get("data", {}).get("manifest_hash")

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
    """Read and check ``bundle.json``, that every member's files are there and (with
    ``verify``) that their weights match the recorded checksums; no TensorFlow."""
    path = Path(path)
    file = path / BUNDLE_FILE
    if not path.is_dir():
        raise ZrayError(f"{path}: no such bundle directory; expected the --out folder of `zray export`")
    try:
        data = json.loads(file.read_text())
    except FileNotFoundError:
        raise ZrayError(f"{file}: not found; expected a bundle written by `zray export`") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ZrayError(f"{file}: unreadable ({exc}); expected JSON written by `zray export`") from None
    if not isinstance(data, dict):
        raise ZrayError(f"{file}: holds {type(data).__name__}; expected a JSON object written by `zray export`")
    if data.get("format") != FORMAT_VERSION:
        raise ZrayError(
            f"{file}: bundle format {data.get('format')!r} is not supported by zray {__version__}; "
            f"expected format {FORMAT_VERSION}"
        )
    try:
        b = data["bins"]
        bins = RedshiftBins(float(b["z_min"]), float(b["z_max"]), int(b["n_bins"]))
        bands = tuple(str(x) for x in data["bands"])
        image_size = int(data["image_size"])
        members = tuple(path / str(m["path"]) for m in data["members"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ZrayError(
            f"{file}: missing or malformed field {exc}; expected bins, bands, image_size and members"
        ) from None
    if not members:
        raise ZrayError(f"{file}: lists no members; expected at least one model")
    from zray.models._saving import INFO_FILE, WEIGHTS_FILE, check_weights

    for member in members:
        for name in (INFO_FILE, WEIGHTS_FILE):
            if not (member / name).is_file():
                raise ZrayError(f"{member / name}: not found; expected every member listed in {file} to be complete")
        if verify:
            check_weights(member)
    return BundleInfo(path, data, bins, bands, image_size, members)


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

        self.info = read_bundle(path, verify=False)  # load_model checks each member's weights
        self.models = []
        for member in self.info.member_dirs:
            model, minfo = load_model(member)
            if minfo.spec.bins != self.info.bins or minfo.spec.image_size != self.info.image_size:
                raise ZrayError(
                    f"{member}: model bins or image size differ from {self.info.path / BUNDLE_FILE}; "
                    "expected every member to match the bundle"
                )
            self.models.append(model)
        # Fitted at export (zray.calibration); 1.0 leaves the PDFs as the members give them.
        self.temperature = float(self.info.data.get("calibration", {}).get("temperature", 1.0))

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
        from zray.data.pipeline import preprocess_batch

        images = np.asarray(images)
        n_bands = len(self.bands)
        if images.ndim != 4 or images.shape[1] != n_bands:
            raise ZrayError(
                f"images have shape {images.shape}; expected (N, {n_bands}, H, W) raw cutouts "
                f"in band order {','.join(self.bands)}"
            )
        h, w = images.shape[2:]
        s = self.image_size
        if min(h, w) < s:
            raise ZrayError(f"images are {h}x{w} pixels; expected at least {s}x{s} for this bundle")
        if not np.all(np.isfinite(images)):
            raise ZrayError("images have NaN or infinite pixels; expected finite values")
        y0, x0 = (h - s) // 2, (w - s) // 2
        x = preprocess_batch({"image": images[:, :, y0 : y0 + s, x0 : x0 + s]})["image"]
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


# ---------------------------------------------------------------------------
# Writing


@dataclass(frozen=True)
class Candidate:
    """One checkpoint to export, with where it came from."""

    checkpoint: Path
    trial: str | None
    metrics: dict[str, Any]


def candidates(run_dir, top_k: int = 1) -> tuple[list[Candidate], str]:
    """The ``top_k`` best checkpoints in ``run_dir`` and what kind of folder it is.

    ``run_dir`` is a search (``runs/NAME`` of ``zray tune``: its best trials,
    best first, by the search's metric), a training run (``runs/NAME`` of
    ``zray train``: its best checkpoint by validation sigma_MAD) or one
    checkpoint folder (holding ``state.json``).
    """
    from zray import tune
    from zray.train import STATE_FILE, read_state

    run_dir = Path(run_dir)
    if top_k < 1:
        raise ZrayError(f"--top-k must be a positive integer, but got {top_k!r}")
    if not run_dir.is_dir():
        raise ZrayError(f"{run_dir}: no such folder; expected runs/NAME of `zray tune` or `zray train`")
    if (run_dir / tune.SPACE_FILE).exists():
        ranked = tune.summarize(run_dir)["ranked"]
        ranked = [r for r in ranked if r.get("best_checkpoint")]
        if len(ranked) < top_k:
            raise ZrayError(
                f"{run_dir}: {len(ranked)} trial(s) have a scored checkpoint but --top-k is {top_k}; "
                "expected at least as many finished trials"
            )
        return [Candidate(Path(r["best_checkpoint"]), r["trial"], dict(r["best"])) for r in ranked[:top_k]], "search"
    if (run_dir / STATE_FILE).exists():
        states = [run_dir]
        kind = "checkpoint"
    else:
        states = sorted(p.parent for p in run_dir.glob(f"checkpoint_*/{STATE_FILE}"))
        kind = "training run"
    if not states:
        raise ZrayError(
            f"{run_dir}: holds no zray checkpoint; expected runs/NAME of `zray tune` or `zray train`"
        )
    scored = []
    for ckpt in states:
        m = read_state(ckpt).get("metrics", {})
        value = m.get("val_sigma_mad")
        scored.append((value if isinstance(value, (int, float)) and np.isfinite(value) else np.inf,
                       -int(m.get("epoch", 0)), ckpt, m))
    scored.sort(key=lambda t: (t[0], t[1]))
    if len(scored) < top_k:
        raise ZrayError(
            f"{run_dir}: holds {len(scored)} checkpoint(s) but --top-k is {top_k}; "
            "expected at least as many"
        )
    return [Candidate(c, run_dir.name, dict(m)) for _, _, c, m in scored[:top_k]], kind


def _versions() -> dict[str, str]:
    import platform
    from importlib.metadata import PackageNotFoundError, version

    out = {"zray": __version__, "python": platform.python_version()}
    for name in ("tensorflow", "tf-keras", "ray", "numpy"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


def _bands_of(data_path: str) -> tuple[tuple[str, ...], str]:
    """Band order of the training data (from its manifest, else zray's standard)."""
    from zray.data.shards import BANDS, read_manifest

    try:
        return tuple(read_manifest(data_path).bands), "training data manifest"
    except ZrayError:
        return tuple(BANDS), "zray default (training data manifest not found)"


# Validation rows used to fit the temperature, at most (the fit is one number).
CALIBRATION_ROWS = 20_000


def _calibrate(bundle_dir: Path, info: dict) -> dict[str, Any]:
    """Fit the PDF temperature of the bundle at ``bundle_dir`` on its training data's val split."""
    from zray import calibration
    from zray.data import load_arrays
    from zray.data.shards import read_manifest

    data = info["data"]
    try:
        manifest = read_manifest(data["path"])
    except ZrayError as exc:
        return {"temperature": 1.0, "note": f"not calibrated: {exc}"}
    if manifest.hash != data["manifest_hash"]:
        return {"temperature": 1.0, "note": f"not calibrated: {data['path']} changed since training"}
    if manifest.rows["val"] < 10:
        return {"temperature": 1.0, "note": f"not calibrated: {data['path']} has too few val rows"}
    val = load_arrays(data["path"], "val")
    rows = slice(0, CALIBRATION_ROWS)
    pdf = Bundle(bundle_dir).predict(val["image"][rows], val["ebv"][rows]).astype(np.float64)
    z = val["z_spec"][rows].astype(np.float64)
    bins = RedshiftBins(**info["bins"])
    fitted = calibration.report(pdf, bins, z, calibration.fit_temperature(pdf, bins, z))
    return {**fitted, "fitted_on": f"val split of {data['path']}"}


def export(run_dir, out, *, top_k: int = 1, overwrite: bool = False, calibrate: bool = True) -> dict[str, Any]:
    """Export the ``top_k`` best checkpoints of ``run_dir`` as a bundle at ``out``.

    With ``calibrate``, one PDF temperature is fitted on the validation split
    of the training data (:mod:`zray.calibration`) and recorded in
    ``bundle.json``; every prediction from the bundle applies it. The bundle
    is written under a temporary name beside ``out`` and renamed when
    complete. Returns ``bundle.json``'s contents plus ``path``.

    >>> info = export("runs/quickstart", "best", top_k=2)   # doctest: +SKIP
    >>> info["calibration"]["temperature"]                  # doctest: +SKIP
    0.83
    """
    from zray.models import ModelSpec, save_model
    from zray.train import TrainJob, _model_hp, load_checkpoint_model

    out = Path(out)
    if out.exists():
        is_bundle = (out / BUNDLE_FILE).is_file()
        if not (out.is_dir() and (not any(out.iterdir()) or (is_bundle and overwrite))):
            hint = "use --overwrite to replace it" if is_bundle else "expected a new or empty folder"
            raise ZrayError(f"{out}: already exists; {hint}")
    chosen, kind = candidates(run_dir, top_k)

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        members, first = [], None
        for i, cand in enumerate(chosen):
            model, state = load_checkpoint_model(cand.checkpoint)
            job = TrainJob(**state["job"])
            spec = ModelSpec(image_size=job.image_size, bins=job.bins)
            if first is None:
                first = job
            elif (job.image_size, job.bins, job.manifest_hash) != (first.image_size, first.bins, first.manifest_hash):
                raise ZrayError(
                    f"{cand.checkpoint}: image size, bins or training data differ from {chosen[0].checkpoint}; "
                    "expected ensemble members trained on the same data setup"
                )
            rel = f"{MEMBERS_DIR}/m{i}"
            save_model(model, tmp / rel, job.model, _model_hp(job), spec)
            members.append({
                "path": rel,
                "model": job.model,
                "hyperparameters": _model_hp(job),
                "training": {k: v for k, v in job.hyperparameters.items() if k not in _model_hp(job)},
                "trial": cand.trial,
                "checkpoint": str(Path(cand.checkpoint).resolve()),
                "epoch": int(state.get("epoch", -1)) + 1,
                "validation": {k: v for k, v in cand.metrics.items() if k.startswith("val_") or k == "epoch"},
            })
        bands, bands_from = _bands_of(first.data_path)
        info = {
            "format": FORMAT_VERSION,
            "kind": "zray photo-z bundle",
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "source": {"path": str(Path(run_dir).resolve()), "kind": kind},
            "model_types": sorted({m["model"] for m in members}),
            "ensemble": "mean of member PDFs" if len(members) > 1 else "single model",
            "bins": {"z_min": first.z_min, "z_max": first.z_max, "n_bins": first.n_bins},
            "image_size": first.image_size,
            "bands": list(bands),
            "bands_from": bands_from,
            "preprocessing": PREPROCESSING,
            "data": {"manifest_hash": first.manifest_hash, "path": first.data_path},
            "members": members,
            "versions": _versions(),
        }
        (tmp / BUNDLE_FILE).write_text(json.dumps(info, indent=2) + "\n")
        if calibrate:
            info["calibration"] = _calibrate(tmp, info)
            (tmp / BUNDLE_FILE).write_text(json.dumps(info, indent=2) + "\n")
        publish_dir(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {**info, "path": str(out)}

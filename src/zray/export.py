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
centre crop), band order, image size and redshift bins, so
:func:`zray.bundle.load` takes raw cutouts exactly as the shards hold them; and provenance: the
experiment, each member's trial, checkpoint and validation metrics, the
training data's manifest hash and the versions of zray, TensorFlow and Ray.

Reading a bundle (:mod:`zray.bundle`) needs no TensorFlow; every problem
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
from zray.atomic import check_output, make_parents, publish_dir, remove_parents
from zray.bins import RedshiftBins
from zray.bundle import BUNDLE_FILE, FORMAT_VERSION, MEMBERS_DIR, PREPROCESSING, Bundle
from zray.errors import ZrayError

__all__ = ["Candidate", "candidates", "export"]

# ---------------------------------------------------------------------------
# Writing


@dataclass(frozen=True)
class Candidate:
    """One checkpoint to export, with where it came from."""

    checkpoint: Path
    trial: str | None
    metrics: dict[str, Any]


def candidates(run_dir, top_k: int = 1, trial: str | None = None) -> tuple[list[Candidate], str]:
    """The ``top_k`` best checkpoints in ``run_dir`` and what kind of folder it is.

    ``run_dir`` is a search (``runs/NAME`` of ``zray tune``: its best trials,
    best first, by the search's metric; a two-objective search's Pareto front
    first, by :data:`zray.search.results.PARETO_RULE`, then the others), a
    training run (``runs/NAME`` of ``zray train``: its best checkpoint by the
    run's metric, validation sigma_MAD unless the search space said otherwise)
    or one checkpoint folder (holding ``state.json``).

    ``trial`` (``--trial``, a search's trial folder name as ``zray status``
    lists it) puts that trial's best checkpoint first, whatever its rank: the
    way to export another point of a Pareto front.
    """
    from zray import search
    from zray.metrics import VALIDATION_METRICS, direction
    from zray.train import STATE_FILE, read_state

    run_dir = Path(run_dir)
    if top_k < 1:
        raise ZrayError(f"--top-k must be a positive integer, but got {top_k!r}")
    if not run_dir.is_dir():
        raise ZrayError(f"{run_dir}: no such folder; expected runs/NAME of `zray tune` or `zray train`")
    if trial is not None and not (run_dir / search.SPACE_FILE).exists():
        raise ZrayError(f"--trial {trial}: {run_dir} is not a search (no {search.SPACE_FILE}); "
                        "expected runs/NAME of `zray tune`")
    if (run_dir / search.SPACE_FILE).exists():
        summary = search.summarize(run_dir)
        ranked = [r for r in summary["ranked"] if r.get("best_checkpoint")]
        if trial is not None:
            named = next((r for r in summary["trials"] if r["trial"] == trial), None)
            if named is None or not named.get("best_checkpoint"):
                have = ", ".join(r["trial"] for r in ranked) or "none"
                problem = "has no scored checkpoint" if named else "names no trial"
                raise ZrayError(f"--trial {trial}: {problem} in {run_dir}; expected one of its trials with "
                                f"a checkpoint ({have})")
            ranked = [named] + [r for r in ranked if r is not named]
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
        state = read_state(ckpt)
        m = state.get("metrics") if isinstance(state.get("metrics"), dict) else {}
        job = state.get("job") if isinstance(state.get("job"), dict) else {}
        metric = job.get("metric")
        metric = metric if isinstance(metric, str) and metric in VALIDATION_METRICS else "val_sigma_mad"
        sign = 1.0 if direction(metric) == "min" else -1.0
        value, epoch = m.get(metric), m.get("epoch")
        finite = [isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v) for v in (value, epoch)]
        scored.append((sign * value if finite[0] else np.inf, -int(epoch) if finite[1] else 0, ckpt, m))
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


# Validation rows scored to choose an ensemble and to fit the temperature, at most.
VALIDATION_ROWS = 20_000


def _validation_split(info: dict) -> tuple[dict | None, str]:
    """The first :data:`VALIDATION_ROWS` rows of the training data's val split (z_spec as float64)
    and where they came from; or None and why they cannot be used (the data moved, changed since
    training, or holds too few val rows). Read once per export: the ensemble's choice and the
    temperature are both made on it."""
    from zray.data import load_arrays
    from zray.data.shards import read_manifest

    data = info["data"]
    try:
        manifest = read_manifest(data["path"])
    except ZrayError as exc:
        return None, str(exc)
    if manifest.hash != data["manifest_hash"]:
        return None, f"{data['path']} changed since training"
    if manifest.rows["val"] < 10:
        return None, f"{data['path']} has too few val rows"
    val = load_arrays(data["path"], "val")
    rows = slice(0, VALIDATION_ROWS)
    return ({"image": val["image"][rows], "ebv": val["ebv"][rows], "z_spec": val["z_spec"][rows].astype(np.float64)},
            f"val split of {data['path']}")


def _calibrate(bundle_dir: Path, info: dict, val: dict | None, source: str) -> dict[str, Any]:
    """Fit the PDF temperature of the bundle at ``bundle_dir`` on ``val`` (:func:`_validation_split`)."""
    from zray import calibration

    if val is None:
        return {"temperature": 1.0, "note": f"not calibrated: {source}"}
    pdf = Bundle(bundle_dir).predict(val["image"], val["ebv"]).astype(np.float64)
    bins = RedshiftBins(**info["bins"])
    fitted = calibration.report(pdf, bins, val["z_spec"], calibration.fit_temperature(pdf, bins, val["z_spec"]))
    return {**fitted, "fitted_on": source}


def export(run_dir, out, *, top_k: int = 1, overwrite: bool = False, calibrate: bool = True,
           members: str = "seeds", keep_ensemble: bool = False, trial: str | None = None) -> dict[str, Any]:
    """Export the ``top_k`` best checkpoints of ``run_dir`` as a bundle at ``out``.

    With ``calibrate``, one PDF temperature is fitted on the validation split
    of the training data (:mod:`zray.calibration`) and recorded in
    ``bundle.json``; every prediction from the bundle applies it. The bundle
    is written under a temporary name beside ``out`` and renamed when
    complete. Returns ``bundle.json``'s contents plus ``path``.

    With ``top_k`` > 1 the members of a search's ensemble follow ``members``
    (:data:`zray.ensemble.MEMBER_RULES`: ``seeds`` trains the best
    configuration with further seeds, ``trials`` takes the best trials as
    they are), and the ensemble is shipped only if it beats its best member on
    the validation split (or with ``keep_ensemble``): :mod:`zray.ensemble`.
    The temperature is fitted on what is shipped.

    >>> info = export("runs/quickstart", "best", top_k=2)   # doctest: +SKIP
    >>> info["calibration"]["temperature"]                  # doctest: +SKIP
    0.83
    """
    out = Path(out)
    check_output(out, kind="bundle", overwrite=overwrite, sealed=[Path(run_dir)])
    from zray.search import SPACE_FILE

    if top_k < 1:
        raise ZrayError(f"--top-k must be a positive integer, but got {top_k!r}")
    # Seeds of a search's best configuration need one finished trial, whatever K is.
    seeds = _member_rule(members, "search") == "seeds" and (Path(run_dir) / SPACE_FILE).exists()
    chosen, kind = candidates(run_dir, 1 if seeds else top_k, trial=trial)  # trial: that one first
    rule = _member_rule(members, kind) if top_k > 1 else None
    if rule == "seeds":  # long: trained before anything is written at --out (never inside run_dir)
        from zray.ensemble import seed_members

        chosen = seed_members(run_dir, chosen[0], top_k)
    made = make_parents(out)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        members, first = _write_members(chosen, tmp)
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
        val, source = _validation_split(info) if rule is not None or calibrate else (None, "")
        if rule is not None:  # scored as written; what is shipped is then calibrated
            info["selection"] = _select(tmp, info, rule, first, keep_ensemble, val, source)
            (tmp / BUNDLE_FILE).write_text(json.dumps(info, indent=2) + "\n")
        if calibrate:
            info["calibration"] = _calibrate(tmp, info, val, source)
            (tmp / BUNDLE_FILE).write_text(json.dumps(info, indent=2) + "\n")
        publish_dir(tmp, out, kind="bundle")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if not out.exists():
            remove_parents(made)
    return {**info, "path": str(out)}


def _member_rule(members: str, kind: str) -> str:
    from zray.ensemble import MEMBER_RULES

    if members not in MEMBER_RULES:
        raise ZrayError(f"--members {members!r}: expected one of {', '.join(MEMBER_RULES)}")
    # A training run has one configuration and its own best checkpoints: nothing to retrain.
    return members if kind == "search" else "checkpoints"


def _select(tmp: Path, info: dict, rule: str, first, keep_ensemble: bool, val: dict | None,
            source: str) -> dict[str, Any]:
    """Score the ensemble written at ``tmp`` against its members (:func:`zray.ensemble.choose`);
    when the best member alone is to be shipped, leave only it in ``tmp`` and ``info``."""
    from zray.ensemble import MEMBER_RULES, choose

    selection = choose(tmp, info, val, source, first.metric, first.mode, keep_ensemble)
    selection = {"rule": rule, "rule_text": MEMBER_RULES.get(rule, "the run's best checkpoints"), **selection}
    if selection["shipped"] == "best member":
        keep = info["members"][selection["best_member"]]
        for member in info["members"]:
            if member is not keep:
                shutil.rmtree(tmp / member["path"])
        info["members"] = [keep]
        info["ensemble"] = "single model"
    return selection


def _write_members(chosen: list[Candidate], tmp: Path) -> tuple[list[dict[str, Any]], Any]:
    """Save each chosen checkpoint's model under ``tmp/members/m{i}``; their bundle.json
    entries and the first member's TrainJob. Members must share image size, bins and data."""
    from zray.models import ModelSpec, save_model
    from zray.models._saving import INFO_FILE, WEIGHTS_FILE, sha256_of
    from zray.train import TrainJob, load_checkpoint_model, model_hp

    members, first = [], None
    for i, cand in enumerate(chosen):
        model, state = load_checkpoint_model(cand.checkpoint)
        job = TrainJob(**state["job"])
        if first is None:
            first = job
        elif (job.image_size, job.bins, job.manifest_hash) != (first.image_size, first.bins, first.manifest_hash):
            raise ZrayError(
                f"{cand.checkpoint}: image size, bins or training data differ from {chosen[0].checkpoint}; "
                "expected ensemble members trained on the same data setup"
            )
        rel = f"{MEMBERS_DIR}/m{i}"
        save_model(model, tmp / rel, job.model, model_hp(job), ModelSpec(image_size=job.image_size, bins=job.bins))
        members.append({
            "path": rel,
            "sha256": {name: sha256_of(tmp / rel / name) for name in (INFO_FILE, WEIGHTS_FILE)},
            "model": job.model,
            "hyperparameters": model_hp(job),
            "training": {k: v for k, v in job.hyperparameters.items() if k not in model_hp(job)},
            "trial": cand.trial,
            "checkpoint": str(Path(cand.checkpoint).resolve()),
            "epoch": int(state.get("epoch", -1)) + 1,
            "validation": {k: v for k, v in cand.metrics.items() if k.startswith("val_") or k == "epoch"},
        })
    return members, first

"""``zray evaluate``: score a bundle on a labelled split (or a held-out dataset whole) and write a report folder.

The report holds ``metrics.json`` (the metrics of docs/architecture.md section 6, overall,
by spectroscopic redshift and by r magnitude; with qp installed also the field's PDF
metrics computed by qp, under ``qp``), ``predictions.parquet`` (what
``zray predict`` would write for the split), the PNG figures and an offline
``index.html``. Predictions come from :mod:`zray.predict`'s streaming path,
so they are the ones ``zray predict`` gives.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from zray import baselines
from zray import metrics as m
from zray.atomic import check_output, make_parents, publish_dir, remove_parents
from zray.data.catalog import lookup
from zray.errors import ZrayError, first_line

__all__ = ["binned_metrics", "evaluate"]

#: ``--split all``: every galaxy of a dataset held out from training.
ALL = "all"
N_Z_BINS = 8
N_MAG_BINS = 6
N_CONFUSION_BINS = 10
MIN_ROWS = 2  # a bin's sigma_MAD needs at least two objects to mean anything
FIGURES = (
    ("zphot_vs_zspec.png", "Photometric against spectroscopic redshift (PDF median)"),
    ("confusion_matrix.png", "Confusion matrix over redshift bins"),
    ("pit_histogram.png", "PIT histogram"),
    ("metrics_vs_z.png", "sigma_MAD and bias against spectroscopic redshift"),
)
MAG_FIGURE = ("metrics_vs_mag_r.png", "sigma_MAD and bias against r magnitude")


def binned_metrics(values, z_spec, z_phot, pdf, bins, edges, reference=None) -> list[dict[str, Any]]:
    """Point-estimate metrics and CRPS of the objects in each ``[edges[i], edges[i+1])``.

    ``reference`` maps a baseline's name to its predictions for the same
    objects; each bin then also holds ``sigma_mad_NAME`` and
    ``outlier_fraction_NAME``.
    """
    rows = []
    values = np.asarray(values, dtype=np.float64)
    for i, (lo, hi) in enumerate(zip(edges[:-1], edges[1:])):
        last = i == len(edges) - 2
        sel = (values >= lo) & ((values <= hi) if last else (values < hi))
        n = int(sel.sum())
        if n < MIN_ROWS:
            continue
        d = m.dz(z_phot[sel], z_spec[sel])
        rows.append({
            "lo": float(lo), "hi": float(hi), "centre": float((lo + hi) / 2), "n": n,
            "sigma_mad": m.sigma_mad(d), "bias_mean": m.bias_mean(d), "bias_median": m.bias_median(d),
            "outlier_fraction": m.outlier_fraction(d), "crps": m.crps(pdf[sel], bins, z_spec[sel]),
        })
        for name, z_ref in (reference or {}).items():
            d_ref = m.dz(z_ref[sel], z_spec[sel])
            rows[-1][f"sigma_mad_{name}"] = m.sigma_mad(d_ref)
            rows[-1][f"outlier_fraction_{name}"] = m.outlier_fraction(d_ref)
    return rows


def _mag_r(manifest, ids: np.ndarray, columns: dict) -> tuple[np.ndarray | None, str]:
    """r magnitudes by id: from the shards' ``mag_r``, else ``catalog.parquet`` beside them."""
    if "mag_r" in columns:
        return np.asarray(columns["mag_r"], dtype=np.float64), "mag_r column of the shards"
    catalog = manifest.root / "catalog.parquet"
    if not catalog.is_file():
        return None, ("no r magnitudes (no mag_r column in the shards, no catalog.parquet beside them): "
                      "r-magnitude bins skipped")
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(catalog, columns=["id", "mag_r"])
    except Exception as exc:  # pyarrow raises several types for a missing column or bad file
        return None, f"{catalog}: no usable id and mag_r columns ({first_line(exc)}): r-magnitude bins skipped"
    rows, found = lookup(table.column("id").to_numpy(), ids)
    mags = np.where(found, table.column("mag_r").to_numpy().astype(np.float64)[rows], np.nan)
    if not found.any():
        return None, f"{catalog}: none of the evaluated ids are in it: r-magnitude bins skipped"
    return mags, f"mag_r from {catalog}"


def _baseline_predictions(manifest, split: str, ids) -> tuple[dict | None, str]:
    """The reference predictors' redshifts for the evaluated galaxies of one split, or None and
    why not: the dataset's own, fitted on its train split (``--split all``: :func:`_held_out`)."""
    if split == "train":
        return None, "reference predictors not shown: they are fitted on the train split, so score val or test"
    try:
        reference = baselines.predictions(manifest.root, ids)
    except ZrayError as exc:
        return None, f"reference predictors not shown: {exc}"
    if reference is None:
        return None, ("reference predictors not shown: the evaluated galaxies are not all in the dataset's "
                      "val/test splits")
    return reference, ""


def _held_out(info, manifest, ids) -> tuple[dict | None, np.ndarray, str]:
    """``--split all``: the reference predictors fitted on the bundle's training data, which of
    the galaxies ``ids`` that data trained or validated on (to leave out), and a note where the
    training data cannot be read (then neither can be done)."""
    from zray.data.shards import read_manifest

    path = info.data_path
    nothing = np.zeros(len(ids), bool)
    unchecked = ("; nor could the scored galaxies be checked against the training galaxies, so make sure "
                 "none of them was trained on")
    if path is None:
        return None, nothing, ("reference predictors not shown: the bundle records no training data "
                               f"(bundle.json data.path){unchecked}")
    if not path.exists():
        return None, nothing, (f"reference predictors not shown: {path}, the bundle's training data, is not "
                               f"there any more (bundle.json data.path); put it back to show them{unchecked}")
    try:
        changed = read_manifest(path).hash != info.manifest_hash
    except ZrayError as exc:
        return None, nothing, (f"reference predictors not shown: the bundle's training data cannot be read "
                               f"({exc}){unchecked}")
    if info.manifest_hash is None:
        return None, nothing, ("reference predictors not shown: the bundle records no content hash of its training "
                               f"data (bundle.json data.manifest_hash){unchecked}")
    if changed:
        return None, nothing, (f"reference predictors not shown: {path}, the bundle's training data, has changed "
                               f"since training (its manifest hash is not the bundle's){unchecked}")
    try:
        reference, seen = baselines.held_out(path, manifest, _splits(manifest, ALL), ids)
    except ZrayError as exc:
        return None, nothing, f"reference predictors not shown: {exc}{unchecked}"
    return reference, seen, ""


def _training_data(manifest, info) -> bool:
    """Whether ``manifest`` is the bundle's training data: the same content, or the same folder
    (rewritten since)."""
    return manifest.hash == info.manifest_hash or (
        info.data_path is not None and manifest.root.resolve() == info.data_path.resolve())


def scored_label(split: str) -> str:
    """How a report names what it scored: ``test``, or ``all splits``."""
    return "all splits" if split == ALL else split


def _edges(values, n: int, lo=None, hi=None) -> np.ndarray:
    finite = values[np.isfinite(values)]
    lo = float(np.min(finite)) if lo is None else lo
    hi = float(np.max(finite)) if hi is None else hi
    if hi <= lo:
        hi = lo + 1e-3
    return np.linspace(lo, hi, n + 1)


def evaluate(
    bundle_path,
    data,
    out,
    *,
    split: str = "test",
    batch_size: int | None = None,
    workers: int = 1,
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Evaluate the bundle on ``split`` of dataset ``data``; write the report to ``out``.

    ``split="all"`` scores every galaxy of a dataset held out from training, with the
    reference predictors fitted on the bundle's training data, leaving out (and counting,
    ``trained_on``) any galaxy that data trained or validated on.

        >>> from zray.evaluate import evaluate
        >>> report = evaluate("bundles/quickstart", "data/quickstart", "reports/q")   # doctest: +SKIP
        >>> report["overall"]["sigma_mad"]                                            # doctest: +SKIP
        0.0195
    """
    from zray.bundle import read_bundle
    from zray.data.shards import read_manifest

    out = Path(out)
    check_output(out, kind="report", overwrite=overwrite, sealed=[Path(bundle_path), Path(data)])
    info = read_bundle(bundle_path)
    if split == ALL and info.data_path is not None:  # read too, for the reference predictors
        check_output(out, kind="report", overwrite=overwrite, sealed=[info.data_path])
    manifest = read_manifest(data)
    info.check_data(manifest)
    _check_split(manifest, split, info)
    t0 = time.perf_counter()
    cols = _predict_split(bundle_path, manifest, split, batch_size, workers, progress)
    if split == ALL:
        reference, seen, reference_note = _held_out(info, manifest, cols["id"])
        if seen.all():
            raise ZrayError(f"{manifest.root}: every one of its galaxies is one the bundle trained or validated on "
                            f"(the same id, z_spec and photometry as in {info.data_path}); expected a dataset held "
                            "out from training")
        cols = {k: v[~seen] for k, v in cols.items()}
        reference = None if reference is None else {k: v[~seen] for k, v in reference.items()}
    else:
        seen = np.zeros(0, bool)
        reference, reference_note = _baseline_predictions(manifest, split, cols["id"])
    inside = info.bins.contains(cols["z_spec"])
    if not inside.any():
        raise ZrayError(f"{manifest.root}: every galaxy scored ({scored_label(split)}) has z_spec outside the "
                        f"bundle's bins {info.bins.z_min:g} <= z < {info.bins.z_max:g}; expected data the bundle "
                        "can score")
    scored = {k: v[inside] for k, v in cols.items()}
    reference = None if reference is None else {k: v[inside] for k, v in reference.items()}
    result, binned = _score(scored, info, manifest, split, reference, reference_note)
    result["trained_on"] = int(seen.sum())
    if seen.any():
        result["notes"].insert(0, (
            f"{int(seen.sum())} of the {len(seen)} galaxies are ones the bundle trained or validated on (the same "
            f"id, z_spec and photometry as in {info.data_path}); the figures leave them out"))
    result["beyond_bins"] = _beyond_bins(cols, ~inside, info.bins)
    if result["beyond_bins"]["n"]:
        b = result["beyond_bins"]
        result["notes"].append(
            f"{b['n']} of {len(inside)} galaxies have z_spec outside the bundle's bins {info.bins.z_min:g} <= z < "
            f"{info.bins.z_max:g} (up to z = {b['z_spec_max']:.3f}); the figures above leave them out; on them "
            f"alone sigma_MAD is {b['sigma_mad']:.4f} and {b['outlier_fraction']:.0%} are outliers"
        )
    result["bundle"] = str(Path(bundle_path).resolve())
    _write_report(out, scored, result, binned, info, manifest, Path(bundle_path).name, every=cols)
    result["out"] = str(out)
    result["seconds"] = time.perf_counter() - t0
    return result


def _beyond_bins(cols: dict[str, np.ndarray], beyond: np.ndarray, bins) -> dict[str, Any]:
    """The galaxies whose z_spec the bundle's bins cannot hold, scored on their own (point estimates)."""
    n = int(beyond.sum())
    if not n:
        return {"n": 0}
    z = cols["z_spec"][beyond].astype(np.float64)
    return {**baselines.point_metrics(cols["z_median"][beyond], z), "z_spec_min": float(z.min()),
            "z_spec_max": float(z.max()), "bins": [bins.z_min, bins.z_max]}


def _splits(manifest, split: str) -> tuple[str, ...]:
    """The splits ``--split`` scores: one, or with ``all`` every split that has rows."""
    from zray.data.shards import SPLITS

    return tuple(s for s in SPLITS if manifest.rows[s]) if split == ALL else (split,)


def _check_split(manifest, split: str, info) -> None:
    from zray.data.shards import SPLITS

    if split not in (*SPLITS, ALL):
        raise ZrayError(f"--split {split!r} is not a split; expected one of {', '.join(SPLITS)} or {ALL}")
    if split == ALL:
        if _training_data(manifest, info):
            raise ZrayError(f"{manifest.root}: is the dataset this bundle was trained on, so --split all would "
                            "score the galaxies it learned from; expected --split test here, or --split all on "
                            "a dataset held out from training")
        if manifest.total_rows == 0:
            raise ZrayError(f"{manifest.root}: holds no rows; expected labelled rows to evaluate")
    elif manifest.rows[split] == 0:
        raise ZrayError(f"{manifest.root}: the {split} split is empty; expected labelled rows to evaluate")


def _predict_split(bundle_path, manifest, split: str, batch_size: int, workers: int,
                   progress: bool) -> dict[str, np.ndarray]:
    """The bundle's predictions for every row of ``split``, with z_spec (and mag_r if the shards have it)."""
    from zray.data.progress import Progress
    from zray.predict import iter_predictions

    passthrough = ("z_spec",) + (("mag_r",) if "mag_r" in manifest.columns else ())
    splits = _splits(manifest, split)
    bar = Progress("evaluate", sum(manifest.rows[s] for s in splits), enabled=progress)
    parts: dict[str, list] = {}
    for batch in iter_predictions(bundle_path, manifest, splits, batch_size=batch_size,
                                  passthrough=passthrough, workers=workers):
        for key, value in batch.items():
            parts.setdefault(key, []).append(value)
        bar.update(len(batch["id"]))
    return {k: np.concatenate(v) for k, v in parts.items()}


def _score(cols: dict[str, np.ndarray], info, manifest, split: str, reference: dict | None,
           reference_note: str) -> tuple[dict[str, Any], dict]:
    """metrics.json's content (overall, baselines, per point estimate, binned) and the binned tables."""
    bins = info.bins
    z_spec = cols["z_spec"].astype(np.float64)
    pdf = cols["pdf"].astype(np.float64)
    z_phot = cols["z_median"]
    binned = {"z_spec": binned_metrics(z_spec, z_spec, z_phot, pdf, bins,
                                       _edges(z_spec, N_Z_BINS, lo=bins.z_min, hi=float(z_spec.max())),
                                       reference)}
    notes = [reference_note] if reference_note else []
    if split != ALL and not _training_data(manifest, info) and manifest.total_rows > manifest.rows[split]:
        notes.append(f"{manifest.root.name} is not the data this bundle was trained on: --split all scores every "
                     f"one of its {manifest.total_rows} galaxies (the {split} split holds {manifest.rows[split]})")
    mag_r, mag_note = _mag_r(manifest, cols["id"], cols)
    if mag_r is not None:
        ok = np.isfinite(mag_r)
        binned["mag_r"] = binned_metrics(mag_r[ok], z_spec[ok], z_phot[ok], pdf[ok], bins,
                                         _edges(mag_r[ok], N_MAG_BINS),
                                         {k: v[ok] for k, v in (reference or {}).items()})
    else:
        binned["mag_r"] = []
        notes.append(mag_note)
    result = {
        "data": str(manifest.root.resolve()),
        "data_manifest_hash": manifest.hash,
        "bundle_manifest_hash": info.manifest_hash,
        "same_data_as_training": manifest.hash == info.manifest_hash,
        "split": split,
        "point_estimate": "median",
        "bins": info.data["bins"],
        "overall": m.summary(pdf, bins, z_spec),
        "baselines": {name: baselines.point_metrics(z_ref, z_spec) for name, z_ref in (reference or {}).items()},
        "baselines_fitted_on": str((info.data_path if split == ALL else manifest.root).resolve())
        if reference else None,
        "baseline_names": dict(baselines.NAMES),
        "sigma_mad_by_point_estimate": {p: m.sigma_mad(m.dz(cols[f"z_{p}"], z_spec)) for p in m.POINT_ESTIMATES},
        "binned": binned,
        "r_magnitudes": mag_note,
        "notes": notes,
    }
    result["qp"], qp_note = _qp_figures(pdf, bins, z_spec)
    if qp_note:
        notes.append(qp_note)
    return result, binned


#: The fewest galaxies qp's PIT metrics are computed on.
MIN_QP_GALAXIES = 10


def _qp_figures(pdf, bins, z_spec) -> tuple[dict | None, str]:
    """The field's PDF metrics computed by qp, or None and why not (qp is an optional extra)."""
    from zray.qp_format import INSTALL, qp_metrics

    try:
        import qp  # noqa: F401
    except ImportError:
        return None, f"qp's metrics (PIT KS, CvM and AD with p-values, CDE loss, Brier) not computed: {INSTALL}"
    if len(z_spec) < MIN_QP_GALAXIES:  # qp's PIT fails below 3, and its tests say nothing on a few
        return None, (f"qp's metrics (PIT KS, CvM and AD, CDE loss, Brier) not computed: {len(z_spec)} galaxies; "
                      f"they test the PIT's shape and need at least {MIN_QP_GALAXIES}")
    return qp_metrics(pdf, bins, z_spec), ""


def _write_report(out: Path, cols, result: dict[str, Any], binned: dict, info, manifest, bundle_name: str,
                  every=None) -> None:
    """predictions.parquet (of ``every`` galaxy), the figures (of the scored ``cols``), metrics.json
    and index.html, published together."""
    import pyarrow.parquet as pq

    from zray import plots
    from zray.predict import POINT_COLUMNS, _arrow_table
    from zray.report import write_index

    bins, split = info.bins, result["split"]
    z_spec, z_phot, pdf = cols["z_spec"].astype(np.float64), cols["z_median"], cols["pdf"].astype(np.float64)
    upper = float(min(bins.z_max, max(np.quantile(z_spec, 0.995), np.quantile(z_phot, 0.995)) * 1.1))
    made = make_parents(out)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        keep = ["id", "z_spec", *POINT_COLUMNS, "pdf"]
        every = cols if every is None else every
        pq.write_table(_arrow_table({k: every[k] for k in keep}, bins.n_bins), tmp / "predictions.parquet")
        plots.density(z_spec, z_phot, tmp / FIGURES[0][0], upper=upper)
        plots.confusion(z_spec, z_phot, np.linspace(bins.z_min, upper, N_CONFUSION_BINS + 1), tmp / FIGURES[1][0])
        plots.pit_histogram(m.pit(pdf, bins, z_spec), tmp / FIGURES[2][0], ks=result["overall"]["pit_ks"])
        plots.binned(binned["z_spec"], tmp / FIGURES[3][0], xlabel="spectroscopic z")
        figures = list(FIGURES)
        if binned["mag_r"]:
            plots.binned(binned["mag_r"], tmp / MAG_FIGURE[0], xlabel="r magnitude")
            figures.append(MAG_FIGURE)
        result["figures"] = [name for name, _ in figures]
        (tmp / "metrics.json").write_text(json.dumps(result, indent=2) + "\n")
        members = ", ".join(f"{x['model']} ({x.get('trial') or 'run'})" for x in info.data["members"])
        write_index(
            tmp / "index.html",
            title=f"zray evaluation: {bundle_name} on {manifest.root.name} ({scored_label(split)})",
            metrics=result, binned=binned, figures=figures, notes=result["notes"],
            provenance={"bundle": result["bundle"], "members": members, "data": result["data"],
                        "split": split, "data manifest hash": manifest.hash,
                        "same data as training": result["same_data_as_training"],
                        "point estimate": "PDF median"},
        )
        publish_dir(tmp, out, kind="report")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if not out.exists():
            remove_parents(made)

"""Two reference predictors that every zray figure is read against.

A sigma_MAD means little on its own: 0.03 is excellent for some samples and
useless for others. So zray always shows, on the same galaxies, what two
predictors that need no network reach:

- **constant**: every galaxy gets the training split's median redshift. A
  model no better than this has learned nothing.
- **kNN**: the mean redshift of the 10 nearest training galaxies in the space
  of dereddened aperture colours (u-g, g-r, r-i, i-z) measured from the
  cutouts themselves (:mod:`zray.photometry`). This is the
  classic ten-line photometric redshift an astronomer would try first.

Both are fitted on the ``train`` split only and scored on ``val`` and
``test`` (for a dataset held out from training and scored whole,
:func:`held_out` fits them on the bundle's training data instead, on each
run). A dataset's own are computed once and kept beside its manifest:
``baselines.json`` (the figures) and ``baselines.parquet`` (each galaxy's two
predictions, for scoring subsets such as the bins of ``zray evaluate``),
both tied to the manifest's content hash so a changed dataset is recomputed.

    >>> from zray import baselines
    >>> table = baselines.ensure("data/quickstart")      # doctest: +SKIP
    >>> table["splits"]["val"]["knn"]["sigma_mad"]       # doctest: +SKIP
    0.0176
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from zray import metrics as m
from zray.data.catalog import lookup
from zray.data.shards import BANDS, id_dtype, read_manifest
from zray.errors import ZrayError, first_line
from zray.photometry import APERTURE_ARCSEC, aperture_magnitudes, colours

__all__ = [
    "BASELINES_FILE",
    "NAMES",
    "ensure",
    "knn_predict",
    "load",
    "point_metrics",
    "predictions",
    "held_out",
    "compare",
    "sigma_mad_noise",
]

BASELINES_FILE = "baselines.json"
PREDICTIONS_FILE = "baselines.parquet"
K_NEIGHBOURS = 10
SCORED_SPLITS = ("val", "test")
# Display names, in the order tables list them.
NAMES = {"constant": "constant (training median z)", "knn": "kNN(10) on aperture colours"}


def _split_photometry(manifest, split: str) -> dict[str, np.ndarray]:
    """ids, z_spec and aperture magnitudes of a split, read shard by shard."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    ids, zs, mags = [], [], []
    for path in manifest.files(split):
        try:
            table = pq.read_table(path, columns=["id", "image", "z_spec", "ebv"])
        except (OSError, pa.ArrowException) as exc:
            raise ZrayError(f"{path}: unreadable shard ({first_line(exc, 160)}); expected a readable "
                            "zray shard to fit the reference predictors") from None
        images = np.concatenate([c.to_numpy_ndarray() for c in table.column("image").chunks]) \
            if table.num_rows else np.zeros((0, *manifest.image_shape), np.float32)
        ids.append(table.column("id").to_numpy())
        zs.append(table.column("z_spec").to_numpy().astype(np.float64))
        mags.append(aperture_magnitudes(images, table.column("ebv").to_numpy(), manifest.pixel_scale,
                                        manifest.bands))
    if not ids:
        return {"id": np.zeros(0, id_dtype(manifest)), "z_spec": np.zeros(0), "mags": np.zeros((0, len(BANDS)))}
    return {"id": np.concatenate(ids), "z_spec": np.concatenate(zs), "mags": np.concatenate(mags)}


def knn_predict(train_x: np.ndarray, train_z: np.ndarray, x: np.ndarray, k: int = K_NEIGHBOURS) -> np.ndarray:
    """Mean redshift of the ``k`` nearest training galaxies in feature space."""
    from scipy.spatial import cKDTree

    k = min(k, len(train_x))
    _, idx = cKDTree(train_x).query(x, k=k)
    idx = idx.reshape(len(x), k)
    return train_z[idx].mean(axis=1)


def point_metrics(z_phot, z_spec) -> dict[str, float]:
    """The point-estimate figures shown for a baseline (and compared with a model's)."""
    d = m.dz(z_phot, z_spec)
    return {"n": int(len(d)), "sigma_mad": m.sigma_mad(d), "bias": m.bias_mean(d),
            "outlier_fraction": m.outlier_fraction(d)}


def _check_bands(manifest) -> None:
    if list(manifest.bands) != list(BANDS):
        raise ZrayError(f"{manifest.root}: bands {','.join(manifest.bands)}; the baselines expect "
                        f"{','.join(BANDS)}")


def _fit(manifest) -> dict[str, np.ndarray]:
    """The train split's photometry (ids, z_spec, aperture magnitudes): what both baselines are fitted on."""
    _check_bands(manifest)
    if manifest.rows["train"] < 2:
        raise ZrayError(f"{manifest.root}: the train split has {manifest.rows['train']} rows; the "
                        "baselines need at least 2 to fit")
    return _split_photometry(manifest, "train")


def _compute(manifest) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    train = _fit(manifest)
    median_z = float(np.median(train["z_spec"]))
    table: dict[str, Any] = {
        "manifest_hash": manifest.hash,
        "train_rows": int(len(train["z_spec"])),
        "median_z": median_z,
        "k": K_NEIGHBOURS,
        "aperture_arcsec": APERTURE_ARCSEC,
        "features": "dereddened aperture colours u-g, g-r, r-i, i-z",
        "names": NAMES,
        "splits": {},
    }
    rows: dict[str, list] = {"id": [], "split": [], "z_constant": [], "z_knn": []}
    train_x = colours(train["mags"])
    for split in SCORED_SPLITS:
        if manifest.rows[split] == 0:
            continue
        part = _split_photometry(manifest, split)
        z_const = np.full(len(part["id"]), median_z)
        z_knn = knn_predict(train_x, train["z_spec"], colours(part["mags"]), K_NEIGHBOURS)
        table["splits"][split] = {
            "constant": point_metrics(z_const, part["z_spec"]),
            "knn": point_metrics(z_knn, part["z_spec"]),
        }
        rows["id"].append(part["id"])
        rows["split"].append(np.full(len(part["id"]), split))
        rows["z_constant"].append(z_const)
        rows["z_knn"].append(z_knn)
    return table, {k: np.concatenate(v) if v else np.zeros(0) for k, v in rows.items()}


def ensure_or_none(root, say) -> dict[str, Any] | None:
    """:func:`ensure`, or None with one line through ``say`` when the data cannot give them
    (a corrupt shard that a run skips, an empty train split): a run goes on without them."""
    try:
        return ensure(root, say=say)
    except ZrayError as exc:
        say(f"reference predictors not shown: {exc}")
        return None


def load(root) -> dict[str, Any] | None:
    """The dataset's stored baselines, or None when absent or computed for other data.

    Reads only; never computes or writes (``zray status`` uses it).
    """
    path = Path(root) / BASELINES_FILE
    try:
        table = json.loads(path.read_text())
        manifest = read_manifest(root)
    except (OSError, ValueError, ZrayError):
        return None
    return table if table.get("manifest_hash") == manifest.hash else None


def ensure(root, say=None) -> dict[str, Any]:
    """The dataset's baselines: read from beside the manifest, or computed once and kept there.

    A dataset folder that cannot be written (read-only data) still gets its
    baselines, recomputed each time.
    """
    table = load(root)
    if table is not None and (Path(root) / PREDICTIONS_FILE).is_file():
        return table
    manifest = read_manifest(root)
    if say:
        say(f"computing the reference predictors for {manifest.root} (once per dataset)")
    table, rows = _compute(manifest)
    try:
        _write(Path(root), table, rows)
    except OSError:
        pass  # read-only dataset: use them without keeping them
    return table


def _write(root: Path, table: dict, rows: dict[str, np.ndarray]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    suffix = f".tmp-{os.getpid()}"
    parquet_tmp = root / (PREDICTIONS_FILE + suffix)
    json_tmp = root / (BASELINES_FILE + suffix)
    try:
        pq.write_table(pa.table({k: pa.array(v) for k, v in rows.items()}), parquet_tmp)
        json_tmp.write_text(json.dumps(table, indent=1) + "\n")
        parquet_tmp.replace(root / PREDICTIONS_FILE)
        json_tmp.replace(root / BASELINES_FILE)  # last: it is what says "done"
    finally:
        parquet_tmp.unlink(missing_ok=True)
        json_tmp.unlink(missing_ok=True)


def predictions(root, ids: np.ndarray) -> dict[str, np.ndarray] | None:
    """Each baseline's prediction for the galaxies ``ids`` (in that order), or None if not all known."""
    import pyarrow.parquet as pq

    ensure(root)
    try:
        table = pq.read_table(Path(root) / PREDICTIONS_FILE)
    except OSError:
        return None
    rows, found = lookup(table.column("id").to_numpy(), ids)
    if not found.all():
        return None
    return {name: table.column(f"z_{name}").to_numpy()[rows] for name in NAMES}


def held_out(train_root, manifest, splits, ids: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The baselines for a dataset held out from training, all of whose ``splits`` are scored:
    fitted on the train split of ``train_root`` (the bundle's training data), predicting the
    galaxies ``ids`` in that order. Also ``seen``: which of them are the training data's own
    train or validation galaxies (the same id, z_spec and aperture photometry), which a
    held-out score must leave out."""
    train_manifest = read_manifest(train_root)
    train = _fit(train_manifest)
    _check_bands(manifest)
    parts = [_split_photometry(manifest, split) for split in splits]
    part = {k: np.concatenate([p[k] for p in parts]) for k in ("id", "z_spec", "mags")}
    rows, found = lookup(part["id"], ids)
    if not found.all():
        raise ZrayError(f"{manifest.root}: the evaluated galaxies are not all in its shards")
    z, mags = part["z_spec"][rows], part["mags"][rows]
    seen = np.zeros(len(ids), bool)
    for known in (train, _split_photometry(train_manifest, "val")):
        if not len(known["id"]):
            continue
        at, there = lookup(known["id"], ids)
        same_mags = np.isclose(known["mags"][at], mags, rtol=0, atol=1e-4, equal_nan=True).all(axis=1)
        seen |= there & (known["z_spec"][at] == z) & same_mags
    median_z = float(np.median(train["z_spec"]))
    return {"constant": np.full(len(ids), median_z),
            "knn": knn_predict(colours(train["mags"]), train["z_spec"], colours(mags), K_NEIGHBOURS)}, seen


def sigma_mad_noise(n: int) -> float:
    """The relative standard error of a sigma_MAD measured on ``n`` galaxies with
    Gaussian errors, ``1.17 / sqrt(n)`` (from the asymptotic variance of the median
    absolute deviation): two figures closer than this cannot be told apart."""
    return 1.17 / math.sqrt(max(int(n), 1))


def compare(sigma_mad: float | None, table: dict[str, Any] | None, split: str = "val") -> str:
    """One phrase placing a model's sigma_MAD against the baselines, e.g.
    ``0.45x the constant predictor's, 0.9x the kNN's``, with what to do when
    either does as well (or the two cannot be told apart on so few galaxies);
    empty without baselines."""
    if table is None or sigma_mad is None or split not in table.get("splits", {}):
        return ""
    return compare_with(sigma_mad, table["splits"][split])


def compare_with(sigma_mad: float, ref: dict[str, dict]) -> str:
    """:func:`compare` against one split's figures: ``{"constant": point_metrics, "knn": ...}``."""
    if not {"constant", "knn"} <= set(ref):
        return ""
    if not math.isfinite(sigma_mad):  # a diverged run: no ratio means anything
        return f"{sigma_mad} -- not a number: the run diverged, nothing to compare"
    parts = []
    for name, label in (("constant", "constant predictor's"), ("knn", "kNN's")):
        base = ref[name]["sigma_mad"]
        if base > 0:
            parts.append(f"{sigma_mad / base:.2f}x the {label}")
    text = ", ".join(parts)
    knn, n = ref["knn"]["sigma_mad"], int(ref["knn"].get("n", 0))
    noise = sigma_mad_noise(n) if n > 0 else 0.0  # a table without its count: no noise claimed
    more = "(more training galaxies, e.g. data.simulate.n, or more epochs)"
    constant = ref["constant"]["sigma_mad"]
    if sigma_mad >= constant:
        text += " -- NO BETTER THAN THE CONSTANT PREDICTOR: the network learned nothing"
    elif sigma_mad >= constant * (1 - noise):
        text += (f" -- NOT CLEARLY BETTER THAN THE CONSTANT PREDICTOR: on {n:,} galaxies a sigma_MAD is uncertain "
                 f"by about {noise:.0%}, so the network may have learned nothing {more}")
    elif sigma_mad >= knn * (1 + noise):
        text += f" -- the colour kNN still does better: a network needs more galaxies than a colour fit {more}"
    elif knn > 0 and abs(sigma_mad / knn - 1) < noise:
        text += (f" -- level with the colour kNN: on {n:,} galaxies a sigma_MAD is uncertain by about "
                 f"{noise:.0%}; a network pulls ahead of a colour fit with more galaxies {more}")
    return text


def format_table(table: dict[str, Any] | None, split: str = "val") -> list[str]:
    """Lines listing both baselines on ``split``, for the summaries."""
    if table is None or split not in table.get("splits", {}):
        return []
    ref = table["splits"][split]
    n = ref["constant"]["n"]
    lines = [f"reference predictors on the same {n} {'validation' if split == 'val' else split} galaxies:"]
    for name, label in NAMES.items():
        r = ref[name]
        if name == "constant":
            label = f"constant (training median z = {table['median_z']:.3f})"
        lines.append(f"  {label:<38} sigma_mad {r['sigma_mad']:.4f}  bias {r['bias']:+.4f}  "
                     f"outliers {r['outlier_fraction']:.3f}")
    return lines

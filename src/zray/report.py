"""The evaluation report's ``index.html``: one self-contained page, no network.

Styles and the small script are inline and images are referenced by relative
paths, so the folder opens offline, from a file:// URL or after being copied
elsewhere. Once the page has loaded, the script records on ``<body>`` how many
images decoded (``data-images-loaded`` of ``data-images-total``); the tests
read these with headless Chromium.
"""

from __future__ import annotations

import html
from pathlib import Path

_STYLE = """
body { font-family: sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th { background: #f2f2f2; }
td.l, th.l { text-align: left; }
figure { display: inline-block; margin: 0.5em; vertical-align: top; }
figure img { max-width: 520px; border: 1px solid #ddd; }
.note { color: #666; font-size: 0.9em; }
"""

_SCRIPT = """
window.addEventListener('load', function () {
  var imgs = document.images, ok = 0;
  for (var i = 0; i < imgs.length; i++) {
    if (imgs[i].complete && imgs[i].naturalWidth > 0) { ok++; }
  }
  document.body.dataset.imagesLoaded = ok;
  document.body.dataset.imagesTotal = imgs.length;
});
"""

METRIC_LABELS = {
    "n": "galaxies",
    "sigma_mad": "sigma_MAD",
    "bias_mean": "bias (mean dz)",
    "bias_median": "bias (median dz)",
    "outlier_fraction": "outlier fraction |dz| > 0.05",
    "sigma_iqr": "sigma_IQR",
    "rail_outlier_rate": "RAIL outlier rate |dz| > max(0.06, 3 sigma_IQR)",
    "crps": "CRPS (mean)",
    "pit_ks": "PIT KS statistic",
}


# The baselines' point metrics under the names of the model's overall metrics.
_BASELINE_KEYS = {"bias_mean": "bias"}


def _fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.5f}"
    return html.escape(str(value))


def _binned_table(rows: list[dict], label: str, names: dict) -> str:
    keys = ["n", "sigma_mad", "bias_mean", "bias_median", "outlier_fraction", "crps"]
    labels = [METRIC_LABELS[k] for k in keys]
    for name, title in names.items():
        if rows and f"sigma_mad_{name}" in rows[0]:
            keys += [f"sigma_mad_{name}", f"outlier_fraction_{name}"]
            labels += [f"sigma_MAD, {title}", f"outlier fraction, {title}"]
    head = "".join(f"<th>{html.escape(t)}</th>" for t in labels)
    body = "".join(
        f"<tr><td class='l'>{r['lo']:.3f} - {r['hi']:.3f}</td>"
        + "".join(f"<td>{_fmt(r.get(k))}</td>" for k in keys) + "</tr>"
        for r in rows
    )
    return f"<table><tr><th class='l'>{html.escape(label)}</th>{head}</tr>{body}</table>"


QP_LABELS = {
    "pit_ks": ("PIT Kolmogorov-Smirnov", "pit_ks_pvalue"),
    "pit_cvm": ("PIT Cramer-von Mises", "pit_cvm_pvalue"),
    "pit_ad": ("PIT Anderson-Darling", "pit_ad_pvalue"),
    "pit_outlier_rate": ("PIT outlier rate (PIT < 0.0001 or > 0.9999)", None),
    "cde_loss": ("CDE loss (lower is better)", None),
    "brier": ("Brier score over the bins (0 best, 2 worst)", None),
}


def _qp_table(figures: dict | None) -> str:
    """The field's PDF metrics as qp computes them, with p-values where a test gives one."""
    if not figures:
        return ""
    rows = "".join(
        f"<tr><td class='l'>{html.escape(label)}</td><td>{_fmt(figures[key])}</td>"
        f"<td>{_fmt(figures[p]) if p else ''}</td></tr>"
        for key, (label, p) in QP_LABELS.items() if key in figures
    )
    return ("<h3>PDF metrics computed by qp</h3><p class='note'>A p-value below 0.05 says the PIT values are "
            "unlikely to be uniform: the PDFs are not calibrated.</p>"
            f"<table><tr><th class='l'>metric</th><th>value</th><th>p-value</th></tr>{rows}</table>")


def write_index(path, *, title: str, metrics: dict, binned: dict, figures: list[tuple[str, str]],
                notes: list[str], provenance: dict) -> Path:
    """Write the report page; ``figures`` are (file name, caption) beside it."""
    e = html.escape
    names = metrics.get("baseline_names", {})
    reference = metrics.get("baselines") or {}
    shown = [n for n in names if n in reference]
    overall = "".join(
        f"<tr><td class='l'>{e(METRIC_LABELS.get(k, k))}</td><td>{_fmt(v)}</td>"
        + "".join(f"<td>{_fmt(reference[n].get(_BASELINE_KEYS.get(k, k)))}</td>" for n in shown)
        + "</tr>"
        for k, v in metrics["overall"].items()
    )
    overall_head = "<th>zray</th>" + "".join(f"<th>{e(names[n])}</th>" for n in shown)
    parts = [
        "<!DOCTYPE html>",
        "<html lang='en'><head><meta charset='utf-8'>",
        f"<title>{e(title)}</title><style>{_STYLE}</style>",
        f"<script>{_SCRIPT}</script></head><body>",
        f"<h1>{e(title)}</h1>",
        "<p class='note'>" + "<br>".join(e(f"{k}: {v}") for k, v in provenance.items()) + "</p>",
        "<h2>Metrics</h2>",
        "<p class='note'>Reference predictors, fitted on the train split of "
        f"{e(str(metrics.get('baselines_fitted_on') or 'the dataset'))} and scored on "
        "the same galaxies: the training median redshift for every galaxy, and a 10-nearest-"
        "neighbour regression on dereddened aperture colours measured from the cutouts. A network "
        "should beat both.</p>" if shown else "",
        f"<table><tr><th class='l'>metric</th>{overall_head}</tr>{overall}</table>",
        _qp_table(metrics.get("qp")),
        "<h2>Figures</h2>",
    ]
    for name, caption in figures:
        parts.append(f"<figure><img src='{e(name)}' alt='{e(caption)}'><figcaption>{e(caption)}</figcaption></figure>")
    parts.append("<h2>Metrics by spectroscopic redshift</h2>")
    parts.append(_binned_table(binned["z_spec"], "z_spec", names))
    if binned.get("mag_r"):
        parts.append("<h2>Metrics by r magnitude</h2>")
        parts.append(_binned_table(binned["mag_r"], "r mag", names))
    for note in notes:
        parts.append(f"<p class='note'>{e(note)}</p>")
    parts.append("<p class='note'>All figures and tables: <a href='metrics.json'>metrics.json</a>, "
                 "per-object predictions: predictions.parquet.</p>")
    parts.append("</body></html>")
    path = Path(path)
    path.write_text("\n".join(parts) + "\n", encoding="utf-8")
    return path

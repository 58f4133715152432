"""A search's results, read back from its folder: what ``zray status`` shows.

Reading (:func:`summarize`, :func:`format_summary`) writes nothing, so
``zray status`` works on a running experiment, on a read-only copy, and on
someone else's results. The search's driver writes ``results.csv`` and
``best.json`` once at the end (:func:`write_results`).

    >>> from zray import search
    >>> summary = search.summarize("runs/quickstart")         # doctest: +SKIP
    >>> summary["best"]["best"]["val_sigma_mad"]               # doctest: +SKIP
    0.019
    >>> print(search.format_summary(summary))                 # doctest: +SKIP
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

from zray.errors import ZrayError, first_line, last_error_line
from zray.metrics import REPORTED_METRICS

__all__ = ["summarize", "format_summary", "write_results", "trial_records", "best_checkpoint",
           "RESULTS_FILE", "BEST_FILE", "SPACE_FILE", "STUDY_FILE", "TRIALS_DIR", "LOST_DIR"]

RESULTS_FILE = "results.csv"
BEST_FILE = "best.json"
SPACE_FILE = "search_space.json"
STUDY_FILE = "optuna.db"
TRIALS_DIR = "trials"
LOST_DIR = "lost"
# Per trial, its final and best epoch's figures: the reported metrics, the training loss and the epoch.
_METRIC_KEYS = (*REPORTED_METRICS, "loss", "epoch")


def _read_jsonl(path: Path) -> list[dict]:
    rows = []
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
            except (ValueError, RecursionError):
                continue  # a line being written right now
            if isinstance(row, dict):
                rows.append(row)
    return rows


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def _count(value, default: int = 0) -> int:
    """An epoch count from a file Tune or a trial wrote; anything else is ``default``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return default
    return int(value)


def _status(error: str, final: dict, target: int) -> str:
    if error:
        return "error"
    if _count(final.get("epoch")) >= target:
        return "complete"
    return "stopped" if final.get("done") else "unfinished"


def trial_records(experiment_dir: Path, metric: str, mode: str, epochs: int) -> list[dict[str, Any]]:
    """One record per trial: parameters, status, final and best metrics, best checkpoint.

    Status is ``error``, ``complete`` (all ``epochs`` run), ``stopped`` (ended
    early by the scheduler) or ``unfinished`` (running, or interrupted).
    """
    sign = 1.0 if mode == "min" else -1.0
    records = []
    for trial_dir in sorted(Path(experiment_dir).glob("trial-*")):
        params_file = trial_dir / "params.json"
        if not params_file.exists():
            continue
        try:
            params = json.loads(params_file.read_text())
        except (OSError, UnicodeDecodeError, ValueError, RecursionError):
            continue  # cut short (a trial killed while Tune wrote it): nothing to rank
        if not isinstance(params, dict):
            continue
        results = _read_jsonl(trial_dir / "result.json")
        error_file = trial_dir / "error.txt"
        error = last_error_line(error_file.read_text()) if error_file.exists() else ""
        final = results[-1] if results else {}
        scored = [r for r in results if _finite(r.get(metric))]
        best = min(scored, key=lambda r: sign * r[metric]) if scored else {}
        records.append({
            "trial": trial_dir.name,
            "status": _status(error, final, _count(params.get("epochs"), epochs)),
            "epochs": _count(final.get("epoch")),
            "params": params,
            "final": {k: final.get(k) for k in _METRIC_KEYS if k in final},
            "best": {k: best.get(k) for k in _METRIC_KEYS if k in best},
            "best_checkpoint": best_checkpoint(Path(experiment_dir) / TRIALS_DIR / trial_dir.name, metric, mode),
            "error": error,
        })
    return records


def best_checkpoint(run_dir: Path, metric: str, mode: str) -> str | None:
    """The whole checkpoint of a trial's run folder that is best by ``metric``, or None."""
    from zray.train.checkpoints import STATE_FILE, checkpoint_complete

    sign = 1.0 if mode == "min" else -1.0
    best, best_value = None, math.inf
    for state_file in sorted(Path(run_dir).glob(f"checkpoint_*/{STATE_FILE}")):
        if not checkpoint_complete(state_file.parent):
            continue
        try:
            state = json.loads(state_file.read_text())
        except (OSError, ValueError, RecursionError):
            continue
        metrics = state.get("metrics") if isinstance(state, dict) else None
        value = metrics.get(metric) if isinstance(metrics, dict) else None
        if _finite(value) and sign * value < best_value:
            best, best_value = str(state_file.parent), sign * value
    return best


def summarize(experiment_dir) -> dict[str, Any]:
    """The search's trials, ranked by its metric, with the dataset's baselines. Writes nothing."""
    from zray import baselines
    from zray.config.loading import validate

    experiment_dir = Path(experiment_dir)
    space_file = experiment_dir / SPACE_FILE
    if not space_file.exists():
        raise ZrayError(f"{experiment_dir}: not a zray experiment ({SPACE_FILE} missing); expected runs/NAME")
    try:
        raw = json.loads(space_file.read_text())
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ZrayError(f"{space_file}: unreadable ({first_line(exc)}); expected the search space zray "
                        "saved when the experiment started") from None
    if not isinstance(raw, dict):
        raise ZrayError(f"{space_file}: holds {type(raw).__name__}; expected the search space zray saved "
                        "when the experiment started")
    space = validate(raw, space_file)  # the schema and the registry's checks, as for a YAML file
    metric, mode = space.tune.metric, space.tune.mode
    epochs = int(space.default_hyperparameters()["epochs"])
    records = trial_records(experiment_dir, metric, mode, epochs)
    sign = 1.0 if mode == "min" else -1.0
    ranked = sorted((r for r in records if _finite(r["best"].get(metric))), key=lambda r: sign * r["best"][metric])
    best = ranked[0] if ranked else None
    return {
        "experiment": str(experiment_dir),
        "num_samples": space.tune.num_samples,
        "metric": metric,
        "mode": mode,
        "trials": records,
        "ranked": ranked,
        "best": best,
        "best_checkpoint": best["best_checkpoint"] if best else None,
        "baselines": baselines.load(space.data.path),
    }


def write_results(summary: dict[str, Any]) -> None:
    """Write ``results.csv`` (every trial) and ``best.json`` into the experiment folder."""
    experiment_dir = Path(summary["experiment"])
    records = summary["trials"]
    param_names = sorted({k for r in records for k in r["params"]})
    metric_names = [k for k in _METRIC_KEYS if k != "epoch"]
    tmp = experiment_dir / (RESULTS_FILE + ".tmp")
    with tmp.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["trial", "status", "epochs", *param_names] + [f"final_{m}" for m in metric_names]
                        + [f"best_{m}" for m in metric_names] + ["best_checkpoint", "error"])
        for r in records:
            writer.writerow([r["trial"], r["status"], r["epochs"], *(r["params"].get(p, "") for p in param_names)]
                            + [r["final"].get(m, "") for m in metric_names]
                            + [r["best"].get(m, "") for m in metric_names]
                            + [r["best_checkpoint"] or "", r["error"]])
    tmp.replace(experiment_dir / RESULTS_FILE)
    best = summary["best"]
    _write_json(experiment_dir / BEST_FILE, {
        "metric": summary["metric"], "mode": summary["mode"], "trial": best and best["trial"],
        "params": best and best["params"], "metrics": best and best["best"],
        "checkpoint": best and best["best_checkpoint"],
    })


def _write_json(path: Path, data) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
    tmp.replace(path)


def format_summary(summary: dict[str, Any], top: int = 5) -> str:
    """The table printed at the end of a search and by ``zray status``."""
    records = summary["trials"]
    counts: dict[str, int] = {}
    for r in records:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    lines = [
        f"experiment  {summary['experiment']}",
        f"trials      {len(records)} of {summary['num_samples']}: "
        + (", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "none yet"),
    ]
    lines += _ranking_lines(summary, top)
    lines += _baseline_lines(summary)
    lines += [f"failed {r['trial']}: {r['error']}" for r in records if r["status"] == "error"]
    if (Path(summary["experiment"]) / RESULTS_FILE).exists():
        lines.append(f"results: {Path(summary['experiment']) / RESULTS_FILE}")
    return "\n".join(lines)


def _ranking_lines(summary: dict[str, Any], top: int) -> list[str]:
    ranked = summary["ranked"][:top]
    if not ranked:
        return []
    metric = summary["metric"]
    params = sorted({k for r in ranked for k in r["params"]})
    header = ["rank", "trial", *params, "sigma_mad", "bias", "outliers", "epochs"]
    if metric not in ("val_sigma_mad", "val_outlier_fraction"):
        header.insert(-1, metric.removeprefix("val_"))
    rows = []
    for i, r in enumerate(ranked, 1):
        b = r["best"]
        row = [str(i), r["trial"], *(_fmt(r["params"].get(p)) for p in params), _fmt(b.get("val_sigma_mad")),
               _fmt(b.get("val_bias")), _fmt(b.get("val_outlier_fraction")), str(r["epochs"])]
        if metric not in ("val_sigma_mad", "val_outlier_fraction"):
            row.insert(-1, _fmt(b.get(metric)))
        rows.append(row)
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(header)]
    return ["", "  ".join(h.ljust(w) for h, w in zip(header, widths)),
            *("  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in rows), "",
            f"best {metric}: {_fmt(summary['best']['best'].get(metric))}  ({summary['best']['trial']})",
            f"best checkpoint: {summary['best_checkpoint']}"]


def _baseline_lines(summary: dict[str, Any]) -> list[str]:
    from zray import baselines

    table = summary.get("baselines")
    if not table:
        return []
    lines = ["", *baselines.format_table(table, "val")]
    if summary["ranked"]:
        best_sigma = summary["best"]["best"].get("val_sigma_mad")
        lines.append(f"best trial's sigma_mad: {baselines.compare(best_sigma, table, 'val')}")
    constant = table["splits"].get("val", {}).get("constant", {}).get("sigma_mad")
    useless = [r["trial"] for r in summary["ranked"]
               if constant is not None and r["best"].get("val_sigma_mad", 0.0) >= constant]
    if useless:
        lines.append(f"no better than the constant predictor: {', '.join(useless)}")
    return lines


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)

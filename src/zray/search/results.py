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

A two-objective search (``tune.metrics``) has a Pareto front: the trials
whose best-epoch pair of metrics no other trial beats on both
(:func:`pareto_front`, computed here from zray's own records, so Optuna is not
needed to read it). Its chosen trial follows :data:`PARETO_RULE`: the front's
trial with the best first metric, ties broken by the second; it heads
``ranked``, and ``zray export --trial NAME`` takes any other.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

from zray.errors import ZrayError, first_line, last_error_line
from zray.metrics import REPORTED_METRICS

__all__ = ["summarize", "saved_space", "format_summary", "left_to_do", "write_results", "trial_records",
           "best_checkpoint", "pareto_front", "PARETO_RULE", "RESULTS_FILE", "BEST_FILE", "SPACE_FILE", "STUDY_FILE",
           "TRIALS_DIR", "LOST_DIR", "WARM_START_FILE"]

RESULTS_FILE = "results.csv"
BEST_FILE = "best.json"
SPACE_FILE = "search_space.json"
STUDY_FILE = "optuna.db"
TRIALS_DIR = "trials"
LOST_DIR = "lost"
# Which earlier experiment seeded the study, and with how many trials (zray.search.warm_start).
WARM_START_FILE = "warm_start.json"
# Per trial, its final and best epoch's figures: the reported metrics, the training loss and the epoch.
_METRIC_KEYS = (*REPORTED_METRICS, "loss", "epoch")
#: How a two-objective search's trial is chosen from its Pareto front (best.json, status, export).
PARETO_RULE = "the Pareto front's trial with the best {first} (ties: the better {second})"


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


def trial_records(experiment_dir: Path, metric: str, mode: str, epochs: int,
                  required: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """One record per trial: parameters, status, final and best metrics, best checkpoint.

    Status is ``error``, ``complete`` (all ``epochs`` run), ``stopped`` (ended
    early by the scheduler) or ``unfinished`` (running, or interrupted). The
    best epoch is the one best by ``metric`` (ties: the earlier) among those
    that also reported every metric of ``required`` (a two-objective search's
    second), as the Optuna searcher picks it.
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
        scored = [r for r in results if all(_finite(r.get(m)) for m in (metric, *required))]
        best = min(scored, key=lambda r: sign * r[metric]) if scored else {}
        status = _status(error, final, _count(params.get("epochs"), epochs))
        records.append({
            "trial": trial_dir.name,
            "status": status,
            "epochs": _count(final.get("epoch")),
            "params": params,
            "final": {k: final.get(k) for k in _METRIC_KEYS if k in final},
            "best": {k: best.get(k) for k in _METRIC_KEYS if k in best},
            "best_checkpoint": best_checkpoint(Path(experiment_dir) / TRIALS_DIR / trial_dir.name, metric, mode),
            "error": error,
            # how far its epoch has come, while it runs (None when no epoch of it is running long)
            "progress": _progress(Path(experiment_dir), trial_dir.name) if status == "unfinished" else None,
        })
    return records


def _progress(experiment_dir: Path, trial: str) -> dict[str, Any] | None:
    """The progress record its rank-0 worker last wrote within an epoch
    (``trials/.progress/TRIAL.json``: :func:`zray.experiment.progress_file`), or None."""
    from zray.experiment import progress_file
    from zray.train.job import PROGRESS_DIR

    try:
        record = json.loads(Path(progress_file(str(experiment_dir / TRIALS_DIR / PROGRESS_DIR), trial)).read_text())
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):
        return None  # none (no epoch running long), or not zray's
    return record if isinstance(record, dict) and _finite(record.get("time")) else None


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


def pareto_front(records: list[dict[str, Any]], objectives: list[tuple[str, str]]) -> list[dict[str, Any]]:
    """The records no other record dominates on their best-epoch values of ``objectives``
    ((metric, mode) pairs), ordered by :data:`PARETO_RULE`. A record dominates another
    when it is no worse on every objective and better on one; equal pairs are both on
    the front (as in Optuna). Records missing a value are left out."""
    signs = [1.0 if mode == "min" else -1.0 for _, mode in objectives]

    def key(r: dict[str, Any]) -> tuple[float, ...]:
        return tuple(s * r["best"][m] for s, (m, _) in zip(signs, objectives))

    scored = [r for r in records if all(_finite(r["best"].get(m)) for m, _ in objectives)]
    front = [r for r in scored
             if not any(all(a <= b for a, b in zip(key(o), key(r))) and key(o) != key(r) for o in scored)]
    return sorted(front, key=key)


def saved_space(experiment_dir):
    """The search space an experiment started with (its ``search_space.json``), checked by the
    schema and the registry as a YAML file is; one sentence when it is unreadable."""
    from zray.config.loading import validate

    space_file = Path(experiment_dir) / SPACE_FILE
    try:
        raw = json.loads(space_file.read_text())
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ZrayError(f"{space_file}: unreadable ({first_line(exc)}); expected the search space zray "
                        "saved when the experiment started") from None
    if not isinstance(raw, dict):
        raise ZrayError(f"{space_file}: holds {type(raw).__name__}; expected the search space zray saved "
                        "when the experiment started")
    return validate(raw, space_file)


def summarize(experiment_dir) -> dict[str, Any]:
    """The search's trials, ranked by its metric, with the dataset's baselines. Writes nothing.

    A two-objective search also gets ``metrics``, ``modes``, ``pareto`` (its
    front's records, by :data:`PARETO_RULE`) and ``rule``; each record gets
    ``pareto`` (on the front or not), and ``ranked`` is the front first by the
    rule, then the others by the same order (first metric, then second).
    """
    from zray import baselines
    from zray.search.warm_start import read_record

    experiment_dir = Path(experiment_dir)
    if not experiment_dir.exists():
        raise ZrayError(f"{experiment_dir}: no such folder; expected an experiment of `zray tune`, runs/NAME")
    if not (experiment_dir / SPACE_FILE).exists():
        above = next((p for p in experiment_dir.resolve().parents if (p / SPACE_FILE).exists()), None)
        hint = f" (it lies inside the experiment {above})" if above else ""
        raise ZrayError(f"{experiment_dir}: not a zray experiment ({SPACE_FILE} missing){hint}; expected runs/NAME")
    space = saved_space(experiment_dir)
    metric, mode = space.tune.metric, space.tune.mode
    epochs = int(space.default_hyperparameters()["epochs"])
    objectives = space.tune.objectives
    records = trial_records(experiment_dir, metric, mode, epochs, required=tuple(m for m, _ in objectives[1:]))
    sign = 1.0 if mode == "min" else -1.0
    ranked = sorted((r for r in records if _finite(r["best"].get(metric))), key=lambda r: sign * r["best"][metric])
    two: dict[str, Any] = {}
    if len(objectives) > 1:
        front = pareto_front(records, objectives)
        on_front = {id(r) for r in front}
        for r in records:
            r["pareto"] = id(r) in on_front
        rest = sorted((r for r in records if id(r) not in on_front and r["best"]),
                      key=lambda r: tuple((1.0 if md == "min" else -1.0) * r["best"][m] for m, md in objectives))
        ranked = front + rest
        two = {"metrics": [m for m, _ in objectives], "modes": [md for _, md in objectives], "pareto": front,
               "rule": PARETO_RULE.format(first=objectives[0][0], second=objectives[1][0])}
    best = ranked[0] if ranked else None
    return {
        **two,
        "experiment": str(experiment_dir),
        "num_samples": space.tune.num_samples,
        "epochs": epochs,
        "metric": metric,
        "mode": mode,
        "trials": records,
        "ranked": ranked,
        "best": best,
        "best_checkpoint": best["best_checkpoint"] if best else None,
        "baselines": baselines.load(space.data.path),
        "warm_start": read_record(experiment_dir),  # the earlier trials in the study, or None
    }


def write_results(summary: dict[str, Any]) -> None:
    """Write ``results.csv`` (every trial) and ``best.json`` into the experiment folder."""
    experiment_dir = Path(summary["experiment"])
    records = summary["trials"]
    param_names = sorted({k for r in records for k in r["params"]})
    metric_names = [k for k in _METRIC_KEYS if k != "epoch"]
    two = "metrics" in summary  # a two-objective search: a pareto column (true/false)
    tmp = experiment_dir / (RESULTS_FILE + ".tmp")
    with tmp.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["trial", "status", "epochs", *param_names] + [f"final_{m}" for m in metric_names]
                        + [f"best_{m}" for m in metric_names] + ["best_checkpoint", "error"]
                        + (["pareto"] if two else []))
        for r in records:
            writer.writerow([r["trial"], r["status"], r["epochs"], *(r["params"].get(p, "") for p in param_names)]
                            + [r["final"].get(m, "") for m in metric_names]
                            + [r["best"].get(m, "") for m in metric_names]
                            + [r["best_checkpoint"] or "", r["error"]]
                            + ([str(bool(r.get("pareto"))).lower()] if two else []))
    tmp.replace(experiment_dir / RESULTS_FILE)
    best = summary["best"]
    chosen = {
        "metric": summary["metric"], "mode": summary["mode"], "trial": best and best["trial"],
        "params": best and best["params"], "metrics": best and best["best"],
        "checkpoint": best and best["best_checkpoint"],
    }
    if two:  # which objectives, the front, and the rule that chose "trial" from it
        chosen.update({"objectives": summary["metrics"], "modes": summary["modes"], "rule": summary["rule"],
                       "pareto": [{"trial": r["trial"], **{m: r["best"][m] for m in summary["metrics"]}}
                                  for r in summary["pareto"]]})
    _write_json(experiment_dir / BEST_FILE, chosen)


def _write_json(path: Path, data) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
    tmp.replace(path)


def left_to_do(summary: dict[str, Any]) -> str:
    """What an interrupted search (``summary["interrupted"]``) has left, by its table: ``"1 trial
    unfinished, 2 trials not started"``, or ``""``."""
    trials = summary.get("trials", [])
    unfinished = sum(r["status"] == "unfinished" for r in trials)
    not_started = max(0, int(summary.get("num_samples", 0)) - len(trials))
    return ", ".join(f"{n} trial{'s' if n > 1 else ''} {what}" for n, what in ((unfinished, "unfinished"),
                                                                                 (not_started, "not started")) if n)


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
    lines += _warm_start_lines(summary)
    lines += _ranking_lines(summary, top)
    lines += _pareto_lines(summary)
    lines += _baseline_lines(summary)
    lines += _running_lines(summary)
    lines += [f"failed {r['trial']}: {r['error']}" for r in records if r["status"] == "error"]
    if (Path(summary["experiment"]) / RESULTS_FILE).exists():
        lines.append(f"results: {Path(summary['experiment']) / RESULTS_FILE}")
    return "\n".join(lines)


def _ranking_lines(summary: dict[str, Any], top: int) -> list[str]:
    ranked = summary["ranked"][:top]
    if not ranked:
        return []
    metric = summary["metric"]
    extra = [m for m in summary.get("metrics", [metric]) if m not in ("val_sigma_mad", "val_outlier_fraction")]
    two = "metrics" in summary
    params = sorted({k for r in ranked for k in r["params"]})
    header = ["rank", "trial", *params, "sigma_mad", "bias", "outliers",
              *(m.removeprefix("val_") for m in extra), *(["pareto"] if two else []), "epochs"]
    rows = []
    for i, r in enumerate(ranked, 1):
        b = r["best"]
        rows.append([str(i), r["trial"], *(_fmt(r["params"].get(p)) for p in params), _fmt(b.get("val_sigma_mad")),
                     _fmt(b.get("val_bias")), _fmt(b.get("val_outlier_fraction")), *(_fmt(b.get(m)) for m in extra),
                     *(["yes" if r.get("pareto") else ""] if two else []), str(r["epochs"])])
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(header)]
    return ["", "  ".join(h.ljust(w) for h, w in zip(header, widths)),
            *("  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in rows), "",
            f"best {metric}: {_fmt(summary['best']['best'].get(metric))}  ({summary['best']['trial']})",
            f"best checkpoint: {summary['best_checkpoint']}"]


def _running_lines(summary: dict[str, Any]) -> list[str]:
    """``running trial-...: epoch 1/30: 2,816 of 8,000 galaxies (35%) ... (12 s ago)`` for each
    unfinished trial whose worker wrote how far its epoch has come."""
    import time

    from zray.train.job import duration, progress_line

    lines = []
    for r in summary["trials"]:
        record = r.get("progress")
        if not record or _count(record.get("epoch")) <= r["epochs"]:
            continue  # none, or of an epoch the trial has reported since
        try:
            line = progress_line(record, _count(r["params"].get("epochs"), summary.get("epochs", 0)))
        except (KeyError, TypeError, ValueError, OverflowError):  # a record of another kind
            continue
        age = max(time.time() - record["time"], 0.0)
        stale = "; nothing since: its search may have stopped" if age > STALE_S else ""
        lines.append(f"running {r['trial']}: {line} ({duration(age)} ago{stale})")
    return [""] + lines if lines else []


# A progress record older than this: the trial's search may have stopped (its worker writes one
# every 10 s within an epoch; validating and saving an epoch take far less).
STALE_S = 600.0


def _warm_start_lines(summary: dict[str, Any]) -> list[str]:
    """The earlier trials the study was seeded with (they are in optuna.db, not in the table)."""
    record = summary.get("warm_start")
    if not record:
        return []
    skipped = record.get("skipped")
    return [f"warm-started from {record['source']}: {record.get('trials')} earlier trials in the study"
            + (f" ({skipped} outside this search space skipped)" if skipped else "")]


def _pareto_lines(summary: dict[str, Any]) -> list[str]:
    """A two-objective search's front: each trial with its best epoch's pair, and the rule."""
    if "metrics" not in summary or not summary["pareto"]:
        return []
    first, second = summary["metrics"]
    rows = [(r["trial"], _fmt(r["best"].get(first)), _fmt(r["best"].get(second))) for r in summary["pareto"]]
    header = ("trial", first, second)
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(header)]
    return ["", f"Pareto front ({len(rows)} trial(s) no other beats on both {first} and {second}, "
                "best epoch of each):",
            "  " + "  ".join(h.ljust(w) for h, w in zip(header, widths)),
            *("  " + "  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in rows),
            f"chosen: {summary['best']['trial']}, {summary['rule']}; "
            "`zray export --trial NAME` exports another"]


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

"""Wall time of a search and the driver's overhead per trial.

Runs a search (by default the quickstart) into a fresh folder and prints, per
trial, its wall time as Tune saw it, the time spent inside training epochs,
and the difference: the overhead of starting a Ray Train run, materialising
the data and validating, per trial. Data simulation (first use) is timed apart.

    python scripts/bench_tune.py                                  # search_spaces/quickstart.yaml
    python scripts/bench_tune.py search_spaces/cnn.yaml --set tune.num_samples=2
    python scripts/bench_tune.py --env RAY_TRAIN_ENABLE_PREEMPTION_WATCHER=1   # a baseline with it, then without

``--env KEY=VALUE`` (repeatable) runs the search twice in this command, on
the same data: first with those environment variables (the baseline), then
as zray sets them, and prints the ratio of the start-up per trial.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("space", nargs="?", default=str(Path(__file__).parents[1] / "search_spaces/quickstart.yaml"))
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--data", default=None, help="data folder (default: simulate into a fresh one)")
    parser.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                        help="baseline environment: run the search with it, then as zray runs it, and compare")
    args = parser.parse_args()
    if not args.env:
        return run_once(args)[0]
    import os

    import ray

    baseline = dict(e.split("=", 1) for e in args.env)
    saved = {k: os.environ.get(k) for k in baseline}
    os.environ.update(baseline)
    print(f"== baseline: {' '.join(args.env)}")
    _, base_startup, data = run_once(args)
    ray.shutdown()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    print("== as zray runs it")
    args.data = data
    _, startup, _ = run_once(args)
    print(f"\nstart-up per trial: {startup:.1f} s vs {base_startup:.1f} s with {' '.join(args.env)}: "
          f"{startup / max(base_startup, 1e-9):.2f}x")
    return 0


def run_once(args) -> tuple[int, float, str]:
    """One search; (exit status, mean start-up per trial, the data folder)."""
    from zray import config, search
    from zray.data.source import ensure_data

    work = Path(tempfile.mkdtemp(prefix="zray-bench-tune-"))
    overrides = list(args.overrides) + [f"data.path={args.data or work / 'data'}"]
    space = config.load(args.space, overrides)

    t0 = time.perf_counter()
    ensure_data(space)
    simulate_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    summary = search.run(space, runs_dir=work / "runs")
    search_s = time.perf_counter() - t0

    print(f"{'trial':<28}{'status':<11}{'epochs':>7}{'wall s':>9}{'in epochs s':>13}{'overhead s':>12}"
          f"{'start-up s':>12}{'per epoch s':>13}")
    overheads, startups, per_epoch = [], [], []
    for record in summary["trials"]:
        lines = (work / "runs" / space.name / record["trial"] / "result.json").read_text().splitlines()
        results = [json.loads(x) for x in lines if x.strip()]
        wall = results[-1]["time_total_s"] if results else float("nan")
        in_epochs = sum(r.get("epoch_time_s", 0.0) for r in results)
        overheads.append(wall - in_epochs)
        # Between two epochs' training: validation, checkpoint, report. Before the
        # first: starting the Ray Train run (controller, workers, TensorFlow, data).
        gaps = sorted(r["time_this_iter_s"] - r.get("epoch_time_s", 0.0) for r in results[1:])
        gap = gaps[len(gaps) // 2] if gaps else 0.0
        startup = results[0]["time_this_iter_s"] - results[0].get("epoch_time_s", 0.0) - gap if results else 0.0
        startups.append(startup)
        per_epoch.append(gap)
        print(f"{record['trial']:<28}{record['status']:<11}{record['epochs']:>7}{wall:>9.1f}{in_epochs:>13.1f}"
              f"{wall - in_epochs:>12.1f}{startup:>12.1f}{gap:>13.2f}")
    n = len(summary["trials"])
    print()
    print(f"simulation (first use)        {simulate_s:8.1f} s")
    print(f"search wall time              {search_s:8.1f} s for {n} trials")
    print(f"search wall time per trial    {search_s / max(n, 1):8.1f} s")
    print(f"mean overhead per trial       {sum(overheads) / max(n, 1):8.1f} s  (trial wall time minus time in epochs)")
    print(f"  of which start-up           {sum(startups) / max(n, 1):8.1f} s  (before the first epoch trains)")
    print(f"  and between epochs          {sum(per_epoch) / max(n, 1):8.2f} s an epoch  "
          "(validation, checkpoint, report)")
    print(f"quickstart total              {simulate_s + search_s:8.1f} s")
    return 0, sum(startups) / max(n, 1), str(space.data.path)


if __name__ == "__main__":
    sys.exit(main())

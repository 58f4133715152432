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

``--baseline REF`` runs the search twice in this command, on the same data:
first with zray's code as of git commit REF (its ``src/``, unpacked into a
temporary folder), then with the code as it is now, each in its own process,
and prints the ratios (this machine's speed drifts by tens of percent from one
hour to the next; two runs in one command are comparable):

    python scripts/bench_tune.py --baseline c449a23
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
    parser.add_argument("--baseline", metavar="REF",
                        help="git commit to compare with: its code runs the same search first")
    parser.add_argument("--json", help=argparse.SUPPRESS)  # where one run writes its figures
    parser.add_argument("--fresh-data", action="store_true", help=argparse.SUPPRESS)  # --data is --baseline's own
    args = parser.parse_args()
    if args.baseline:
        return compare_with(args)
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


FIGURES = {  # key: what it is
    "startup_s": "start-up per trial, s",
    "overhead_s": "overhead per trial, s",
    "between_epochs_s": "between epochs, s an epoch",
    "search_per_trial_s": "search wall time per trial, s",
    "epoch_s": "time in epochs per epoch, s",
}


def compare_with(args) -> int:
    """The search with the code of ``args.baseline``, then with this tree's; the ratios."""
    import os
    import subprocess

    repo = Path(__file__).resolve().parents[1]
    work = Path(tempfile.mkdtemp(prefix="zray-bench-baseline-"))
    archive = subprocess.run(["git", "-C", str(repo), "archive", args.baseline, "src"],
                             capture_output=True, check=False)
    if archive.returncode != 0:
        print(f"bench_tune: cannot read commit {args.baseline!r}: {archive.stderr.decode().strip()}")
        return 2
    subprocess.run(["tar", "-x", "-C", str(work)], input=archive.stdout, check=True)
    data = args.data or str(work / "data")
    figures = {}
    for label, src in ((f"baseline {args.baseline}", work / "src"), ("this tree", repo / "src")):
        print(f"== {label}", flush=True)
        out = work / f"{len(figures)}.json"
        command = [sys.executable, __file__, args.space, "--data", data, "--json", str(out)]
        command += [] if args.data else ["--fresh-data"]  # its own folder: simulated into if empty
        command += [x for o in args.overrides for x in ("--set", o)]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(src), os.environ.get("PYTHONPATH")]))}
        if subprocess.run(command, env=env, check=False).returncode != 0:
            print(f"bench_tune: the run with {label} failed")
            return 1
        figures[label] = json.loads(out.read_text())
    (base, base_fig), (_, now) = figures.items()
    print(f"\n{'':34}{base:>18}{'this tree':>12}{'ratio':>8}")
    for key, what in FIGURES.items():
        print(f"{what:34}{base_fig[key]:18.2f}{now[key]:12.2f}{now[key] / max(base_fig[key], 1e-9):8.2f}x")
    return 0


def run_once(args) -> tuple[int, float, str]:
    """One search; (exit status, mean start-up per trial, the data folder)."""
    from zray import config, search
    from zray.data.source import ensure_data

    work = Path(tempfile.mkdtemp(prefix="zray-bench-tune-"))
    data = Path(args.data or work / "data")
    overrides = list(args.overrides) + [f"data.path={data}"]
    simulated = config.load(args.space, args.overrides).data.simulate
    # A data.path given with --set is simulated into only when asked again: into a fresh
    # folder, or the first of --baseline's two runs into its own (the second finds the
    # dataset there); never into a --data folder the user named.
    if simulated and (not args.data or (args.fresh_data and not (data / "manifest.json").is_file())):
        overrides.append(f"data.simulate.n={simulated.n}")
    space = config.load(args.space, overrides)

    t0 = time.perf_counter()
    ensure_data(space)
    simulate_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    summary = search.run(space, runs_dir=work / "runs")
    search_s = time.perf_counter() - t0

    print(f"{'trial':<28}{'status':<11}{'epochs':>7}{'wall s':>9}{'in epochs s':>13}{'overhead s':>12}"
          f"{'start-up s':>12}{'per epoch s':>13}")
    overheads, startups, per_epoch, in_epochs_all = [], [], [], []
    for record in summary["trials"]:
        lines = (work / "runs" / space.name / record["trial"] / "result.json").read_text().splitlines()
        results = [json.loads(x) for x in lines if x.strip()]
        wall = results[-1]["time_total_s"] if results else float("nan")
        in_epochs = sum(r.get("epoch_time_s", 0.0) for r in results)
        overheads.append(wall - in_epochs)
        in_epochs_all.append(in_epochs)
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
    if args.json:
        epochs = sum(r["epochs"] for r in summary["trials"])
        Path(args.json).write_text(json.dumps({
            "startup_s": sum(startups) / max(n, 1), "overhead_s": sum(overheads) / max(n, 1),
            "between_epochs_s": sum(per_epoch) / max(n, 1), "search_per_trial_s": search_s / max(n, 1),
            "epoch_s": sum(in_epochs_all) / max(epochs, 1),
        }))
    return 0, sum(startups) / max(n, 1), str(space.data.path)


if __name__ == "__main__":
    from zray.errors import ZrayError

    try:
        sys.exit(main())
    except ZrayError as exc:  # e.g. a --data folder without a dataset
        sys.exit(f"bench_tune: {exc}")

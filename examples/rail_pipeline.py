"""zray as a stage of a RAIL pipeline, run by ceci: inform, estimate, evaluate.

    python examples/rail_pipeline.py BUNDLE DATA --out rail

BUNDLE is a folder of `zray export`; DATA a shard folder (its test split is
used, or --split). The script writes, under --out:

- ``cutouts.hdf5``: the galaxies as a RAIL table (object_id, image, ebv, redshift);
- ``pipe.yml``: the pipeline, ZrayInformer (takes the bundle) -> ZrayEstimator
  (PDFs chunk by chunk, a qp file) -> RAIL's own evaluators, the point
  metrics on ``zmedian`` and the PDF metrics (PIT, CDE loss);
- the stages' outputs, after running ``ceci pipe.yml`` (each stage in its
  own process, ``python3 -m zray ZrayEstimator ...``, as ceci runs any
  RAIL stage).

It then prints RAIL's figures. Put another estimator's stages (FlexZBoost,
BPZ...) into the same pipeline to compare them on the same galaxies.
Needs ``pip install -e ".[rail]"``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path


def build(bundle: Path, data: Path, split: str, out: Path) -> Path:
    """Write the input table and the pipeline file under ``out``; returns the pipeline file."""
    import tables_io
    from rail.core.stage import RailPipeline
    from rail.evaluation.dist_to_point_evaluator import DistToPointEvaluator
    from rail.evaluation.point_to_point_evaluator import PointToPointEvaluator

    from zray.rail import ZrayEstimator, ZrayInformer, cutout_table

    table = cutout_table(data, splits=(split,))
    tables_io.write({"photometry": table}, str(out / "cutouts.hdf5"))
    pipe = RailPipeline()
    pipe.inform_zray = ZrayInformer.build(bundle=str(bundle.resolve()))
    pipe.estimate_zray = ZrayEstimator.build(connections=dict(model=pipe.inform_zray.io.model), chunk_size=1000)
    pipe.points_zray = PointToPointEvaluator.build(
        connections=dict(input=pipe.estimate_zray.io.output), point_estimate_key="zmedian", force_exact=True,
        metrics=["point_stats_sigma_mad", "point_bias", "point_outlier_rate", "point_stats_iqr"])
    pipe.pdfs_zray = DistToPointEvaluator.build(
        connections=dict(input=pipe.estimate_zray.io.output), metrics=["cdeloss", "pit"], force_exact=True,
        limits=[0.0, 0.4])
    inputs = str(out / "cutouts.hdf5")
    pipe.initialize(dict(input=inputs, truth=inputs), dict(output_dir=str(out), log_dir=str(out), resume=False), None)
    pipe.save(str(out / "pipe.yml"))
    return out / "pipe.yml"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bundle", type=Path, help="bundle folder of zray export")
    ap.add_argument("data", type=Path, help="zray shard folder")
    ap.add_argument("--split", default="test", choices=["train", "val", "test"])
    ap.add_argument("--out", type=Path, required=True, help="new folder for the pipeline and its outputs")
    args = ap.parse_args()
    try:
        import rail.core.stage  # noqa: F401
    except ImportError:
        ap.exit(1, 'this example needs RAIL: pip install -e ".[rail]" (Python 3.11 or newer)\n')
    if args.out.exists() and any(args.out.iterdir()):
        ap.exit(1, f"{args.out}: exists and is not empty; expected a new folder for the pipeline\n")
    args.out.mkdir(parents=True, exist_ok=True)
    pipeline = build(args.bundle, args.data, args.split, args.out)
    # ceci starts each stage as `python3 -m ...`: this Python's environment first on the PATH.
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    ceci = shutil.which("ceci", path=env["PATH"])
    print(f"running: ceci {pipeline}", flush=True)
    done = subprocess.run([ceci, str(pipeline)], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        print(done.stdout[-3000:] + done.stderr[-3000:], file=sys.stderr)
        print(f"the pipeline failed; each stage's log is in {args.out}/*.out", file=sys.stderr)
        return 1
    import numpy as np
    import qp
    import tables_io

    ens = qp.read(str(args.out / "output_estimate_zray.hdf5"))
    points = tables_io.read(str(args.out / "summary_points_zray.hdf5"))
    pdfs = tables_io.read(str(args.out / "summary_pdfs_zray.hdf5"))
    figures = {**points, **pdfs}
    print(f"{ens.npdf} PDFs from ZrayEstimator: {args.out / 'output_estimate_zray.hdf5'}")
    print("RAIL's evaluation (point estimate zmedian): " + "  ".join(
        f"{k} {float(np.ravel(v)[0]):.5f}" for k, v in sorted(figures.items())))
    return 0


if __name__ == "__main__":
    sys.exit(main())

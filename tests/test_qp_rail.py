"""zray in the photo-z field's own formats and tools: qp files, qp's metrics, RAIL's stages.

Uses conftest's ``exported`` bundle (one tiny real search), real qp files on
disk, RAIL's own evaluators, and a RAIL pipeline run by ceci in subprocesses.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

import zray
from zray import metrics as m
from zray.bins import RedshiftBins
from zray.cli import main
from zray.errors import ZrayError

qp = pytest.importorskip("qp", reason='needs the rail extra: pip install -e ".[rail]"')
pytest.importorskip("rail.estimation.estimator", reason='needs the rail extra: pip install -e ".[rail]"')

pytestmark = pytest.mark.slow
BINS = RedshiftBins()


def _run(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert "Traceback" not in result.output, result.output
    return result


def _parquet(path: Path) -> dict[str, np.ndarray]:
    table = pq.read_table(path)
    out = {name: table.column(name).to_numpy(zero_copy_only=False) for name in table.column_names if name != "pdf"}
    out["pdf"] = np.stack(table.column("pdf").to_numpy(zero_copy_only=False)).astype(np.float64)
    return out


@pytest.fixture(scope="module")
def test_split(exported, sim_data, tmp_path_factory):
    """The bundle's predictions for the test split, as zray's Parquet and as a qp file."""
    tmp = tmp_path_factory.mktemp("qp")
    for fmt, name in (("parquet", "pz.parquet"), ("qp", "pz.hdf5")):
        result = _run("predict", exported["best"], sim_data, "--split", "test", "--format", fmt, "--out", tmp / name)
        assert result.exit_code == 0, result.output
    return {"tmp": tmp, "parquet": _parquet(tmp / "pz.parquet"), "qp": tmp / "pz.hdf5", "output": result.output}


def test_predict_format_qp_round_trips_through_qp(test_split, exported):
    ens = qp.read(str(test_split["qp"]))
    ours = test_split["parquet"]
    assert ens.npdf == len(ours["id"]) > 0
    assert ens.metadata["pdf_name"][0] in (b"hist", "hist")
    assert np.allclose(ens.metadata["bins"], BINS.edges)
    # qp keeps densities: density x bin width is zray's probability per bin
    assert np.allclose(ens.objdata["pdfs"] * BINS.width, ours["pdf"], atol=1e-6)
    assert np.allclose(ens.pdf(BINS.centres), ours["pdf"] / BINS.width, atol=1e-4)
    ancil = ens.ancil
    assert np.array_equal(ancil["id"], ours["id"])
    for rail_name, name in (("zmode", "z_mode"), ("zmean", "z_mean"), ("zmedian", "z_median"), ("z_std", "z_std"),
                            ("z_q2p5", "z_lo95"), ("z_q16", "z_lo68"), ("z_q84", "z_hi68"), ("z_q97p5", "z_hi95"),
                            ("odds", "odds"), ("z_draw", "z_draw"), ("redshift", "z_spec")):
        assert np.allclose(np.ravel(ancil[rail_name]), ours[name], atol=1e-9), rail_name
    # qp's own median of the histogram is zray's
    assert np.allclose(np.ravel(ens.median()), ours["z_median"], atol=1e-6)
    # the file says which bundle made it, and no temporary file was left beside it
    import h5py

    with h5py.File(test_split["qp"], "r") as f:
        assert json.loads(f.attrs["zray"])["bundle"] == str(exported["best"].resolve())
    assert not [p for p in test_split["tmp"].iterdir() if p.name.startswith(".")]
    assert "qp ensemble" in test_split["output"]


def test_to_qp_in_python_gives_the_file_s_ensemble(test_split, exported):
    ens = qp.read(str(test_split["qp"]))
    from_parquet = zray.to_qp(test_split["tmp"] / "pz.parquet")
    assert np.allclose(from_parquet.objdata["pdfs"], ens.objdata["pdfs"], atol=1e-5)
    assert np.array_equal(from_parquet.ancil["id"], ens.ancil["id"])
    assert np.allclose(from_parquet.ancil["z_draw"], np.ravel(ens.ancil["z_draw"]))
    ours = test_split["parquet"]
    bundle = zray.load(exported["best"])
    from_array = zray.to_qp(ours["pdf"], bundle, ids=ours["id"], z_spec=ours["z_spec"])
    assert np.allclose(from_array.ancil["zmedian"], ours["z_median"])
    assert np.allclose(from_array.ancil["redshift"], ours["z_spec"])
    with pytest.raises(ZrayError, match="needs bins="):
        zray.to_qp(ours["pdf"])
    broken = ours["pdf"].copy()
    broken[1, 5] = np.nan
    with pytest.raises(ZrayError, match="PDF row 1 is empty, negative or not a number"):
        zray.to_qp(broken, bundle)
    with pytest.raises(ZrayError, match="one id per PDF"):
        zray.to_qp(ours["pdf"], bundle, ids=ours["id"][:-1])


def test_evaluate_reports_qp_s_metrics_and_its_ks_is_zray_s(exported):
    report = json.loads((exported["report"] / "metrics.json").read_text())
    q = report["qp"]
    assert q["pit_ks"] == pytest.approx(report["overall"]["pit_ks"], abs=1e-9)
    for key in ("pit_ks_pvalue", "pit_cvm_pvalue", "pit_ad_pvalue"):
        assert 0.0 <= q[key] <= 1.0, key
    assert q["pit_cvm"] > 0 and np.isfinite(q["pit_ad"]) and np.isfinite(q["cde_loss"])
    assert 0.0 <= q["brier"] <= 2.0 and 0.0 <= q["pit_outlier_rate"] <= 1.0
    assert "qp: PIT KS" in exported["evaluate_output"] and "Brier" in exported["evaluate_output"]
    assert "PDF metrics computed by qp" in (exported["report"] / "index.html").read_text()


def test_rail_evaluation_stages_score_the_qp_file_as_zray_does(exported, sim_data, test_split, tmp_path,
                                                                monkeypatch):
    from rail.core.data import DataStore
    from rail.evaluation.dist_to_point_evaluator import DistToPointEvaluator
    from rail.evaluation.point_to_point_evaluator import PointToPointEvaluator

    from zray.rail import cutout_table

    monkeypatch.chdir(tmp_path)  # where RAIL would write anything it writes
    DataStore.allow_overwrite = True
    ens = qp.read(str(test_split["qp"]))
    table = cutout_table(sim_data, splits=("test",))
    assert np.array_equal(table["object_id"], np.ravel(ens.ancil["id"]))  # the same galaxies, in the same order
    truth = {"photometry": {"redshift": table["redshift"]}}
    points = PointToPointEvaluator.make_stage(
        name="zray_points", metrics=["point_stats_sigma_mad", "point_outlier_rate", "point_bias"],
        point_estimate_key="zmedian", force_exact=True, output_mode="return",
    ).evaluate(ens, truth)["summary"].data
    report = json.loads((exported["report"] / "metrics.json").read_text())
    assert report["split"] == "test"
    assert points["point_stats_sigma_mad"][0] == pytest.approx(report["overall"]["sigma_mad"], rel=1e-9)
    assert points["point_outlier_rate"][0] == pytest.approx(report["overall"]["rail_outlier_rate"], abs=1e-12)
    assert points["point_bias"][0] == pytest.approx(report["overall"]["bias_median"], abs=1e-9)
    dists = DistToPointEvaluator.make_stage(
        name="zray_dists", metrics=["pit"], force_exact=True, limits=[BINS.z_min, BINS.z_max], output_mode="return",
    ).evaluate(ens, truth)
    rail_pit = dists["single_distribution_summary"].data["pit"]
    locs = np.ravel(rail_pit.objdata["locs"])
    ours = m.pit(test_split["parquet"]["pdf"], BINS, table["redshift"])
    assert np.allclose(locs, np.quantile(ours, np.linspace(0, 1, len(locs))), atol=1e-6)
    assert m.pit_ks(ours) == pytest.approx(report["overall"]["pit_ks"], abs=1e-6)


def test_zray_estimator_runs_in_a_rail_pipeline(exported, sim_data, test_split, tmp_path):
    """ZrayInformer -> ZrayEstimator -> RAIL's point evaluator, saved as a pipeline and run by ceci,
    each stage in its own process (`python3 -m zray ZrayEstimator ...`, as ceci launches stages)."""
    import tables_io
    from rail.core.stage import RailPipeline
    from rail.evaluation.point_to_point_evaluator import PointToPointEvaluator

    from zray.rail import ZrayEstimator, ZrayInformer, cutout_table

    table = cutout_table(sim_data, splits=("test",))
    tables_io.write({"photometry": table}, str(tmp_path / "cutouts.hdf5"))
    pipe = RailPipeline()
    pipe.inform_zray = ZrayInformer.build(bundle=str(exported["best"]))
    pipe.estimate_zray = ZrayEstimator.build(connections=dict(model=pipe.inform_zray.io.model), chunk_size=12)
    pipe.evaluate_zray = PointToPointEvaluator.build(
        connections=dict(input=pipe.estimate_zray.io.output), metrics=["point_stats_sigma_mad"],
        point_estimate_key="zmedian", force_exact=True)
    out = tmp_path / "out"
    pipe.initialize(dict(input=str(tmp_path / "cutouts.hdf5"), truth=str(tmp_path / "cutouts.hdf5")),
                    dict(output_dir=str(out), log_dir=str(out), resume=False), None)
    pipe.save(str(tmp_path / "pipe.yml"))
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run([str(Path(sys.executable).with_name("ceci")), str(tmp_path / "pipe.yml")],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    logs = "".join(p.read_text() for p in out.glob("*.out")) if out.is_dir() else ""
    assert done.returncode == 0, (done.stdout + done.stderr + logs)[-4000:]
    ens = qp.read(str(out / "output_estimate_zray.hdf5"))
    ours = test_split["parquet"]
    assert ens.npdf == len(ours["id"])  # three chunks of at most 12, written in place
    assert np.array_equal(np.ravel(ens.ancil["id"]), ours["id"])
    assert np.allclose(ens.objdata["pdfs"] * BINS.width, ours["pdf"], atol=1e-5)
    assert np.allclose(np.ravel(ens.ancil["zmedian"]), ours["z_median"], atol=1e-6)
    summary = tables_io.read(str(out / "summary_evaluate_zray.hdf5"))
    report = json.loads((exported["report"] / "metrics.json").read_text())
    assert float(np.ravel(summary["point_stats_sigma_mad"])[0]) == pytest.approx(report["overall"]["sigma_mad"],
                                                                                rel=1e-6)


def test_rail_stages_refuse_what_they_cannot_use(exported, sim_data, tmp_path, monkeypatch):
    from rail.core.data import DataStore

    monkeypatch.chdir(tmp_path)  # RAIL writes an informer's model file in the working folder

    from zray.rail import ZrayEstimator, ZrayInformer, cutout_table

    DataStore.allow_overwrite = True
    with pytest.raises(ZrayError, match="bundle.json"):
        ZrayInformer.make_stage(name="inform_nothing", bundle=str(tmp_path), hdf5_groupname="").inform(
            {"redshift": np.zeros(2)})
    table = cutout_table(sim_data, splits=("test",))
    model = ZrayInformer.make_stage(name="inform_ok", bundle=str(exported["best"]), hdf5_groupname="").inform(table)
    small = {**table, "image": table["image"][:, :, :16, :16]}
    with pytest.raises(ZrayError, match="at least the bundle's 32"):
        ZrayEstimator.make_stage(name="est_small", model=model, hdf5_groupname="", output_mode="return").estimate(small)
    no_ebv = {k: v for k, v in table.items() if k != "ebv"}
    with pytest.raises(ZrayError, match="no 'ebv' column"):
        ZrayEstimator.make_stage(name="est_no_ebv", model=model, hdf5_groupname="", output_mode="return").estimate(
            no_ebv)
    # flattened cutouts are read as (bands, H, W)
    flat = {**table, "image": table["image"].reshape(len(table["object_id"]), -1)}
    ens = ZrayEstimator.make_stage(name="est_flat", model=model, hdf5_groupname="", output_mode="return").estimate(
        flat).data
    assert ens.npdf == len(table["object_id"])
    assert np.array_equal(np.ravel(ens.ancil["id"]), table["object_id"])


@pytest.mark.parametrize("args, message", [
    (("--format", "qp", "--out", "pz.parquet"), "expected a file name ending in .hdf5 or .h5"),
    (("--format", "qp", "--no-pdf", "--out", "pz.hdf5"), "--no-pdf cannot go with it"),
    (("--out", "pz.h5"), "expected --format qp for a qp file"),
    (("--out", "pz.csv"), "--format parquet writes Parquet, whatever the name says; expected a name ending in .parquet"),
])
def test_predict_refuses_a_format_it_cannot_write(exported, sim_data, tmp_path, args, message):
    out_args = list(args)
    out_args[out_args.index("--out") + 1] = str(tmp_path / out_args[out_args.index("--out") + 1])
    result = _run("predict", exported["best"], sim_data, *out_args)
    assert result.exit_code == 1 and message in result.output, result.output
    assert list(tmp_path.iterdir()) == []


def test_predict_overwrites_its_own_qp_file_but_not_another_hdf5(exported, sim_data, test_split, tmp_path):
    import h5py

    foreign = tmp_path / "theirs.hdf5"
    with h5py.File(foreign, "w") as f:
        f["x"] = np.arange(3)
    result = _run("predict", exported["best"], sim_data, "--split", "test", "--format", "qp", "--out", foreign,
                  "--overwrite")
    assert result.exit_code == 1 and "was not written by zray" in result.output, result.output
    with h5py.File(foreign, "r") as f:
        assert list(f["x"][:]) == [0, 1, 2]
    ours = tmp_path / "ours.hdf5"
    for _ in range(2):
        result = _run("predict", exported["best"], sim_data, "--split", "val", "--format", "qp", "--out", ours,
                      "--overwrite")
        assert result.exit_code == 0, result.output
    assert qp.read(str(ours)).npdf > 0


def test_without_qp_predict_says_which_extra_and_evaluate_notes_what_it_skipped(monkeypatch, tmp_path):
    """A Python without qp (3.10, or the core install): one sentence naming the extra, no traceback."""
    from zray.evaluate import _qp_figures
    from zray.predict import _check_format

    monkeypatch.setitem(sys.modules, "qp", None)  # `import qp` now raises ImportError, as when not installed
    with pytest.raises(ZrayError, match=r'--format qp needs qp, which is not installed; pip install "zray\[rail\]"'):
        _check_format(tmp_path / "pz.hdf5", "qp", True)
    _check_format(tmp_path / "pz.parquet", "parquet", True)  # zray's own format needs nothing more
    pdf = np.full((3, BINS.n_bins), 1.0 / BINS.n_bins)
    figures, note = _qp_figures(pdf, BINS, np.array([0.1, 0.2, 0.3]))
    assert figures is None and 'pip install "zray[rail]"' in note

"""Export, predict and evaluate, from one tiny real search.

One session-scoped search (conftest's ``exported``: 2 trials, 1 epoch, a tiny
cnn) is exported as a 1-member and a 2-member bundle; everything else is
derived from those.
Mismatch tests edit copies of the bundle and need no Ray.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

import zray
from conftest import SDSS_IDS
from zray.bundle import BUNDLE_FILE, read_bundle
from zray.calibration import temper
from zray.cli import main
from zray.data import load_arrays, preprocess_batch, read_manifest
from zray.errors import ZrayError
from zray.evaluate import FIGURES

pytestmark = pytest.mark.slow

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _run(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert "Traceback" not in result.output, result.output
    return result


@pytest.fixture(scope="module")
def small_images(tmp_path_factory):
    """A few 16x16 cutouts: smaller than the bundle's 32x32."""
    from zray.data.simulate import simulate

    out = tmp_path_factory.mktemp("small") / "data"
    simulate(out, 40, size=16, workers=1, progress=False)
    return out


# --- export --------------------------------------------------------------------------


def test_bundle_records_what_predicting_needs(exported, sim_data):
    info = json.loads((exported["best"] / BUNDLE_FILE).read_text())
    ranked = exported["summary"]["ranked"]
    assert info["format"] == 2
    assert info["model_types"] == ["cnn"]
    assert info["bins"] == {"z_min": 0.0, "z_max": 0.4, "n_bins": 180}
    assert info["image_size"] == 32
    assert info["bands"] == ["u", "g", "r", "i", "z"]
    assert "sqrt(|x|+1)-1" in info["preprocessing"]["pixel_scaling"]
    assert "channels last" in info["preprocessing"]["model_layout"]
    assert info["data"]["manifest_hash"] == read_manifest(sim_data).hash
    assert {"zray", "tensorflow", "ray"} <= set(info["versions"])
    assert info["versions"]["zray"] == zray.__version__
    [member] = info["members"]
    assert member["trial"] == ranked[0]["trial"]
    assert member["hyperparameters"] == {"filters": 8, "blocks": 2, "dense_units": 32, "dropout": 0.0}
    assert member["validation"]["val_sigma_mad"] == pytest.approx(ranked[0]["best"]["val_sigma_mad"])
    # Safe format only: JSON and HDF5, nothing pickled.
    files = sorted(p.relative_to(exported["best"]).as_posix() for p in exported["best"].rglob("*") if p.is_file())
    assert files == [".zray-files.json", "bundle.json", "members/m0/model.json", "members/m0/weights.weights.h5"]
    # Every member file has its checksum in bundle.json; the record lists what zray wrote.
    assert set(member["sha256"]) == {"model.json", "weights.weights.h5"}
    assert json.loads((exported["best"] / ".zray-files.json").read_text()) == {"kind": "bundle", "files": files[1:]}
    # Nothing temporary left beside the bundle.
    assert not [p for p in exported["tmp"].iterdir() if p.name.startswith(".")]
    ens = json.loads((exported["ens"] / BUNDLE_FILE).read_text())
    assert ens["ensemble"] == "mean of member PDFs"


def test_seed_ensemble_trains_the_best_configuration_again(exported):
    """--members seeds: the best trial, then its configuration trained with the next seed for the
    search's full epochs under RUN/ensemble/; the validation check's figures are recorded."""
    from zray.ensemble import ENSEMBLE_DIR
    from zray.train import TrainJob, read_state

    best = exported["summary"]["ranked"][0]
    ens = json.loads((exported["ens"] / BUNDLE_FILE).read_text())
    assert [m["trial"] for m in ens["members"]] == [best["trial"], f"{best['trial']}-seed1"]
    first, second = ens["members"]
    assert first["hyperparameters"] == second["hyperparameters"]
    assert first["training"] == second["training"]
    assert Path(second["checkpoint"]).is_relative_to(exported["experiment"] / ENSEMBLE_DIR)
    jobs = [TrainJob(**read_state(m["checkpoint"])["job"]) for m in ens["members"]]
    assert [j.seed for j in jobs] == [0, 1]
    assert second["epoch"] == jobs[1].hyperparameters["epochs"] == 1
    sel = ens["selection"]
    assert sel["rule"] == "seeds" and sel["metric"] == "val_sigma_mad"
    assert sel["n"] == read_manifest(jobs[0].data_path).rows["val"]
    values = [m["val_sigma_mad"] for m in sel["members"]]
    assert sel["best_member"] == int(np.argmin(values))
    assert sel["ratio"] == pytest.approx(sel["ensemble"]["val_sigma_mad"] / min(values))
    lo, hi = sel["ratio_interval"]  # the ratio's spread over resamples of the validation galaxies
    assert 0 < lo <= hi and f"{lo:.3f}x-{hi:.3f}x in 95% of resamples of the {sel['n']:,} validation" in sel["reason"]
    # --keep-ensemble: shipped whatever the check said, and the reason says which.
    assert sel["shipped"] == "ensemble"
    beats = sel["ensemble"]["val_sigma_mad"] < min(values)
    assert ("does not beat" not in sel["reason"]) == beats
    assert "ensemble members: the best trial's configuration trained with different seeds" in exported["ens_output"]
    # How alike the two members' errors are, and what averaging them can gain for it.
    shared = sel["shared"]
    assert -1.0 <= shared["correlation"] <= 1.0 and 0 < shared["rows"] <= sel["n"]
    assert shared["expected_ratio"] == pytest.approx(np.sqrt(shared["correlation"] + (1 - shared["correlation"]) / 2))
    assert f"the members' errors correlate at {shared['correlation']:.2f} on {shared['rows']:,} validation" \
        in exported["ens_output"]


def test_an_ensemble_that_does_not_beat_its_best_member_ships_that_member(exported):
    """--members trials: the two trials as the search left them; shipped only if their mean PDF
    beats the better of them on the validation split, else that member alone."""
    info = json.loads((exported["trials"] / BUNDLE_FILE).read_text())
    ranked = exported["summary"]["ranked"]
    sel = info["selection"]
    values = [m["val_sigma_mad"] for m in sel["members"]]
    # The members were scored in the search's order.
    assert values == pytest.approx([r["best"]["val_sigma_mad"] for r in ranked[:2]], rel=1e-4)
    if sel["ensemble"]["val_sigma_mad"] < min(values):
        assert sel["shipped"] == "ensemble"
        assert [m["trial"] for m in info["members"]] == [r["trial"] for r in ranked[:2]]
    else:
        assert sel["shipped"] == "best member"
        assert [m["trial"] for m in info["members"]] == [ranked[sel["best_member"]]["trial"]]
        assert info["ensemble"] == "single model"
        assert sorted(p.name for p in (exported["trials"] / "members").iterdir()) == [f"m{sel['best_member']}"]
        assert f"shipping member m{sel['best_member']} alone" in exported["trials_output"]
    assert info["calibration"]["n"] == sel["n"]


def test_decide_ships_the_ensemble_only_when_it_beats_every_member():
    from zray.ensemble import decide

    members = [{"val_sigma_mad": 0.020}, {"val_sigma_mad": 0.018}, {"val_sigma_mad": 0.025}]
    won = decide({"val_sigma_mad": 0.017}, members, "val_sigma_mad", "min")
    assert won["shipped"] == "ensemble" and won["best_member"] == 1
    assert won["ratio"] == pytest.approx(0.017 / 0.018)
    lost = decide({"val_sigma_mad": 0.018}, members, "val_sigma_mad", "min")
    assert lost["shipped"] == "best member" and "shipping member m1 alone" in lost["reason"]
    kept = decide({"val_sigma_mad": 0.019}, members, "val_sigma_mad", "min", keep_ensemble=True)
    assert kept["shipped"] == "ensemble" and "--keep-ensemble" in kept["reason"]


def test_ratio_interval_is_the_spread_of_the_ensembles_ratio_over_resampled_galaxies():
    from zray.ensemble import decide, ratio_interval

    rng = np.random.default_rng(1)
    member = {"dz": rng.normal(0.0, 0.02, 3000), "crps": rng.uniform(0.01, 0.02, 3000)}
    # The same galaxies drawn for both: an ensemble exactly half as wrong is 0.5x in every resample.
    assert ratio_interval({"dz": member["dz"] / 2}, member, "val_sigma_mad") == pytest.approx((0.5, 0.5))
    assert ratio_interval(member, member, "val_crps") == pytest.approx((1.0, 1.0))
    # Networks as good as each other, errors partly shared: the ratio is 1 within a few percent.
    shared = rng.normal(0.0, 0.02, 3000)
    twin = {"dz": shared + rng.normal(0.0, 0.005, 3000)}
    lo, hi = ratio_interval(twin, {"dz": shared + rng.normal(0.0, 0.005, 3000)}, "val_sigma_mad")
    assert lo < 1.0 < hi and 0.01 < hi - lo < 0.2
    # 10% less scatter on 3,000 galaxies is beyond that noise.
    lo, hi = ratio_interval({"dz": shared * 0.9 + rng.normal(0.0, 0.001, 3000)}, twin, "val_sigma_mad")
    assert hi < 1.0
    # No outliers among the member's galaxies: a ratio to 0 means nothing.
    assert ratio_interval({"dz": member["dz"]}, {"dz": np.zeros(3000)}, "val_outlier_fraction") is None
    said = decide({"val_sigma_mad": 0.0201}, [{"val_sigma_mad": 0.0200}], "val_sigma_mad", "min",
                  interval=(0.98, 1.03), n=3258)
    assert "(1.005x; 0.980x-1.030x in 95% of resamples of the 3,258 validation galaxies: within the noise)" \
        in said["reason"] and said["ratio_interval"] == [0.98, 1.03]
    said = decide({"val_sigma_mad": 0.018}, [{"val_sigma_mad": 0.020}], "val_sigma_mad", "min",
                  interval=(0.85, 0.95), n=3258)
    assert said["reason"].endswith("galaxies: beyond the noise)") and said["shipped"] == "ensemble"


def test_shared_errors_say_what_averaging_the_members_can_gain():
    from zray.ensemble import shared_errors
    from zray.metrics import sigma_mad

    rng = np.random.default_rng(2)
    # Three members erring by the same noise (sigma 0.008) plus their own (0.004): correlation
    # 0.8, and their mean's scatter sqrt(0.8 + 0.2 / 3) = 0.931x a member's.
    common = rng.normal(0.0, 0.008, 20000)
    dz = [common + rng.normal(0.0, 0.004, 20000) for _ in range(3)]
    got = shared_errors(dz)
    assert got["correlation"] == pytest.approx(0.8, abs=0.01) and got["rows"] == 20000
    assert got["expected_ratio"] == pytest.approx(np.sqrt(0.8 + 0.2 / 3), abs=0.005)
    assert got["expected_ratio"] == pytest.approx(sigma_mad(np.mean(dz, axis=0)) / sigma_mad(dz[0]), abs=0.02)
    # A few catastrophic outliers do not move it: they are left out.
    wild = [d.copy() for d in dz]
    wild[0][:50] = 0.5
    assert shared_errors(wild)["correlation"] == pytest.approx(got["correlation"], abs=0.005)
    assert shared_errors(wild)["rows"] == 20000 - 50
    # Independent members: the full 1/sqrt(K); identical ones: nothing to gain.
    alone = shared_errors([rng.normal(0.0, 0.01, 20000) for _ in range(4)])
    assert alone["expected_ratio"] == pytest.approx(0.5, abs=0.02)
    assert shared_errors([dz[0], dz[0]])["expected_ratio"] == pytest.approx(1.0)
    # Nothing to say for one member, or errors that do not vary.
    assert shared_errors(dz[:1]) is None
    assert shared_errors([np.zeros(100), dz[0][:100]]) is None


def test_a_bundle_inside_the_ensembles_training_folder_is_refused(exported):
    from zray.ensemble import ENSEMBLE_DIR

    out = exported["experiment"] / ENSEMBLE_DIR / "bundle"
    result = _run("export", exported["experiment"], "--top-k", 2, "--out", out)
    assert result.exit_code == 1, result.output
    assert result.output.strip() == (f"zray: error: {out}: is, holds or lies inside {exported['experiment']}, an "
                                     "input of this command; expected an output apart from the command's inputs")
    assert not out.exists()


def test_a_second_seed_export_reuses_the_members_already_trained(exported, tmp_path):
    result = _run("export", exported["experiment"], "--top-k", 2, "--keep-ensemble", "--no-calibrate",
                  "--out", tmp_path / "again")
    assert result.exit_code == 0, result.output
    assert "already trained" in result.output
    first = json.loads((exported["ens"] / BUNDLE_FILE).read_text())["members"]
    again = json.loads((tmp_path / "again" / BUNDLE_FILE).read_text())["members"]
    assert [m["checkpoint"] for m in again] == [m["checkpoint"] for m in first]


@pytest.mark.slow
def test_ctrl_c_while_a_member_trains_writes_no_bundle(exported, ray_session, tmp_path):
    """Ctrl-C (SIGINT) while `zray export --top-k 3` trains its third member: Tune returns the
    member half-trained, as if it were done; export stops with status 130 and writes no bundle
    (it went on to score and ship that member). On a copy of the search: the members it trains
    land in the search's folder."""
    import signal
    import time

    from zray.ensemble import ENSEMBLE_DIR

    copy = Path(shutil.copytree(exported["experiment"], tmp_path / "search"))
    best = exported["summary"]["ranked"][0]["trial"]
    third = copy / ENSEMBLE_DIR / f"{best}-seed2"
    proc = subprocess.Popen(
        [sys.executable, "-m", "zray", "export", str(copy), "--top-k", "3", "--out", str(tmp_path / "ens3")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "RAY_ADDRESS": ray_session.get_runtime_context().gcs_address},
    )
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and not (third / "tune").is_dir():
        time.sleep(0.1)
    assert proc.poll() is None, "export ended before its third member started training"
    time.sleep(1.0)  # Tune's SIGINT handler is set once its fit() began
    proc.send_signal(signal.SIGINT)
    output, _ = proc.communicate(timeout=180)
    assert proc.returncode == 130, output[-3000:]
    assert f"ensemble member 3/3: {best}-seed2 interrupted after epoch" in output, output[-3000:]
    assert "the same zray export continues it from its last checkpoint" in output
    assert not (tmp_path / "ens3").exists() and not list(tmp_path.glob(".ens3*"))


def test_export_from_a_training_run_folder(exported, tmp_path):
    trial = exported["summary"]["ranked"][0]
    run_dir = Path(trial["best_checkpoint"]).parent
    result = _run("export", run_dir, "--out", tmp_path / "b")
    assert result.exit_code == 0, result.output
    info = json.loads((tmp_path / "b" / BUNDLE_FILE).read_text())
    assert info["source"]["kind"] == "training run"
    assert info["members"][0]["checkpoint"] == str(Path(trial["best_checkpoint"]).resolve())


@pytest.mark.parametrize(
    "args, message",
    [
        (["--top-k", "3", "--members", "trials"], r"2 trial\(s\) have a scored checkpoint but --top-k is 3"),
        (["--top-k", "0"], r"--top-k must be a positive integer, but got 0"),
    ],
)
def test_export_refuses_bad_requests(exported, tmp_path, args, message):
    result = _run("export", exported["experiment"], *args, "--out", tmp_path / "b")
    assert result.exit_code == 1
    assert re.search(message, result.output), result.output
    assert not (tmp_path / "b").exists() and not list(tmp_path.iterdir())


def test_export_refuses_to_overwrite(exported, tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "notes.txt").write_text("mine")
    result = _run("export", exported["experiment"], "--out", tmp_path / "b")
    assert result.exit_code == 1 and "already exists and was not written by zray; expected a new or empty folder" in result.output
    assert (tmp_path / "b" / "notes.txt").read_text() == "mine"
    result = _run("export", tmp_path, "--out", tmp_path.parent / f"{tmp_path.name}-c")
    assert result.exit_code == 1 and "holds no zray checkpoint" in result.output


# --- predict and evaluate agree ---------------------------------------------------------


def test_predict_output_columns_and_summary(exported, sim_data):
    table = pq.read_table(exported["tmp"] / "pz.parquet")
    manifest = read_manifest(sim_data)
    assert table.num_rows == manifest.total_rows
    assert table.column_names == ["id", "z_mean", "z_median", "z_mode", "z_std", "z_lo68", "z_hi68", "z_lo95", "z_hi95",
                                  "odds", "z_draw", "z_spec", "pdf"]
    assert table.schema.field("pdf").type == pa.list_(pa.float32(), 180)
    assert sorted(table.column("id").to_pylist()) == list(range(300))
    pdf = np.stack(table.column("pdf").to_numpy(zero_copy_only=False))
    assert np.allclose(pdf.sum(axis=1), 1.0, atol=1e-4)
    lo95, lo, med, hi, hi95 = (table.column(c).to_numpy() for c in ("z_lo95", "z_lo68", "z_median", "z_hi68",
                                                                     "z_hi95"))
    assert np.all(lo95 <= lo) and np.all(lo <= med) and np.all(med <= hi) and np.all(hi <= hi95)
    odds, draw = table.column("odds").to_numpy(), table.column("z_draw").to_numpy()
    assert np.all((odds >= 0) & (odds <= 1 + 1e-9)) and np.all((draw >= 0) & (draw < 0.4))
    meta = json.loads(table.schema.metadata[b"zray"])
    assert meta["bins"]["n_bins"] == 180
    assert f"predicted {manifest.total_rows} galaxies" in exported["predict_output"]
    assert "galaxies/s" in exported["predict_output"] and "pz.parquet" in exported["predict_output"]
    assert not [p for p in exported["tmp"].iterdir() if p.name.startswith(".")]


def test_predict_matches_evaluate_and_the_python_api(exported, sim_data):
    pz = pq.read_table(exported["tmp"] / "pz.parquet").to_pydict()
    ev = pq.read_table(exported["report"] / "predictions.parquet").to_pydict()
    by_id = dict(zip(pz["id"], pz["z_median"]))
    test = load_arrays(sim_data, "test")
    assert sorted(ev["id"]) == sorted(test["id"].tolist())
    # The same galaxies, the same medians: to float32 precision, not to the bit, since TensorFlow's
    # CPU kernels round a galaxy's PDF differently with the size of the batch it is in (predict ran
    # with --batch-size 64; once 1.5e-9 apart, against bins 0.0022 wide).
    np.testing.assert_allclose(ev["z_median"], [by_id[i] for i in ev["id"]], rtol=0, atol=1e-6)
    # The Python API on raw arrays gives the same PDFs and medians.
    from zray.metrics import point_estimates

    bundle = zray.load(exported["best"])
    pdf = bundle.predict(test["image"], test["ebv"])
    med = point_estimates(pdf, bundle.bins)["median"]
    expected = np.array([by_id[i] for i in test["id"].tolist()])
    np.testing.assert_allclose(med, expected, atol=1e-5)
    assert bundle.bins.n_bins == 180 and bundle.info.image_size == 32


def test_predict_no_pdf_one_split_says_when_the_ray_has_no_cpus_free(ray_session, exported, sim_data, tmp_path):
    """One split, no PDFs, on a Ray whose CPUs a search holds: `zray predict` once waited for
    them without a word; it now says so, and predicts once they come free (here: a group let
    go as soon as predict has said so, or after a minute if it never does)."""
    import logging
    import threading

    from ray.util.placement_group import placement_group, remove_placement_group

    from zray.console import LOG

    group = placement_group([{"CPU": ray_session.cluster_resources()["CPU"] - 0.5}])
    ray_session.get(group.ready(), timeout=60)
    said = threading.Event()

    class ReleaseWhenSaid(logging.Handler):
        def emit(self, record):
            if "CPUs free" in record.getMessage():
                said.set()

    def release():
        said.wait(timeout=60)
        remove_placement_group(group)

    handler = ReleaseWhenSaid()
    LOG.addHandler(handler)
    releaser = threading.Thread(target=release)
    releaser.start()
    try:
        result = _run("predict", exported["best"], sim_data, "--split", "val", "--no-pdf",
                      "--out", tmp_path / "v.parquet")
    finally:
        said.set()
        releaser.join()
        LOG.removeHandler(handler)
    assert result.exit_code == 0, result.output
    assert "warning: the Ray this runs on has 0.5 of its" in result.output, result.output
    assert "predicting starts once" in result.output, result.output
    table = pq.read_table(tmp_path / "v.parquet")
    assert "pdf" not in table.column_names
    got = table.to_pydict()
    one = pq.read_table(exported["tmp"] / "pz.parquet").to_pydict()
    by_id = dict(zip(one["id"], one["z_median"]))
    assert len(got["id"]) == read_manifest(sim_data).rows["val"]
    np.testing.assert_allclose(got["z_median"], [by_id[i] for i in got["id"]], atol=1e-6)


# zray predict as a user runs it with no Ray of their own: it starts one with the machine's
# CPUs, predicts with a worker per CPU, then is asked for more workers than CPUs
# (argv: bundle, shards, out folder, workers).
_PREDICT_A_WORKER_PER_CPU = """
import sys
from zray.cli import main
bundle, data, out, workers = sys.argv[1:]
main(["predict", bundle, data, "--split", "val", "--no-pdf", "--workers", workers, "--out", out + "/v.parquet"],
     standalone_mode=False)
try:
    main(["predict", bundle, data, "--workers", "1000", "--out", out + "/many.parquet"], standalone_mode=False)
except SystemExit as exc:
    print("exit", exc.code)
"""


@pytest.mark.timeout(300)
def test_predict_with_a_worker_per_cpu_finishes_and_agrees(exported, sim_data, tmp_path):
    """As many actors as the Ray has CPUs (--workers 2 on a two-core laptop) once left the shards'
    read tasks no CPU and never finished (zray.ray_workarounds.actor_pool_cpus). Run in a process
    of its own, with the Ray it starts, as a user would: the test session's Ray is left alone."""
    from zray.ray_workarounds import STATE_API_ENV

    workers = os.cpu_count() or 2
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", STATE_API_ENV)}
    proc = subprocess.run([sys.executable, "-c", _PREDICT_A_WORKER_PER_CPU, str(exported["best"]), str(sim_data),
                           str(tmp_path), str(workers)], capture_output=True, text=True, timeout=240, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = pq.read_table(tmp_path / "v.parquet").to_pydict()
    one = pq.read_table(exported["tmp"] / "pz.parquet").to_pydict()
    by_id = dict(zip(one["id"], one["z_median"]))
    assert len(got["id"]) == read_manifest(sim_data).rows["val"]
    np.testing.assert_allclose(got["z_median"], [by_id[i] for i in got["id"]], atol=1e-6)
    # More actors than CPUs (each a copy of the model) is refused in one sentence, nothing written.
    assert "exit 1" in proc.stdout, proc.stdout
    assert f"--workers 1000: the Ray this runs on has {workers} CPUs" in proc.stderr, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert not (tmp_path / "many.parquet").exists()


def test_ensemble_pdf_is_the_mean_of_its_members(exported, sim_data):
    from zray.models import load_model

    test = load_arrays(sim_data, "test")
    ensemble = zray.load(exported["ens"]).predict(test["image"], test["ebv"])
    x = preprocess_batch({"image": test["image"]})["image"]
    ebv = test["ebv"].reshape(-1, 1)
    members = [load_model(exported["ens"] / "members" / m)[0].predict([x, ebv], verbose=0) for m in ("m0", "m1")]
    assert not np.allclose(members[0], members[1], atol=1e-4), "members should differ"
    temperature = json.loads((exported["ens"] / BUNDLE_FILE).read_text())["calibration"]["temperature"]
    np.testing.assert_allclose(ensemble, temper((members[0] + members[1]) / 2, temperature), atol=1e-6)


def test_calibration_temperature_round_trips_through_the_bundle(exported, sim_data, tmp_path):
    result = _run("export", exported["experiment"], "--top-k", 2, "--keep-ensemble", "--out", tmp_path / "raw",
                  "--no-calibrate")
    assert result.exit_code == 0, result.output
    raw_info = json.loads((tmp_path / "raw" / BUNDLE_FILE).read_text())
    assert "calibration" not in raw_info
    info = json.loads((exported["ens"] / BUNDLE_FILE).read_text())
    cal = info["calibration"]
    val = load_arrays(sim_data, "val")
    assert cal["n"] == len(val["id"]) and cal["fitted_on"].startswith("val split of")
    assert cal["temperature"] != 1.0 and cal["nll_after"] <= cal["nll_before"]
    # What the bundle predicts is the uncalibrated ensemble, tempered by the recorded temperature.
    test = load_arrays(sim_data, "test")
    raw = zray.load(tmp_path / "raw").predict(test["image"], test["ebv"])
    calibrated = zray.load(exported["ens"]).predict(test["image"], test["ebv"])
    np.testing.assert_allclose(calibrated, temper(raw, cal["temperature"]), atol=1e-6)
    # Refitting on the same validation galaxies gives the recorded value.
    from zray.calibration import fit_temperature
    from zray.metrics import pit, pit_ks

    raw_val = zray.load(tmp_path / "raw").predict(val["image"], val["ebv"]).astype(np.float64)
    bins = zray.load(exported["ens"]).bins
    assert fit_temperature(raw_val, bins, val["z_spec"]) == pytest.approx(cal["temperature"], rel=1e-3)
    assert pit_ks(pit(temper(raw_val, cal["temperature"]), bins, val["z_spec"])) == pytest.approx(cal["pit_ks_after"])


def test_predict_from_catalogue_and_fits(exported, sim_data, tmp_path):
    from astropy.io import fits

    test = load_arrays(sim_data, "test")
    ids = test["id"][:4]
    images = tmp_path / "img"
    images.mkdir()
    for i, image in zip(ids, test["image"][:4]):
        hdu = fits.PrimaryHDU(image)
        for k, b in enumerate("ugriz"):
            hdu.header[f"BAND{k + 1}"] = b
        hdu.writeto(images / f"g{i}.fits")
    # New galaxies: no z_spec in the catalogue.
    pq.write_table(pa.table({"id": ids, "ebv": test["ebv"][:4], "file": [f"g{i}.fits" for i in ids]}),
                   tmp_path / "cat.parquet")
    result = _run("predict", exported["best"], tmp_path / "cat.parquet", "--images", images, "--out", tmp_path / "c.parquet")
    assert result.exit_code == 0, result.output
    got = pq.read_table(tmp_path / "c.parquet").to_pydict()
    assert "z_spec" not in got
    pz = pq.read_table(exported["tmp"] / "pz.parquet").to_pydict()
    by_id = dict(zip(pz["id"], pz["z_median"]))
    np.testing.assert_allclose(got["z_median"], [by_id[i] for i in got["id"]], atol=1e-6)
    assert sorted(got["id"]) == sorted(ids.tolist())
    # Known redshifts, whatever they are (beyond the bins, SDSS's -1 for "none", missing), are
    # never needed and never checked: they come back as given, a missing one as null. This
    # catalogue is a FITS table as astropy writes one, its column names in capitals.
    from astropy.table import MaskedColumn, Table

    z_cat = [0.9, -1.0, None, 0.1]
    Table({"ID": ids, "EBV": test["ebv"][:4], "FILE": [f"g{i}.fits" for i in ids],
           "Z_SPEC": MaskedColumn([z or 0.0 for z in z_cat], mask=[z is None for z in z_cat])}
          ).write(tmp_path / "catz.fits")
    result = _run("predict", exported["best"], tmp_path / "catz.fits", "--images", images,
                  "--out", tmp_path / "cz.parquet")
    assert result.exit_code == 0, result.output
    withz = pq.read_table(tmp_path / "cz.parquet").to_pydict()
    assert dict(zip(withz["id"], withz["z_spec"])) == dict(zip(ids.tolist(), z_cat))
    np.testing.assert_allclose(withz["z_median"], [by_id[i] for i in withz["id"]], atol=1e-6)
    # The same galaxies in a VOTable under a survey's own names, read with --column.
    Table({"objID": ids, "E_BV": test["ebv"][:4], "path": [f"g{i}.fits" for i in ids],
           "zsp": MaskedColumn([z or 0.0 for z in z_cat], mask=[z is None for z in z_cat])}
          ).write(tmp_path / "cat.vot", format="votable")
    result = _run("predict", exported["best"], tmp_path / "cat.vot", "--images", images, "--out", tmp_path / "v.parquet",
                  "--column", "id=objID", "--column", "ebv=E_BV", "--column", "file=path", "--column", "z_spec=zsp")
    assert result.exit_code == 0, result.output
    assert pq.read_table(tmp_path / "v.parquet").to_pydict() == withz
    # Without --column z_spec, the predictions carry no redshift, and zray says which column may be one.
    result = _run("predict", exported["best"], tmp_path / "cat.vot", "--images", images, "--out", tmp_path / "n.parquet",
                  "--column", "id=objID", "--column", "ebv=E_BV", "--column", "file=path", "--no-pdf")
    assert result.exit_code == 0, result.output
    assert "cat.vot: no z_spec column, so the predictions carry no known redshift; --column z_spec=zsp if 'zsp' is " \
           "the spectroscopic redshift" in result.output, result.output
    assert "z_spec" not in pq.read_table(tmp_path / "n.parquet").column_names
    # Two more galaxies whose cutouts cannot be used: one never downloaded, one on a frame's edge.
    # The error names the user's catalogue (never a temporary copy); --skip-bad predicts the rest
    # and lists the two.
    edge = test["image"][4].copy()
    edge[:, :, :2] = np.nan
    hdu = fits.PrimaryHDU(edge)
    for k, b in enumerate("ugriz"):
        hdu.header[f"BAND{k + 1}"] = b
    hdu.writeto(images / "edge.fits")
    more = pa.table({"id": [*ids.tolist(), 9001, 9002], "ebv": [*test["ebv"][:4], 0.0, 0.0],
                     "file": [*(f"g{i}.fits" for i in ids), "absent.fits", "edge.fits"]})
    pq.write_table(more, tmp_path / "more.parquet")
    out = tmp_path / "new" / "m.parquet"  # in a folder that does not exist yet
    args = ("predict", exported["best"], tmp_path / "more.parquet", "--images", images, "--out", out)
    result = _run(*args)
    assert result.exit_code == 1
    assert result.output.strip().splitlines()[-1] == (
        f"zray: error: {tmp_path / 'more.parquet'}: row 5 (id 9001): FITS file {images / 'absent.fits'} not found; "
        "--skip-bad leaves out the galaxies whose cutouts cannot be used and lists them in "
        f"{tmp_path / 'new' / 'm.parquet.skipped.csv'}")
    assert not (tmp_path / "new").exists()
    result = _run(*args, "--skip-bad")
    assert result.exit_code == 0, result.output
    assert "predicted 4 galaxies" in result.output and "2 left out, listed in" in result.output
    skipped = pcsv.read_csv(tmp_path / "new" / "m.parquet.skipped.csv").to_pydict()
    assert skipped["id"] == [9001, 9002] and skipped["reason"] == ["file missing", "NaN or infinite pixels"]
    got = pq.read_table(out).to_pydict()
    np.testing.assert_allclose(got["z_median"], [by_id[i] for i in got["id"]], atol=1e-6)
    assert sorted(got["id"]) == sorted(ids.tolist())
    # Not one usable cutout: one sentence, and neither predictions nor a list.
    pq.write_table(more.slice(4), tmp_path / "bad.parquet")
    result = _run("predict", exported["best"], tmp_path / "bad.parquet", "--images", images, "--skip-bad",
                  "--out", tmp_path / "none" / "b.parquet")
    assert result.exit_code == 1 and not (tmp_path / "none").exists()
    assert result.output.strip().splitlines()[-1] == (
        f"zray: error: {tmp_path / 'bad.parquet'}: none of its 2 galaxies has a cutout that can be used (1 file "
        f"missing, 1 NaN or infinite pixels; the first: row 1 (id 9001): FITS file {images / 'absent.fits'} not found)")
    # The same file predicted again, from the four good galaxies alone: their list goes with it.
    result = _run("predict", exported["best"], tmp_path / "cat.parquet", "--images", images, "--out", out,
                  "--overwrite")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "new").iterdir()) == ["m.parquet"]


def test_sdss_spec_obj_ids_above_the_signed_range_through_prepare_predict_and_evaluate(exported, sim_data, tmp_path):
    """A FITS catalogue of SDSS specObjIDs (plates from 8192 on put them above 2**63 - 1; astropy
    writes them unsigned, TZERO = 2**63), sorted by id: prepared, predicted from its shards and
    from the catalogue itself (its z_spec joined by id), in qp too, and scored whole; every output
    names each galaxy by its own id, to the last bit, and its predictions are those of its pixels."""
    import qp
    from astropy.io import fits
    from astropy.table import Table

    test = load_arrays(sim_data, "test")
    n = len(SDSS_IDS)
    images = tmp_path / "img"
    images.mkdir()
    for k, image in enumerate(test["image"][:n]):
        hdu = fits.PrimaryHDU(image)
        for b, band in enumerate("ugriz"):
            hdu.header[f"BAND{b + 1}"] = band
        hdu.writeto(images / f"g{k}.fits")
    z_cat = test["z_spec"][:n].astype(np.float64)
    Table({"ID": np.array(SDSS_IDS, dtype=np.uint64), "Z_SPEC": z_cat, "EBV": test["ebv"][:n],
           "FILE": [f"g{k}.fits" for k in range(n)]}).write(tmp_path / "cat.fits")
    pz = pq.read_table(exported["tmp"] / "pz.parquet").to_pydict()
    by_pixels = dict(zip(pz["id"], pz["z_median"]))
    want = {i: by_pixels[int(own)] for i, own in zip(SDSS_IDS, test["id"][:n])}  # the same cutouts' predictions
    z_of = dict(zip(SDSS_IDS, z_cat))  # the last two ids are 1,024 apart: a join by floats mixes them up

    result = _run("prepare", tmp_path / "cat.fits", "--images", images, "--out", tmp_path / "data",
                  "--size", test["image"].shape[-1])
    assert result.exit_code == 0, result.output
    for source, more in ((tmp_path / "data", ()), (tmp_path / "cat.fits", ("--images", images))):
        out = tmp_path / f"p-{source.stem}.parquet"
        result = _run("predict", exported["best"], source, *more, "--out", out)
        assert result.exit_code == 0, result.output
        got = pq.read_table(out)
        assert got.schema.field("id").type == pa.uint64()
        got = got.to_pydict()
        assert sorted(got["id"]) == SDSS_IDS
        np.testing.assert_allclose(got["z_median"], [want[i] for i in got["id"]], atol=1e-6)
        np.testing.assert_allclose(got["z_spec"], [z_of[i] for i in got["id"]], rtol=1e-6)
    result = _run("predict", exported["best"], tmp_path / "data", "--format", "qp", "--out", tmp_path / "p.hdf5")
    assert result.exit_code == 0, result.output
    assert sorted(int(i) for i in np.ravel(qp.read(str(tmp_path / "p.hdf5")).ancil["id"])) == SDSS_IDS
    result = _run("evaluate", exported["best"], tmp_path / "data", "--split", "all", "--out", tmp_path / "report")
    assert result.exit_code == 0, result.output
    scored = pq.read_table(tmp_path / "report" / "predictions.parquet").to_pydict()
    assert sorted(scored["id"]) == SDSS_IDS
    np.testing.assert_allclose(scored["z_spec"], [z_of[i] for i in scored["id"]], rtol=1e-6)
    np.testing.assert_allclose(scored["z_median"], [want[i] for i in scored["id"]], atol=1e-6)


def test_predict_takes_splits_of_a_shard_folder_only_and_each_once(exported, sim_data, tmp_path):
    """--split on a catalogue (zray's split hash would pick a share of its galaxies) is one
    sentence, and no file. A split named twice is predicted once."""
    pq.write_table(pa.table({"id": [1, 2], "ebv": [0.0, 0.0], "file": ["a.fits", "b.fits"]}), tmp_path / "cat.parquet")
    result = _run("predict", exported["best"], tmp_path / "cat.parquet", "--images", tmp_path, "--split", "test",
                  "--out", tmp_path / "c.parquet")
    assert result.exit_code == 1
    assert result.output.strip() == (
        f"zray: error: {tmp_path / 'cat.parquet'}: is a catalogue file, and --split test chooses among a shard "
        "folder's splits; expected no --split (every galaxy of a catalogue is predicted)")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cat.parquet"]
    result = _run("predict", exported["best"], sim_data, "--split", "test", "--split", "test",
                  "--out", tmp_path / "twice.parquet")
    assert result.exit_code == 0, result.output
    ids = pq.read_table(tmp_path / "twice.parquet").column("id").to_pylist()
    assert sorted(ids) == sorted(load_arrays(sim_data, "test")["id"].tolist())


def test_evaluate_scores_galaxies_beyond_the_bins_apart(exported, sim_data, tmp_path):
    """Data reaching past the bundle's bins: the figures are of the galaxies it can place;
    the others are counted and scored on their own, and named in a note."""
    from zray.bins import RedshiftBins
    from zray.data import write_dataset

    val = load_arrays(sim_data, "test")
    z = val["z_spec"].copy()
    z[:10] = np.linspace(0.45, 0.55, 10)  # beyond the bundle's 0.4
    write_dataset(tmp_path / "deep", val["id"], val["image"], z, val["ebv"], bins=RedshiftBins(0.0, 0.6, 60),
                  fractions=(0.0, 0.0, 1.0))
    result = _run("evaluate", exported["best"], tmp_path / "deep", "--out", tmp_path / "report")
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "report" / "metrics.json").read_text())
    beyond = metrics["beyond_bins"]
    assert metrics["overall"]["n"] + beyond["n"] == len(z) and beyond["n"] >= 10
    assert beyond["z_spec_max"] == pytest.approx(0.55, abs=1e-6)
    assert f"note: {beyond['n']} of {len(z)} galaxies have z_spec outside the bundle's bins" in result.output
    assert pq.read_metadata(tmp_path / "report" / "predictions.parquet").num_rows == len(z)


def test_evaluate_scores_a_held_out_dataset_whole_against_baselines_fitted_on_the_training_data(
        exported, sim_data, tmp_path):
    """An astronomer's own held-out sample, prepared into shards (which `zray prepare` splits too):
    the default scores its test split and says how to score it whole; --split all scores every
    galaxy, with the reference predictors fitted on the bundle's training data (not on a split of
    the scored galaxies). On the bundle's own training data --split all is refused."""
    from zray.baselines import point_metrics
    from zray.data.simulate import simulate

    held = tmp_path / "held-out"
    simulate(held, 90, size=32, seed=3, workers=1, progress=False)
    rows = read_manifest(held).rows
    result = _run("evaluate", exported["best"], held, "--out", tmp_path / "r-test")
    assert result.exit_code == 0, result.output
    assert (f"note: held-out is not the data this bundle was trained on: --split all scores every one of its 90 "
            f"galaxies (the test split holds {rows['test']})") in result.output

    result = _run("evaluate", exported["best"], held, "--split", "all", "--out", tmp_path / "r-all")
    assert result.exit_code == 0, result.output
    assert result.output.count("90 galaxies (all splits): sigma_MAD") == 1, result.output
    metrics = json.loads((tmp_path / "r-all" / "metrics.json").read_text())
    assert metrics["split"] == "all" and metrics["overall"]["n"] == 90
    assert metrics["baselines_fitted_on"] == str(sim_data.resolve()) and metrics["trained_on"] == 0
    # Both reference predictors as fitted on the training data's train split, computed here from
    # the public pieces: its median redshift, and the kNN on aperture colours.
    from zray.baselines import knn_predict
    from zray.photometry import aperture_magnitudes, colours

    def colours_of(arrays, manifest):
        return colours(aperture_magnitudes(arrays["image"], arrays["ebv"], manifest.pixel_scale, manifest.bands))

    train = load_arrays(sim_data, "train")
    mine = [load_arrays(held, s) for s in ("train", "val", "test") if rows[s]]
    z = np.concatenate([a["z_spec"] for a in mine])
    x = np.concatenate([colours_of(a, read_manifest(held)) for a in mine])
    assert metrics["baselines"]["constant"] == pytest.approx(point_metrics(np.full(90, np.median(train["z_spec"])), z))
    knn = knn_predict(colours_of(train, read_manifest(sim_data)), train["z_spec"].astype(np.float64), x)
    assert metrics["baselines"]["knn"] == pytest.approx(point_metrics(knn, z))
    assert f"train split of {sim_data}" in (tmp_path / "r-all" / "index.html").read_text()
    assert pq.read_metadata(tmp_path / "r-all" / "predictions.parquet").num_rows == 90

    # A sample joined with the training catalogue (the same galaxies, written again, so another
    # content hash): the galaxies trained or validated on are found by id, z_spec and photometry
    # and left out, and said so; the training data's test galaxies and the new ones are scored.
    from zray.data import write_dataset

    parts = [(load_arrays(d, s), offset) for d, offset in ((sim_data, 0), (held, 10_000))  # new ids for the new
             for s in ("train", "val", "test") if read_manifest(d).rows[s]]
    joined = {k: np.concatenate([p[k] + offset if k == "id" else p[k] for p, offset in parts])
              for k in ("id", "image", "z_spec", "ebv")}
    write_dataset(tmp_path / "joined", joined["id"], joined["image"], joined["z_spec"], joined["ebv"])
    result = _run("evaluate", exported["best"], tmp_path / "joined", "--split", "all", "--out", tmp_path / "r-joined")
    assert result.exit_code == 0, result.output
    own = read_manifest(sim_data).rows
    seen = own["train"] + own["val"]
    assert (f"note: {seen} of the {300 + 90} galaxies are ones the bundle trained or validated on (the same id, "
            f"z_spec and photometry as in {sim_data}); the figures leave them out") in result.output
    metrics = json.loads((tmp_path / "r-joined" / "metrics.json").read_text())
    assert metrics["trained_on"] == seen and metrics["overall"]["n"] == own["test"] + 90

    # Nothing but galaxies it trained or validated on: nothing held out to score.
    seen_only = [load_arrays(sim_data, s) for s in ("train", "val")]
    write_dataset(tmp_path / "seen", *(np.concatenate([a[k] for a in seen_only]) for k in ("id", "image", "z_spec", "ebv")))
    result = _run("evaluate", exported["best"], tmp_path / "seen", "--split", "all", "--out", tmp_path / "r-seen")
    assert result.exit_code == 1 and not (tmp_path / "r-seen").exists()
    assert result.output.strip().splitlines()[-1] == (
        f"zray: error: {tmp_path / 'seen'}: every one of its galaxies is one the bundle trained or validated on (the "
        f"same id, z_spec and photometry as in {sim_data}); expected a dataset held out from training")

    # A bundle whose training data is gone: scored, but said plainly what could not be done.
    moved = tmp_path / "moved"
    shutil.copytree(exported["best"], moved)
    record = json.loads((moved / "bundle.json").read_text())
    record["data"]["path"] = str(tmp_path / "gone")
    (moved / "bundle.json").write_text(json.dumps(record))
    result = _run("evaluate", moved, held, "--split", "all", "--out", tmp_path / "r-moved")
    assert result.exit_code == 0, result.output
    assert (f"note: reference predictors not shown: {tmp_path / 'gone'}, the bundle's training data, is not there "
            "any more (bundle.json data.path); put it back to show them; nor could the scored galaxies be checked "
            "against the training galaxies, so make sure none of them was trained on") in result.output
    assert json.loads((tmp_path / "r-moved" / "metrics.json").read_text())["baselines"] == {}

    # The training data is read too (for the reference predictors): the report may not go inside it.
    result = _run("evaluate", exported["best"], held, "--split", "all", "--out", sim_data / "report")
    assert result.exit_code == 1 and f"{sim_data / 'report'}: is, holds or lies inside {sim_data}" in result.output
    assert not (sim_data / "report").exists()

    result = _run("evaluate", exported["best"], sim_data, "--split", "all", "--out", tmp_path / "r-own")
    assert result.exit_code == 1
    assert result.output.strip() == (
        f"zray: error: {sim_data}: is the dataset this bundle was trained on, so --split all would score the "
        "galaxies it learned from; expected --split test here, or --split all on a dataset held out from training")
    assert not (tmp_path / "r-own").exists()


@pytest.mark.parametrize("n", [1, 2])
def test_evaluate_on_a_split_of_one_or_two_galaxies_says_what_it_cannot_compute(exported, sim_data, tmp_path, n):
    test = load_arrays(sim_data, "test")
    from zray.data import write_dataset

    write_dataset(tmp_path / "few", test["id"][:n], test["image"][:n], test["z_spec"][:n], test["ebv"][:n],
                  fractions=(0.0, 0.0, 1.0))
    result = _run("evaluate", exported["best"], tmp_path / "few", "--out", tmp_path / "report")
    assert result.exit_code == 0, result.output
    assert f"note: qp's metrics (PIT KS, CvM and AD, CDE loss, Brier) not computed: {n} galaxies" in result.output
    metrics = json.loads((tmp_path / "report" / "metrics.json").read_text())
    assert metrics["overall"]["n"] == n and metrics["qp"] is None


def test_evaluate_places_the_bundle_against_the_baselines_in_words(exported):
    """Beside the ratios, one verdict: here a 1-epoch network on 300 galaxies, which the colour
    kNN beats (or ties) and which beats the constant, clearly or not, or does not: each is said."""
    lines = [line for line in exported["evaluate_output"].splitlines() if line.startswith("  sigma_MAD ")]
    assert len(lines) == 1, exported["evaluate_output"]
    assert re.search(r"sigma_MAD \d\.\d{5} = \d+\.\d\dx the constant predictor's, \d+\.\d\dx the kNN's", lines[0])
    assert re.search(r" -- (NO BETTER THAN THE CONSTANT|NOT CLEARLY BETTER THAN THE CONSTANT|"
                     r"the colour kNN still does better|level with the colour kNN)",
                     lines[0]), lines[0]


# --- the report ---------------------------------------------------------------------


def test_metrics_json(exported, sim_data):
    metrics = json.loads((exported["report"] / "metrics.json").read_text())
    overall = metrics["overall"]
    for key in ("bias_mean", "bias_median", "sigma_mad", "outlier_fraction", "sigma_iqr",
                "rail_outlier_rate", "crps", "pit_ks"):
        assert np.isfinite(overall[key]), key
    assert overall["n"] == read_manifest(sim_data).rows["test"]
    assert metrics["same_data_as_training"] is True
    assert metrics["binned"]["z_spec"] and all(r["n"] >= 2 for r in metrics["binned"]["z_spec"])
    # Simulated data keeps r magnitudes in the shards (mag_r) or catalog.parquet.
    assert metrics["binned"]["mag_r"], metrics["r_magnitudes"]
    assert sum(r["n"] for r in metrics["binned"]["z_spec"]) <= overall["n"]
    assert "sigma_MAD" in exported["evaluate_output"] and "index.html" in exported["evaluate_output"]


def test_pngs_are_valid_and_the_index_references_each(exported):
    import matplotlib.image

    report = exported["report"]
    index = (report / "index.html").read_text()
    pngs = sorted(p.name for p in report.glob("*.png"))
    assert set(name for name, _ in FIGURES) <= set(pngs)
    for name in pngs:
        data = (report / name).read_bytes()
        assert data[:8] == PNG_SIGNATURE, name
        assert len(data) > 10_000, f"{name} is suspiciously small ({len(data)} bytes)"
        h, w = matplotlib.image.imread(report / name).shape[:2]
        assert h > 300 and w > 300, name
        assert f"src='{name}'" in index, name
    assert "http://" not in index and "https://" not in index, "the report must open offline"


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def test_report_images_load_in_headless_chromium(exported):
    browser = _chromium()
    if browser is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed but CI is set; .ci/run installs Debian's chromium")
        pytest.skip("chromium is not installed (apt-get install chromium); CI runs this test")
    index = exported["report"] / "index.html"
    with tempfile.TemporaryDirectory(prefix="zray-chromium-") as profile:
        proc = subprocess.run(
            [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={profile}", "--virtual-time-budget=5000", "--dump-dom", index.as_uri()],
            capture_output=True, text=True, timeout=120,
        )
    dom = proc.stdout
    assert "<body" in dom, proc.stderr[-2000:]
    loaded = re.search(r'data-images-loaded="(\d+)"', dom)
    total = re.search(r'data-images-total="(\d+)"', dom)
    assert loaded and total, "the page's load script did not run:\n" + proc.stderr[-2000:]
    n_png = len(list(exported["report"].glob("*.png")))
    assert int(total.group(1)) == n_png
    assert int(loaded.group(1)) == n_png, f"only {loaded.group(1)} of {n_png} images loaded"


# --- a bundle that does not fit, or is broken ------------------------------------------------


def _edit(bundle: Path, tmp_path: Path, **changes) -> Path:
    copy = tmp_path / "bundle"
    shutil.copytree(bundle, copy)
    info = json.loads((copy / BUNDLE_FILE).read_text())
    info.update(changes)
    (copy / BUNDLE_FILE).write_text(json.dumps(info))
    return copy


def _break(kind: str, bundle: Path, tmp_path: Path) -> Path:
    if kind == "bands":
        return _edit(bundle, tmp_path, bands=["g", "u", "r", "i", "z"])
    if kind == "format":
        return _edit(bundle, tmp_path, format=99)
    if kind in ("no-checksum", "zeroed-weights-no-checksum", "member-outside", "bins-mismatch"):
        info = json.loads((bundle / BUNDLE_FILE).read_text())
        member = info["members"][0]
        if kind == "member-outside":
            member["path"] = "../elsewhere"
        elif kind == "bins-mismatch":
            info["bins"]["n_bins"] = 90
        else:
            del member["sha256"]
        copy = _edit(bundle, tmp_path, members=info["members"], bins=info["bins"])
        if kind == "zeroed-weights-no-checksum":
            weights = copy / "members" / "m0" / "weights.weights.h5"
            weights.write_bytes(bytes(len(weights.read_bytes())))
        return copy
    if kind == "temperature-zero":
        return _edit(bundle, tmp_path, calibration={"temperature": 0.0})
    if kind == "temperature-word":
        return _edit(bundle, tmp_path, calibration={"temperature": "warm"})
    copy = tmp_path / "bundle"
    shutil.copytree(bundle, copy)
    if kind == "model-json-edited":
        info = copy / "members" / "m0" / "model.json"
        info.write_text(info.read_text().replace('"weights_sha256"', '"weights_sha256" ', 1))
    if kind == "missing":
        (copy / BUNDLE_FILE).unlink()
    elif kind == "garbage":
        (copy / BUNDLE_FILE).write_text("{not json")
    elif kind == "weights":
        (copy / "members" / "m0" / "weights.weights.h5").unlink()
    elif kind == "corrupt-weights":
        weights = copy / "members" / "m0" / "weights.weights.h5"
        data = bytearray(weights.read_bytes())
        data[len(data) // 2] ^= 0xFF  # one flipped byte: the file still opens
        weights.write_bytes(bytes(data))
    return copy


BROKEN = {
    "bands": r"manifest.json: bands are u,g,r,i,z but bundle .* expects g,u,r,i,z; expected data in the bundle's band order",
    "size": r"manifest.json: images are 16x16 pixels but bundle .* needs at least 32x32",
    "format": r"bundle.json: bundle format 99 is not supported by zray .*; expected format 2",
    "missing": r"bundle.json: not found; expected a bundle written by `zray export`",
    "garbage": r"bundle.json: unreadable \(.*\); expected JSON written by `zray export`",
    "weights": r"m0/weights.weights.h5: not found; expected every member listed in .*bundle.json to be complete",
    # Found in the driver, before any Ray actor loads the model.
    "corrupt-weights": r"m0/weights.weights.h5: checksum differs from .*bundle.json; the file is corrupt or was replaced",
    # Nothing in a bundle is trusted: checksums are required, fields typed and ranged, members inside.
    "no-checksum": r"bundle.json: missing or malformed field 'members\[0\].sha256' must give the SHA-256 of model.json",
    "zeroed-weights-no-checksum": r"bundle.json: missing or malformed field 'members\[0\].sha256'",
    "member-outside": r"bundle.json: members\[0\].path: path '../elsewhere' is not inside .*bundle; expected a relative",
    "temperature-zero": r"bundle.json: missing or malformed field 'calibration.temperature' must be > 0, got 0.0",
    "temperature-word": r"bundle.json: missing or malformed field 'calibration.temperature' must be a finite number, got 'warm'",
    "model-json-edited": r"m0/model.json: checksum differs from .*bundle.json",
    "bins-mismatch": r"m0: model bins or image size \(180 bins over 0.0-0.4, 32 px\) differ from .*bundle.json \(90 bins",
}


@pytest.mark.parametrize("kind", sorted(BROKEN))
@pytest.mark.parametrize("command", ["predict", "evaluate"])
def test_mismatched_or_broken_bundle_is_refused(exported, sim_data, small_images, tmp_path, kind, command):
    bundle = _break(kind, exported["best"], tmp_path)
    data = small_images if kind == "size" else sim_data
    out = tmp_path / "out" / ("pz.parquet" if command == "predict" else "report")
    # Two workers: a member that does not fit is still one sentence from the driver, not one per actor.
    workers = ("--workers", "2") if command == "predict" else ()
    result = _run(command, bundle, data, "--out", out, *workers)
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("zray: error: "), result.output
    assert re.search(BROKEN[kind], lines[0]), lines[0]
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


@pytest.mark.parametrize("kind", ["format", "missing", "garbage", "weights", "corrupt-weights", "no-checksum",
                                  "member-outside", "temperature-word", "bins-mismatch"])
def test_python_api_refuses_a_broken_bundle(exported, tmp_path, kind):
    bundle = _break(kind, exported["best"], tmp_path)
    with pytest.raises(ZrayError, match=BROKEN[kind]):
        zray.load(bundle)


def test_python_api_refuses_images_that_do_not_fit(exported):
    bundle = zray.load(exported["best"])
    with pytest.raises(ZrayError, match=r"images are 16x16 pixels; expected at least 32x32"):
        bundle.predict(np.zeros((2, 5, 16, 16), np.float32), np.zeros(2))
    with pytest.raises(ZrayError, match=r"expected \(N, 5, H, W\) raw cutouts in band order u,g,r,i,z"):
        bundle.predict(np.zeros((2, 32, 32, 5), np.float32), np.zeros(2))
    assert read_bundle(exported["best"]).image_size == 32


def test_predict_refuses_to_replace_an_existing_output(exported, sim_data, tmp_path):
    out = tmp_path / "pz.parquet"
    shutil.copy(exported["tmp"] / "pz.parquet", out)
    before = out.read_bytes()
    result = _run("predict", exported["best"], sim_data, "--split", "val", "--out", out)
    assert result.exit_code == 1
    assert result.output.strip() == f"zray: error: {out}: already exists (a zray predictions file); use --overwrite to replace it, or another --out"
    assert out.read_bytes() == before  # an earlier, larger predictions file is not silently lost
    result = _run("predict", exported["best"], sim_data, "--split", "val", "--out", out, "--overwrite")
    assert result.exit_code == 0, result.output
    assert pq.read_metadata(out).num_rows == read_manifest(sim_data).rows["val"]


def test_predict_on_a_few_galaxies_never_loads_ray(exported, sim_data, tmp_path):
    """A few thousand galaxies are predicted in the command's own process; loading
    Ray (and Ray Data, Optuna) only to configure their logs cost it 0.7 s."""
    code = (
        "import sys\n"
        "from zray.cli import main\n"
        f"main(['predict', {str(exported['best'])!r}, {str(sim_data)!r}, '--out', {str(tmp_path / 'pz.parquet')!r}],\n"
        "     standalone_mode=False)\n"
        "print('loaded:', sorted(m for m in ('ray', 'ray.data', 'optuna') if m in sys.modules))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # no Ray to join: predict in process
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr
    assert "loaded: []" in out.stdout, out.stdout
    assert pq.read_table(tmp_path / "pz.parquet").num_rows == read_manifest(sim_data).total_rows

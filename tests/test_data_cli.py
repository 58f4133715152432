"""`zray simulate`, `zray prepare`, `zray inspect` through the real click group."""

from __future__ import annotations

import shutil

import pyarrow as pa
import pyarrow.csv as pcsv
from click.testing import CliRunner

from zray.cli import main


def _run(*args):
    result = CliRunner().invoke(main, list(map(str, args)))
    assert "Traceback" not in result.output
    return result


def test_simulate_then_inspect(tmp_path):
    out = tmp_path / "sim"
    result = _run("simulate", "--n", 30, "--size", 16, "--workers", 1, "--out", out)
    assert result.exit_code == 0, result.output
    assert "wrote 30 simulated galaxies" in result.output and str(out) in result.output
    result = _run("inspect", out)
    assert result.exit_code == 0, result.output
    assert "30 rows, 5 bands (u,g,r,i,z), 16x16 pixels" in result.output
    assert "problems: none" in result.output
    result = _run("simulate", "--n", 30, "--size", 16, "--workers", 1, "--out", out)
    assert result.exit_code == 1
    assert "already exists (a zray dataset); use --overwrite" in result.output


def test_simulate_needs_n():
    result = _run("simulate", "--out", "nowhere")
    assert result.exit_code == 1
    assert "zray: error: --n is required unless --catalog is given" in result.output


def test_inspect_reports_problems_and_fails(tmp_path, sim_data):
    copy = tmp_path / "copy"
    shutil.copytree(sim_data, copy)
    (copy / "val-00000.parquet").write_bytes(b"PAR1 not really")
    result = _run("inspect", copy)
    assert result.exit_code == 1
    assert "val-00000.parquet: not a readable Parquet file" in result.output
    assert "zray: error:" in result.output and "problem(s) found" in result.output


def test_inspect_missing_directory(tmp_path):
    result = _run("inspect", tmp_path / "absent")
    assert result.exit_code == 1
    assert "absent: no such dataset directory" in result.output


def test_prepare_reports_bad_catalogue(tmp_path):
    (tmp_path / "img").mkdir()
    pcsv.write_csv(pa.table({"id": [1], "z_spec": [0.1], "extinction_r": [0.08], "file": ["a.fits"]}),
                   tmp_path / "cat.csv")
    result = _run("prepare", tmp_path / "cat.csv", "--images", tmp_path / "img", "--out", tmp_path / "out")
    assert result.exit_code == 1
    assert "cat.csv: missing column(s) ebv; expected columns id, z_spec, ebv" in result.output
    assert "--column ebv=extinction_r/2.751 if 'extinction_r' is SDSS's A_r" in result.output
    assert not (tmp_path / "out").exists()


def test_help_has_examples():
    for cmd in ("simulate", "prepare", "inspect"):
        result = _run(cmd, "--help")
        assert result.exit_code == 0 and "Example" in result.output

"""Paths are made absolute where the command starts, before any Ray process sees them."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from zray import config
from zray.cli import main
from zray.errors import ZrayError
from zray.paths import absolute, check_name, inside


def test_absolute_resolves_against_the_current_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert absolute("data/sim") == str(tmp_path / "data" / "sim")
    assert absolute(Path("runs")) == tmp_path / "runs"
    assert absolute("../x") == str(tmp_path.parent / "x")
    assert absolute("/already/absolute") == "/already/absolute"
    assert absolute("~/zray").startswith(str(Path.home()))
    assert absolute("s3://bucket/zray") == "s3://bucket/zray"
    assert absolute("gs://b/p") == "gs://b/p"
    assert absolute(None) is None


def _space(tmp_path: Path) -> Path:
    path = tmp_path / "spaces" / "s.yaml"
    path.parent.mkdir()
    path.write_text(yaml.safe_dump({"name": "s", "model": "cnn", "data": {"path": "data/sim"}}))
    return path


def test_search_space_data_path_is_relative_to_where_zray_runs(tmp_path, monkeypatch):
    path = _space(tmp_path)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    # Relative to the folder the command runs in, not to the YAML's folder.
    assert config.load("../spaces/s.yaml").data.path == str(work / "data" / "sim")
    assert config.load(path, ["data.path=other"]).data.path == str(work / "other")
    assert config.load(path, [f"data.path={tmp_path}/abs"]).data.path == f"{tmp_path}/abs"


def test_a_data_path_given_with_set_is_simulated_into_only_when_asked(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({"name": "s", "model": "cnn", "data": {"path": "data/sim", "simulate": {"n": 50}}}))
    assert config.load(path).data.simulate.n == 50  # the path the file names: simulated on first use
    assert config.load(path, ["data.path=other"]).data.simulate is None  # a typo must not become a dataset
    assert config.load(path, ["data.path=other", "data.simulate.n=70"]).data.simulate.n == 70
    assert config.load(path, ["data.simulate.seed=3"]).data.simulate.seed == 3


def test_errors_name_the_resolved_data_folder(tmp_path, monkeypatch):
    path = _space(tmp_path)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["train", str(path)])
    assert result.exit_code == 1
    assert f"{tmp_path / 'data' / 'sim'}: no dataset there" in result.output


def test_names_under_a_root_never_leave_it(tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    (tmp_path / "secret.parquet").write_text("not zray's")
    (root / "link.parquet").symlink_to(tmp_path / "secret.parquet")
    (root / "sub").mkdir()
    assert inside(root, "sub/train-00000.parquet", "m") == root / "sub" / "train-00000.parquet"
    for escape in ("../secret.parquet", "/etc/passwd", "sub/../../secret.parquet", "link.parquet", "", "a\\..\\b",
                   "x" * 300):
        with pytest.raises(ZrayError, match=f"m: path {re.escape(repr(escape))} is not inside {root}"):
            inside(root, escape, "m")


def test_experiment_names_are_one_folder(tmp_path):
    assert check_name("quickstart-2.b_c", "--name") == "quickstart-2.b_c"
    for bad in ("..", ".hidden", "a/b", "/abs", "-flag", "a b", "x" * 101, "", "naïve"):
        with pytest.raises(ZrayError, match="--name: must be"):
            check_name(bad, "--name")


def test_the_library_refuses_a_name_that_leaves_the_runs_folder(tmp_path, sim_data):
    """zray.train.run and zray.search.run (Python callers, not the CLI) check the name too,
    before any data work or Ray start."""
    from zray import search, train

    space = config.load(_space(tmp_path), [f"data.path={sim_data}", "data.image_size=32"])
    for run in (train.run, search.run):
        with pytest.raises(ZrayError, match=r"name: must be letters, digits"):
            run(space, runs_dir=tmp_path / "runs", name="../outside")
    assert not (tmp_path / "runs").exists() and not (tmp_path / "outside").exists()

"""Paths are made absolute where the command starts, before any Ray process sees them."""

from __future__ import annotations

from pathlib import Path

import yaml
from click.testing import CliRunner

from zray import config
from zray.cli import main
from zray.paths import absolute


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


def test_errors_name_the_resolved_data_folder(tmp_path, monkeypatch):
    path = _space(tmp_path)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["train", str(path)])
    assert result.exit_code == 1
    assert f"{tmp_path / 'data' / 'sim'}: no dataset there" in result.output

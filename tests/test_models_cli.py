"""`zray models` lists every model type with its parameter count."""

from __future__ import annotations

from click.testing import CliRunner

from zray.cli import main


def test_models_lists_inception_with_its_exact_parameter_count():
    result = CliRunner().invoke(main, ["models"])
    assert result.exit_code == 0, result.output
    assert "inception" in result.output and "cnn" in result.output
    assert "27,596,372" in result.output
    assert "dense_units = 1096" in result.output

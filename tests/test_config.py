"""The search-space schema, overrides, messages and the run identity."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from zray import config
from zray.cli import main
from zray.errors import ZrayError

ROOT = Path(__file__).resolve().parents[1]
SPACES = sorted((ROOT / "search_spaces").glob("*.yaml"))

GOOD = {
    "name": "t",
    "model": "cnn",
    "data": {"path": "data/x", "image_size": 32},
    "fixed": {"epochs": 2},
    "search": {
        "learning_rate": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
        "filters": {"type": "int", "low": 8, "high": 32, "step": 8},
        "dense_units": {"type": "categorical", "choices": [64, 128]},
    },
    "tune": {"metric": "val_sigma_mad", "mode": "min", "num_samples": 2},
}


def write(tmp_path: Path, data, name="space.yaml") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


def with_change(dotted: str, value) -> dict:
    data = yaml.safe_load(yaml.safe_dump(GOOD))
    keys = dotted.split(".")
    node = data
    for key in keys[:-1]:
        node = node.setdefault(key, {})
    if value is KeyError:
        del node[keys[-1]]
    else:
        node[keys[-1]] = value
    return data


def test_shipped_search_spaces_validate():
    assert len(SPACES) >= 3
    result = CliRunner().invoke(main, ["validate", *map(str, SPACES)])
    assert result.exit_code == 0, result.output
    for path in SPACES:
        assert f"ok  {path}" in result.output


def test_good_file_loads_with_types(tmp_path):
    space = config.load(write(tmp_path, GOOD))
    assert space.model == "cnn"
    assert space.search["filters"].type == "int"
    assert space.tune.scheduler.type == "none"
    assert space.data.bins.n_bins == 180
    assert space.resources.num_workers == 1


def test_yaml_exponent_without_dot_is_a_float(tmp_path):
    # Plain YAML 1.1 reads 1e-4 as the string '1e-4'; users mean a number.
    data = yaml.safe_load(yaml.safe_dump(GOOD))
    del data["search"]["learning_rate"]
    text = yaml.safe_dump(data).replace("epochs: 2", "epochs: 2\n  learning_rate: 1e-4")
    space = config.load(write(tmp_path, text))
    assert space.fixed["learning_rate"] == pytest.approx(1e-4)


BAD_CASES = [
    # (change, expected fragment of the message)
    (("search.learning_rate.low", 0), "search.learning_rate.low: must be > 0 on a log scale, got 0"),
    (("search.filters.low", 64), "search.filters.low: `low <= high` must hold, got low=64.0, high=32.0"),
    (("search.dense_units.choices", []), "search.dense_units.choices: must be a non-empty list"),
    (("search.learning_rate.typ", "float"), "search.learning_rate.typ: unknown key; did you mean 'type'?"),
    (("tune.num_sampels", 3), "tune.num_sampels: unknown key; did you mean 'num_samples'?"),
    (("model", "resnet9000"), "model: unknown model 'resnet9000'; known models: cnn"),
    (("tune.scheduler", {"type": "hyperband"}), "tune.scheduler.type: expected 'none', 'asha' or 'median', got 'hyperband'"),
    (("tune.mode", "minimise"), "tune.mode: expected 'min' or 'max', got 'minimise'"),
    (("tune.num_samples", 0), "tune.num_samples: expected greater than 0, got 0"),
    (("tune.num_samples", -3), "tune.num_samples: expected greater than 0, got -3"),
    (("data", KeyError), "required section 'data' is missing"),
    (("name", KeyError), "required section 'name' is missing"),
    (("fixed.epochz", 3), "fixed.epochz: not a hyperparameter of model 'cnn'; did you mean 'epochs'?"),
    (("fixed.epochs", "many"), "fixed.epochs: expected a whole number, got 'many'"),
    (("fixed.dense_units", 64), "fixed.dense_units: is also in search"),
    (("search.filters.type", "float"), "search.filters.type: filters takes whole numbers; use type: int"),
    (("search.filters.step", 2.5), "search.filters.step: must be a whole number for an int distribution"),
    (("search.learning_rate.step", 0.1), "search.learning_rate.step: cannot be combined with log: true"),
    (("search.filters.step", 100), "search.filters.step: leaves only low (8) in [8, 32]; expected a step of at most 24"),
    (("search.dense_units.choices", [16, 16]),
     "search.dense_units.choices: must each appear once, but 16 appears twice in [16, 16]"),
    (("search.augment", {"type": "categorical", "choices": [1, True]}),
     "search.augment.choices: must each appear once, but 1 and True are one choice (equal) in [1, True]"),
    (("resources.cpus_per_worker", 0), "resources.cpus_per_worker: expected greater than 0, got 0"),
    (("data.z_max", -1.0), "data.z_max: must be > z_min (0), got -1"),
    (("fixed.label_sigma", -0.01), "fixed.label_sigma: expected a number >= 0, got -0.01"),
    (("search.label_sigma", {"type": "float", "low": -0.01, "high": 0.02}),
     "search.label_sigma.low: expected a number >= 0, got -0.01"),
    # Declared constraints apply to search choices and bounds as to fixed values
    # (a misspelt schedule once validated and then trained at a constant rate).
    (("search.lr_schedule", {"type": "categorical", "choices": ["step", "cosin"]}),
     "search.lr_schedule.choices: expected one of 'constant', 'step', 'cosine', got 'cosin'"),
    (("fixed.lr_schedule", "cosin"), "fixed.lr_schedule: expected one of 'constant', 'step', 'cosine', got 'cosin'"),
    (("search.lr_drop_factor", {"type": "float", "low": 0.5, "high": 4.0}),
     "search.lr_drop_factor.low: expected a number >= 1, got 0.5"),
    (("search.batch_size", {"type": "int", "low": 0, "high": 64}), "search.batch_size.low: expected a whole number >= 1, got 0"),
    (("fixed.lr_drop_factor", 0.0), "fixed.lr_drop_factor: expected a number >= 1, got 0.0"),
    # One declaration of the metrics and their directions.
    (("tune.metric", "val_sigma"), "tune.metric: unknown metric 'val_sigma'; expected one of val_sigma_mad, "
                                   "val_outlier_fraction, val_crps, val_loss"),
    (("tune.mode", "max"), "tune.mode: val_sigma_mad is better when lower; expected 'min', got 'max'"),
]


@pytest.mark.parametrize(("change", "message"), BAD_CASES, ids=[c[0][0] + "=" + repr(c[0][1]) for c in BAD_CASES])
def test_bad_file_gets_one_sentence(tmp_path, change, message):
    path = write(tmp_path, with_change(*change))
    with pytest.raises(ZrayError) as info:
        config.load(path)
    text = str(info.value)
    assert text.startswith(f"{path}: "), text
    assert message in text, text
    assert "\n" not in text


def test_a_float_step_that_spans_the_range_exactly_is_kept(tmp_path):
    path = write(tmp_path, with_change("search.dropout", {"type": "float", "low": 0.1, "high": 0.3, "step": 0.2}))
    assert config.load(path).search["dropout"].step == 0.2  # 0.3 - 0.1 is 0.19999999999999998 in floats


def test_yaml_merge_keys_merge_and_the_mappings_own_keys_win(tmp_path):
    """`<<:` (YAML's merge key) works as YAML says: the merged keys first, the mapping's own
    override them; a key written twice in the mapping itself is still refused."""
    path = tmp_path / "s.yaml"
    path.write_text("name: m\nmodel: cnn\ndata: {path: data}\nfixed:\n  <<: {epochs: 2, batch_size: 32}\n"
                    "  epochs: 3\n")
    assert config.load(path).fixed == {"epochs": 3, "batch_size": 32}
    path.write_text("name: m\nmodel: cnn\ndata: {path: data}\nfixed:\n  <<: {epochs: 2}\n  epochs: 3\n"
                    "  epochs: 4\n")
    with pytest.raises(ZrayError, match=r"line 7, column 3: invalid YAML \(key 'epochs' appears twice \(lines 6 and 7\)"):
        config.load(path)


def test_unreadable_yaml_names_the_line(tmp_path):
    path = write(tmp_path, "name: t\nmodel: cnn\ndata: {path: x\nfixed: {}\n")
    with pytest.raises(ZrayError, match=r"space.yaml: line \d+, column \d+: invalid YAML"):
        config.load(path)


def test_missing_file_and_non_mapping(tmp_path):
    with pytest.raises(ZrayError, match="no such file"):
        config.load(tmp_path / "nope.yaml")
    with pytest.raises(ZrayError, match="expected a mapping of sections"):
        config.load(write(tmp_path, "- just\n- a list\n"))


def test_overrides_are_typed_and_applied(tmp_path):
    path = write(tmp_path, GOOD)
    space = config.load(path, ["fixed.epochs=5", "tune.num_samples=7", "tune.scheduler.type=asha"])
    assert space.fixed["epochs"] == 5
    assert space.tune.num_samples == 7
    assert space.tune.scheduler.type == "asha"
    # Fixing a searched hyperparameter removes it from the search.
    space = config.load(path, ["fixed.filters=16"])
    assert space.fixed["filters"] == 16 and "filters" not in space.search


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("tune.num_sample=3", "--set tune.num_sample=3: unknown key tune.num_sample; did you mean 'num_samples'?"),
        ("tune.num_samples=abc", "--set tune.num_samples=abc: tune.num_samples: expected a valid integer, got 'abc'"),
        ("fixed.epoch=3", "--set fixed.epoch=3: 'epoch' is not a hyperparameter of model 'cnn'; did you mean 'epochs'?"),
        ("fixed.epochs=x", "--set fixed.epochs=x: fixed.epochs: expected a whole number, got 'x'"),
        ("search.dropout.low=0", "--set search.dropout.low=0: search.dropout is not in this file's search space"),
        ("novalue", "--set novalue: expected KEY=VALUE"),
        ("data.image_size.x=3", "--set data.image_size.x=3: data.image_size takes a value, not sub-keys"),
    ],
)
def test_bad_override(tmp_path, override, message):
    with pytest.raises(ZrayError) as info:
        config.load(write(tmp_path, GOOD), [override])
    assert message in str(info.value)


def test_default_hyperparameters_use_defaults_inside_the_space(tmp_path):
    space = config.load(write(tmp_path, GOOD))
    params = space.default_hyperparameters()
    assert params["epochs"] == 2  # fixed
    assert params["learning_rate"] == pytest.approx(1e-4)  # training default, inside [1e-4, 1e-2]
    assert params["filters"] == 32  # model default, inside [8, 32]
    assert params["dense_units"] == 64  # model default 256 not a choice: first choice


def test_nothing_searched_in_several_trials_is_said(tmp_path):
    """With no search section every trial trains one configuration with one seed: `zray validate`
    (and `zray tune`) say so where more than one trial would run. The default stays 10: a search
    started from such a file before resumes with the same space."""
    fixed = write(tmp_path, {k: v for k, v in GOOD.items() if k not in ("search", "tune")}, "fixed.yaml")
    assert config.load(fixed).tune.num_samples == 10
    result = CliRunner().invoke(main, ["validate", str(fixed), "--set", "tune.num_samples=3"])
    assert result.exit_code == 0 and f"ok  {fixed}: model cnn, 3 trials, searching nothing" in result.output
    assert (f"zray: warning: {fixed}: nothing is searched, so the 3 trials train one configuration with one seed "
            "(tune.seed) and differ by chance alone; tune.num_samples: 1 trains it once") in result.output
    quiet = CliRunner().invoke(main, ["validate", str(fixed), "--set", "tune.num_samples=1"])
    assert "1 trials" in quiet.output and "nothing is searched" not in quiet.output
    searched = CliRunner().invoke(main, ["validate", str(write(tmp_path, GOOD))])
    assert searched.exit_code == 0 and "nothing is searched" not in searched.output


def test_validate_checks_the_dataset_a_space_names_without_simulating(sim_data, tmp_path):
    """A network larger than the dataset's cutouts fails validation (a run would stop there after
    starting Ray); a data.path with no dataset yet is said; one the space simulates is not."""
    quickstart = str(ROOT / "search_spaces" / "quickstart.yaml")
    big = CliRunner().invoke(main, ["validate", quickstart, "--set", f"data.path={sim_data}",
                                    "--set", "data.image_size=48"])
    assert big.exit_code == 1 and "ok  " not in big.output
    assert f"{sim_data}: images are 32x32 pixels but data.image_size is 48" in big.output
    fits = CliRunner().invoke(main, ["validate", quickstart, "--set", f"data.path={sim_data}"])
    assert fits.exit_code == 0 and "warning" not in fits.output, fits.output
    space = write(tmp_path, {**GOOD, "data": {"path": str(tmp_path / "none"), "image_size": 32}})
    missing = CliRunner().invoke(main, ["validate", str(space)])
    assert missing.exit_code == 0 and f"{tmp_path / 'none'}: no dataset there yet" in missing.output
    simulated = CliRunner().invoke(main, ["validate", quickstart, "--set", f"data.path={tmp_path / 'sim'}",
                                          "--set", "data.simulate.n=50"])
    assert simulated.exit_code == 0 and "warning" not in simulated.output and not (tmp_path / "sim").exists()


def test_validate_cli_exit_codes_and_no_traceback(tmp_path):
    bad = write(tmp_path, with_change("tune.mode", "sideways"), "bad.yaml")
    good = write(tmp_path, GOOD, "good.yaml")
    proc = subprocess.run(
        [sys.executable, "-m", "zray", "validate", str(good), str(bad)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert f"{bad}: tune.mode: expected 'min' or 'max', got 'sideways'" in proc.stderr
    assert f"ok  {good}" in proc.stdout


def test_help_and_version():
    runner = CliRunner()
    result = runner.invoke(main, ["--help"])
    assert result.exit_code == 0 and "validate" in result.output
    result = runner.invoke(main, ["validate", "--help"])
    assert "Example" in result.output and "--set" in result.output
    result = runner.invoke(main, ["--version"])
    assert result.exit_code == 0 and "zray, version" in result.output


# --- run identity -----------------------------------------------------------------

HP = {"learning_rate": 1e-3, "filters": 16, "augment": True, "lr_schedule": "step"}


def test_run_identity_is_stable():
    a = config.run_identity("cnn", HP, "abc123")
    assert a == config.run_identity("cnn", dict(reversed(list(HP.items()))), "abc123")
    assert a == config.run_identity("cnn", {**HP, "learning_rate": 0.001}, "abc123")
    assert len(a) == 10 and all(c in "0123456789abcdef" for c in a)
    # Same value on another interpreter (no PYTHONHASHSEED dependence).
    code = (
        "from zray.config import run_identity;"
        f"print(run_identity('cnn', {HP!r}, 'abc123'))"
    )
    other = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env={"PYTHONHASHSEED": "123", "PATH": ""},
        timeout=60,
    )
    assert other.stdout.strip() == a


@pytest.mark.parametrize(
    "change",
    [
        {"model": "inception"},
        {"data": "abc124"},
        {"hp": {**HP, "learning_rate": 1.0001e-3}},
        {"hp": {**HP, "filters": 17}},
        {"hp": {**HP, "filters": 16.0}},
        {"hp": {**HP, "augment": False}},
        {"hp": {**HP, "extra": 1}},
    ],
)
def test_run_identity_is_sensitive(change):
    base = config.run_identity("cnn", HP, "abc123")
    other = config.run_identity(change.get("model", "cnn"), change.get("hp", HP), change.get("data", "abc123"))
    assert other != base

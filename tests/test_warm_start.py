"""Warm-started searches: a new study seeded with an earlier search's finished trials.

The earlier experiment is built by hand through the real APIs (its
search_space.json from ``zray.config``, its optuna.db through Optuna itself,
with COMPLETE, PRUNED and FAIL trials), the new study is a real SQLite study
read back with Optuna's own API; one real `zray tune --warm-start` through
Ray checks that the earlier trials are in the new study and are not run again.
"""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
import yaml
from click.testing import CliRunner
from optuna.trial import TrialState

from zray import config, search
from zray.cli import main
from zray.errors import ZrayError
from zray.search import warm_start
from zray.search.tuner import optuna_distributions

BASE = {
    "model": "cnn",
    "fixed": {"epochs": 2, "batch_size": 32, "blocks": 2, "filters": 8, "dense_units": 32},
    "search": {"learning_rate": {"type": "float", "low": 1.0e-4, "high": 1.0e-2, "log": True},
               "label_sigma": {"type": "categorical", "choices": [0.0, 0.005]}},
    "tune": {"num_samples": 1, "max_concurrent": 1, "seed": 0},
    "resources": {"num_workers": 1, "cpus_per_worker": 0.9, "trial_cpus": 0.1},
}
# The earlier search's trials: (state, learning_rate, label_sigma, epoch metrics).
EARLIER = [
    (TrialState.COMPLETE, 1.0e-3, 0.0, {1: 0.08, 2: 0.05}),
    (TrialState.COMPLETE, 3.0e-3, 0.005, {1: 0.07, 2: 0.04}),
    (TrialState.PRUNED, 5.0e-4, 0.005, {1: 0.2}),
    (TrialState.FAIL, 2.0e-3, 0.0, {}),
]


def _space(tmp_path: Path, name: str, data_path: Path | None = None, *, search: dict | None = None,
           fixed: dict | None = None, tune: dict | None = None, data: dict | None = None, model: str = "cnn"):
    """A search space through a YAML file and ``config.load``: BASE with ``search`` in place of its
    search section, and ``fixed``, ``tune``, ``data`` merged into theirs."""
    search = BASE["search"] if search is None else search
    raw = {**BASE, "name": name, "model": model, "search": search,
           "fixed": {k: v for k, v in {**BASE["fixed"], **(fixed or {})}.items() if k not in search},
           "tune": {**BASE["tune"], **(tune or {})},
           "data": {"path": str(data_path or tmp_path / "data"), "image_size": 32, **(data or {})}}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path, config.load(path)


def _earlier(tmp_path: Path, trials=EARLIER, name: str = "old", **changes) -> Path:
    """runs/old: its search_space.json and an optuna.db holding ``trials``, written by Optuna."""
    _, space = _space(tmp_path, name, **changes)
    folder = tmp_path / "runs" / name
    folder.mkdir(parents=True)
    (folder / search.SPACE_FILE).write_text(json.dumps(space.model_dump(mode="json")))
    study = optuna.create_study(storage=f"sqlite:///{folder / search.STUDY_FILE}", study_name=space.name,
                                direction="minimize")
    for i, (state, lr, sigma, epochs) in enumerate(trials):
        value = min(epochs.values()) if state == TrialState.COMPLETE else (
            epochs[max(epochs)] if state == TrialState.PRUNED else None)
        study.add_trial(optuna.trial.create_trial(
            state=state, value=value, params={"learning_rate": lr, "label_sigma": sigma},
            distributions=optuna_distributions(space), intermediate_values=epochs,
            user_attrs={"zray_trial": f"trial-abc-0000{i}", "zray_best_value": value},
        ))
    return folder


def _new_study(folder: Path, name: str = "new", directions=("minimize",)) -> optuna.Study:
    """The new experiment's study, as the searcher creates it before the first trial."""
    folder.mkdir(parents=True, exist_ok=True)
    return optuna.create_study(storage=f"sqlite:///{folder / search.STUDY_FILE}", study_name=name,
                               directions=list(directions))


def _trials(folder: Path, name: str = "new") -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{folder / search.STUDY_FILE}").trials


def _one_sentence(exc: pytest.ExceptionInfo, folder: Path) -> str:
    message = str(exc.value)
    assert "\n" not in message and message.startswith(f"{folder}: "), message
    return message


# --- seeding a real study (no Ray) -------------------------------------------------------


def test_finished_trials_are_copied_with_values_states_and_the_mark(tmp_path):
    old = _earlier(tmp_path)
    new = tmp_path / "runs" / "new"
    _new_study(new)
    _, space = _space(tmp_path, "new")
    assert warm_start.seed_study(new, old, space) == 3
    trials = _trials(new)
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.COMPLETE, TrialState.PRUNED]  # FAIL not copied
    assert [t.params for t in trials] == [{"learning_rate": 1.0e-3, "label_sigma": 0.0},
                                          {"learning_rate": 3.0e-3, "label_sigma": 0.005},
                                          {"learning_rate": 5.0e-4, "label_sigma": 0.005}]
    assert [t.value for t in trials] == [0.05, 0.04, 0.2]
    assert [t.intermediate_values for t in trials] == [{1: 0.08, 2: 0.05}, {1: 0.07, 2: 0.04}, {1: 0.2}]
    assert {t.user_attrs[warm_start.ATTR] for t in trials} == {str(old)}
    assert [t.user_attrs["zray_trial"] for t in trials] == ["trial-abc-00000", "trial-abc-00001", "trial-abc-00002"]
    record = json.loads((new / search.WARM_START_FILE).read_text())
    assert record == {"source": str(old), "trials": 3, "complete": 2, "pruned": 1, "skipped": 0, "not_copied": 1}

    # Seeding again (a search started again over the same study) adds nothing.
    assert warm_start.seed_study(new, old, space) == 0
    assert len(_trials(new)) == 3

    # The sampler proposes a new point knowing them: the study's next trial is new, unmarked.
    study = optuna.load_study(study_name="new", storage=f"sqlite:///{new / search.STUDY_FILE}",
                              sampler=optuna.samplers.TPESampler(seed=0, n_startup_trials=2))
    trial = study.ask(fixed_distributions=optuna_distributions(space))
    assert trial.number == 3 and warm_start.ATTR not in trial.user_attrs

    # What `zray status` says, from warm_start.json.
    (new / search.SPACE_FILE).write_text(json.dumps(space.model_dump(mode="json")))
    text = search.format_summary(search.summarize(new))
    assert f"warm-started from {old}: 3 earlier trials in the study" in text


def test_trials_outside_the_new_space_are_skipped_and_counted(tmp_path):
    old = _earlier(tmp_path)
    new = tmp_path / "runs" / "new"
    _new_study(new)
    # 3e-3 lies above the new high; label_sigma 0.005 is no longer offered: only trial 0 remains.
    _, space = _space(tmp_path, "new", search={
        "learning_rate": {"type": "float", "low": 1.0e-4, "high": 2.0e-3, "log": True},
        "label_sigma": {"type": "categorical", "choices": [0.0, 0.01]}})
    assert warm_start.seed_study(new, old, space) == 1
    (trial,) = _trials(new)
    assert trial.params == {"learning_rate": 1.0e-3, "label_sigma": 0.0}
    assert json.loads((new / search.WARM_START_FILE).read_text())["skipped"] == 2


def test_a_hyperparameter_searched_before_and_fixed_now_keeps_the_trials_at_that_value(tmp_path):
    old = _earlier(tmp_path)
    new = tmp_path / "runs" / "new"
    _new_study(new)
    _, space = _space(tmp_path, "new", fixed={"label_sigma": 0.005},
                      search={"learning_rate": BASE["search"]["learning_rate"]})
    assert warm_start.seed_study(new, old, space) == 2
    assert [t.params for t in _trials(new)] == [{"learning_rate": 3.0e-3}, {"learning_rate": 5.0e-4}]


def test_a_hyperparameter_fixed_before_and_searched_now_takes_the_earlier_value(tmp_path):
    old = _earlier(tmp_path)  # filters fixed at 8 there
    new = tmp_path / "runs" / "new"
    _new_study(new)
    _, space = _space(tmp_path, "new", search={**BASE["search"],
                                               "filters": {"type": "int", "low": 8, "high": 32, "step": 8}})
    assert warm_start.seed_study(new, old, space) == 3
    assert {t.params["filters"] for t in _trials(new)} == {8}

    other = tmp_path / "runs" / "other"
    _new_study(other, "other")
    _, space = _space(tmp_path, "other", search={**BASE["search"],
                                                 "filters": {"type": "int", "low": 16, "high": 32, "step": 8}})
    with pytest.raises(ZrayError) as exc:
        warm_start.seed_study(other, old, space)
    assert "none of its 3 finished trials lies in this search space" in _one_sentence(exc, old)
    assert _trials(other, "other") == []


def test_another_data_path_is_a_warning_not_a_refusal(tmp_path, caplog):
    old = _earlier(tmp_path)
    new = tmp_path / "runs" / "new"
    _new_study(new)
    _, space = _space(tmp_path, "new", tmp_path / "copy")
    with caplog.at_level("WARNING", logger="zray"):
        assert warm_start.seed_study(new, old, space) == 3
    (line,) = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert line == (f"warm start from {old}: its data were {tmp_path / 'data'}, this search's are "
                    f"{tmp_path / 'copy'}; their values count as if measured on the same galaxies")


@pytest.mark.parametrize(("changes", "expected"), [
    ({"model": "cnn_phot"}, "searched model 'cnn' and this search 'cnn_phot'"),
    ({"tune": {"metric": "val_crps"}}, "tune.metric is 'val_sigma_mad' there and 'val_crps' here"),
    ({"data": {"z_max": 0.6}}, "data.z_max is 0.4 there and 0.6 here"),
    ({"data": {"n_bins": 90}}, "data.n_bins is 180 there and 90 here"),
    ({"data": {"image_size": 48}}, "data.image_size is 32 there and 48 here"),
    ({"fixed": {"epochs": 5}}, "fixed.epochs is 2 there and 5 here"),
])
def test_an_incompatible_search_is_refused_in_one_sentence(tmp_path, changes, expected):
    old = _earlier(tmp_path)
    new = tmp_path / "runs" / "new"
    _new_study(new)
    _, space = _space(tmp_path, "new", **changes)
    with pytest.raises(ZrayError) as exc:
        warm_start.seed_study(new, old, space)
    assert expected in _one_sentence(exc, old)
    assert _trials(new) == [] and not (new / search.WARM_START_FILE).exists()


def test_folders_that_cannot_seed_are_refused_in_one_sentence(tmp_path):
    new = tmp_path / "runs" / "new"
    _new_study(new)
    _, space = _space(tmp_path, "new")
    empty = tmp_path / "runs" / "empty"
    empty.mkdir()
    with pytest.raises(ZrayError) as exc:
        warm_start.seed_study(new, empty, space)
    assert "not a zray experiment (search_space.json missing)" in _one_sentence(exc, empty)
    (empty / search.SPACE_FILE).write_text(json.dumps(space.model_dump(mode="json")))
    with pytest.raises(ZrayError) as exc:
        warm_start.seed_study(new, empty, space)
    assert "not a zray experiment (optuna.db missing)" in _one_sentence(exc, empty)

    with pytest.raises(ZrayError) as exc:
        warm_start.seed_study(new, new, space)
    assert "is the experiment being started" in _one_sentence(exc, new)

    failed = _earlier(tmp_path, trials=[EARLIER[3]], name="failed")
    with pytest.raises(ZrayError) as exc:
        warm_start.seed_study(new, failed, space)
    assert "its study holds no complete or pruned trial (1 failed or never finished)" in _one_sentence(exc, failed)

    _, nothing = _space(tmp_path, "nothing", search={})
    with pytest.raises(ZrayError) as exc:
        warm_start.check(_earlier(tmp_path), nothing, tmp_path / "runs" / "nothing")
    assert "cannot warm-start a search that searches nothing" in str(exc.value)


def test_another_number_of_objectives_is_refused_at_seeding(tmp_path):
    old = _earlier(tmp_path)
    new = tmp_path / "runs" / "new"
    _new_study(new, directions=("minimize", "minimize"))
    _, space = _space(tmp_path, "new")
    with pytest.raises(ZrayError) as exc:
        warm_start.seed_study(new, old, space)
    assert ("its study optimises 1 objective (minimize) and this one 2 objectives (minimize, minimize)"
            in _one_sentence(exc, old))
    assert _trials(new) == []


def test_two_objective_trials_copy_both_values(tmp_path):
    old = tmp_path / "runs" / "old"
    _, space = _space(tmp_path, "old")
    old.mkdir(parents=True)
    (old / search.SPACE_FILE).write_text(json.dumps(space.model_dump(mode="json")))
    study = optuna.create_study(storage=f"sqlite:///{old / search.STUDY_FILE}", study_name="old",
                                directions=["minimize", "minimize"])
    study.add_trial(optuna.trial.create_trial(values=[0.05, 0.1], params={"learning_rate": 1e-3, "label_sigma": 0.0},
                                              distributions=optuna_distributions(space)))
    new = tmp_path / "runs" / "new"
    _new_study(new, directions=("minimize", "minimize"))
    assert warm_start.seed_study(new, old, space, study_name="new") == 1
    assert [t.values for t in _trials(new)] == [[0.05, 0.1]]


def test_resume_accepts_only_the_folder_it_was_warm_started_from(tmp_path):
    old = _earlier(tmp_path)
    other = _earlier(tmp_path, name="other")
    new = tmp_path / "runs" / "new"
    _new_study(new)
    _, space = _space(tmp_path, "new")
    warm_start.seed_study(new, old, space)
    assert warm_start.check(old, space, new, resume=True) is None  # nothing more to add
    with pytest.raises(ZrayError) as exc:
        warm_start.check(other, space, new, resume=True)
    assert f"{new} was started from {old} and a resumed search keeps the trials its study holds" in _one_sentence(exc, other)


def test_the_cli_refuses_before_anything_is_written(tmp_path):
    path, _ = _space(tmp_path, "new")
    result = CliRunner().invoke(main, ["tune", str(path), "--storage", str(tmp_path / "runs"),
                                       "--warm-start", str(tmp_path / "nowhere")])
    assert result.exit_code == 1, result.output
    assert f"zray: error: {tmp_path / 'nowhere'}: not a zray experiment (search_space.json missing)" in result.output
    assert not (tmp_path / "runs" / "new").exists()


# The real warm-started search through Ray and the CLI shares its Ray search with the
# two-objective one: tests/test_pareto.py::test_a_warm_started_search_runs_only_its_new_trials.

"""Two-objective searches: the config, the Optuna study's Pareto front, status, results and export.

The searcher is driven as Tune drives it (see tests/test_study.py) against a
real Optuna study in SQLite, read back with Optuna's own API; then one tiny
real `zray tune` with ``tune.metrics``, warm-started from an earlier study,
checks that Optuna's front, zray's front (status, results.csv, best.json) and
export's choice agree, and that the earlier trials are in the study, not re-run.
"""

from __future__ import annotations

import csv
import json
import pickle
from pathlib import Path

import optuna
import optuna.distributions as od
import pytest
import yaml
from optuna.study import StudyDirection
from optuna.trial import TrialState

from zray import config, search
from zray.errors import ZrayError
from zray.search import warm_start
from zray.search.optuna_study import EPOCHS_ATTR, ResumableOptunaSearch
from zray.search.results import pareto_front

METRICS = ["val_sigma_mad", "val_outlier_fraction"]
SPACE = {"learning_rate": od.FloatDistribution(1e-4, 1e-2, log=True)}


def _searcher(tmp_path, epochs=2, seed=0):
    return ResumableOptunaSearch(
        space=SPACE, sampler=optuna.samplers.TPESampler(seed=seed), study_name="s",
        storage=optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'optuna.db'}"), epochs=epochs,
        experiment_dir=str(tmp_path), seed=seed, metrics=METRICS, modes=["min", "min"],
    )


def _study(tmp_path) -> optuna.Study:
    return optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path / 'optuna.db'}")


def _epochs(searcher, trial_id, pairs, first=1):
    for epoch, (sigma, outliers) in enumerate(pairs, start=first):
        searcher.on_trial_result(trial_id, {"epoch": epoch, METRICS[0]: sigma, METRICS[1]: outliers})


# -- the searcher, without Ray -----------------------------------------------------


def test_a_two_objective_study_holds_the_best_epochs_pairs_and_its_front(tmp_path):
    searcher = _searcher(tmp_path)
    ids = [f"t_{i:05d}" for i in range(5)]
    for trial_id in ids:
        searcher.suggest(trial_id)
    # Best epoch by the first metric is the second: told that epoch's pair, not the better outliers of the first.
    _epochs(searcher, ids[0], [(0.05, 0.10), (0.03, 0.20)])
    searcher.on_trial_complete(ids[0], result={"epoch": 2, METRICS[0]: 0.03, METRICS[1]: 0.20})
    _epochs(searcher, ids[1], [(0.04, 0.05)])
    searcher.on_trial_result(ids[1], {"epoch": 2, METRICS[0]: 0.01})  # no second metric: the epoch does not count
    searcher.on_trial_complete(ids[1], result={"epoch": 3, METRICS[0]: 0.06, METRICS[1]: 0.04})
    _epochs(searcher, ids[2], [(0.05, 0.06), (0.045, 0.07)])  # dominated by ids[1]
    searcher.on_trial_complete(ids[2])
    _epochs(searcher, ids[3], [(0.01, 0.01)])
    searcher.on_trial_complete(ids[3], error=True)
    _epochs(searcher, ids[4], [(0.02, 0.02)])  # ended after epoch 1 of 2 without an error
    searcher.on_trial_complete(ids[4])

    study = _study(tmp_path)
    assert study.directions == [StudyDirection.MINIMIZE, StudyDirection.MINIMIZE]
    first, second, third, failed, pruned = study.trials
    assert first.state == second.state == third.state == TrialState.COMPLETE
    assert first.values == [0.03, 0.20] and second.values == [0.04, 0.05] and third.values == [0.045, 0.07]
    assert first.intermediate_values == {}  # Optuna keeps none for two objectives; the pairs are attributes
    assert first.user_attrs[EPOCHS_ATTR] == {"1": [0.05, 0.10], "2": [0.03, 0.20]}
    assert second.user_attrs[EPOCHS_ATTR] == {"1": [0.04, 0.05], "3": [0.06, 0.04]}
    assert first.user_attrs["zray_best_epoch"] == 2 and first.user_attrs["zray_best_values"] == [0.03, 0.20]
    assert first.user_attrs["zray_best_value"] == 0.03
    assert second.user_attrs["zray_best_epoch"] == 1
    assert failed.state == TrialState.FAIL and failed.values is None
    assert pruned.state == TrialState.PRUNED and pruned.values is None
    assert pruned.user_attrs["zray_best_values"] == [0.02, 0.02]
    assert sorted(t.number for t in study.best_trials) == [0, 1]


def test_maximised_and_minimised_objectives_take_their_directions(tmp_path):
    searcher = ResumableOptunaSearch(
        space=SPACE, sampler=optuna.samplers.RandomSampler(seed=0), study_name="s",
        storage=f"sqlite:///{tmp_path / 'optuna.db'}", epochs=1, metrics=["a", "b"], modes=["min", "max"])
    searcher.suggest("x_00000")
    searcher.on_trial_complete("x_00000", result={"epoch": 1, "a": 0.1, "b": 0.9})
    study = _study(tmp_path)
    assert study.directions == [StudyDirection.MINIMIZE, StudyDirection.MAXIMIZE]
    assert study.best_trials[0].values == [0.1, 0.9]
    with pytest.raises(ValueError, match="two metrics"):
        ResumableOptunaSearch(space=SPACE, storage=f"sqlite:///{tmp_path / 'o.db'}", metrics=["a"], modes=["min"])


def test_pickle_save_and_restore_continue_a_two_objective_search(tmp_path):
    before = _searcher(tmp_path, epochs=3)
    config_ = before.suggest("p_00000")
    before.suggest("p_00001")
    _epochs(before, "p_00000", [(0.05, 0.10)])
    _epochs(before, "p_00001", [(0.06, 0.03)])
    state = before.__getstate__()
    assert not any(isinstance(v, (optuna.Study, optuna.trial.Trial)) for v in state.values())
    blob = pickle.dumps(before)
    checkpoint = tmp_path / "searcher-state.json"
    before.save(str(checkpoint))
    saved = json.loads(checkpoint.read_text())
    assert saved["history"] == {"p_00000": {"1": 0.05}, "p_00001": {"1": 0.06}}
    assert saved["second"] == {"p_00000": {"1": 0.10}, "p_00001": {"1": 0.03}}
    _epochs(before, "p_00000", [(0.02, 0.30)], first=2)  # reached the study, not the pickle
    del before

    after = pickle.loads(blob)
    assert after.suggest("p_00000") == config_
    _epochs(after, "p_00000", [(0.09, 0.09), (0.04, 0.01)], first=2)  # epoch 2 again: the study's pair stays
    after.on_trial_complete("p_00000", result={"epoch": 3, METRICS[0]: 0.04, METRICS[1]: 0.01})
    first = _study(tmp_path).trials[0]
    assert first.state == TrialState.COMPLETE and first.values == [0.02, 0.30]
    assert first.user_attrs[EPOCHS_ATTR] == {"1": [0.05, 0.10], "2": [0.02, 0.30], "3": [0.04, 0.01]}

    restored = _searcher(tmp_path, epochs=3)
    restored.restore(str(checkpoint))
    _epochs(restored, "p_00001", [(0.07, 0.02), (0.08, 0.01)], first=2)
    restored.on_trial_complete("p_00001")
    second = _study(tmp_path).trials[1]
    assert second.state == TrialState.COMPLETE and second.values == [0.06, 0.03]
    assert second.user_attrs["zray_best_epoch"] == 1
    assert sorted(t.number for t in _study(tmp_path).best_trials) == [0, 1]


def test_pareto_front_of_records():
    def record(name, a, b):
        return {"trial": name, "best": {"m1": a, "m2": b}}

    records = [record("a", 0.1, 0.9), record("b", 0.2, 0.5), record("c", 0.2, 0.6), record("d", 0.3, 0.5),
               record("e", 0.2, 0.5), {"trial": "f", "best": {"m1": 0.05}}]
    front = pareto_front(records, [("m1", "min"), ("m2", "min")])
    assert [r["trial"] for r in front] == ["a", "b", "e"]  # equal pairs are both on it; f has no pair
    front = pareto_front(records, [("m1", "min"), ("m2", "max")])
    assert [r["trial"] for r in front] == ["a"]


# -- the config --------------------------------------------------------------------

BASE = {"name": "t", "model": "cnn", "data": {"path": "data/x", "image_size": 32},
        "search": {"learning_rate": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True}}}


def _load(tmp_path, tune: dict):
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump({**BASE, "tune": tune}))
    return config.load(path), path


def test_tune_metrics_are_accepted(tmp_path):
    space, _ = _load(tmp_path, {"metrics": METRICS, "sampler": "nsga2"})
    assert space.tune.metric == METRICS[0] and space.tune.mode == "min"
    assert space.tune.modes == ["min", "min"]
    assert space.tune.objectives == [(METRICS[0], "min"), (METRICS[1], "min")]
    dumped = space.model_dump(mode="json")
    assert config.validate(dumped, Path("x")).model_dump(mode="json") == dumped  # search_space.json reads back
    one, _ = _load(tmp_path, {"metric": "val_crps"})
    assert one.tune.metrics is None and "metrics" not in one.model_dump(mode="json")["tune"]


@pytest.mark.parametrize(("tune", "message"), [
    ({"metrics": [*METRICS, "val_crps"]}, "tune.metrics: expected exactly two metrics"),
    ({"metrics": ["val_sigma_mad", "val_sigma"]}, "tune.metrics: unknown metric 'val_sigma'; expected two of"),
    ({"metrics": ["val_crps", "val_crps"]}, "tune.metrics: names val_crps twice; expected two different metrics"),
    ({"metrics": METRICS, "scheduler": {"type": "asha"}},
     "tune.scheduler.type: ASHA stops trials on one metric but tune.metrics names two; expected none"),
    ({"metrics": METRICS, "scheduler": {"type": "median"}}, "tune.scheduler.type: median stopping stops trials"),
    ({"metrics": METRICS, "modes": ["min", "max"]}, "tune.modes: val_outlier_fraction is better when lower"),
    ({"metrics": METRICS, "metric": "val_crps"}, "tune.metric: is val_crps but tune.metrics starts with"),
    ({"modes": ["min", "min"]}, "tune.modes: belongs with tune.metrics"),
])
def test_a_bad_two_objective_config_is_one_sentence(tmp_path, tune, message):
    with pytest.raises(ZrayError) as info:
        _load(tmp_path, tune)
    text = str(info.value)
    assert text.startswith(f"{tmp_path / 'space.yaml'}: ") and message in text and "\n" not in text, text


# -- one real two-objective search -------------------------------------------------


@pytest.fixture(scope="module")
def pareto_search(ray_session, sim_data, tmp_path_factory):
    """2 trials of a tiny cnn (1 epoch each) searched on sigma_MAD and the outlier fraction, through
    `zray tune --warm-start` from an earlier two-objective study (built here with Optuna) of one
    complete trial, far off the front (both metrics 1.0), and one failed trial. One Ray search for
    the two features (each Ray search costs a minute on 2 cores)."""
    from click.testing import CliRunner

    from zray.cli import main
    from zray.search import SPACE_FILE, STUDY_FILE
    from zray.search.tuner import optuna_distributions

    tmp = tmp_path_factory.mktemp("pareto")
    space = {
        "name": "pareto",
        "model": "cnn",
        "data": {"path": str(sim_data), "image_size": 32},
        "fixed": {"epochs": 1, "batch_size": 32, "blocks": 2, "filters": 8, "dense_units": 32},
        "search": {"learning_rate": {"type": "categorical", "choices": [1.0e-3, 3.0e-3, 1.0e-2]}},
        "tune": {"metrics": METRICS, "num_samples": 2, "max_concurrent": 1, "seed": 0,
                 "scheduler": {"type": "none"}},
        "resources": {"num_workers": 1, "cpus_per_worker": 0.9, "trial_cpus": 0.1},
    }
    old = tmp / "runs" / "old"
    old.mkdir(parents=True)
    (tmp / "old.yaml").write_text(yaml.safe_dump({**space, "name": "old"}))
    old_space = config.load(tmp / "old.yaml")
    (old / SPACE_FILE).write_text(json.dumps(old_space.model_dump(mode="json")))
    study = optuna.create_study(storage=f"sqlite:///{old / STUDY_FILE}", study_name="old",
                                directions=["minimize", "minimize"])
    for state, lr, values in ((TrialState.COMPLETE, 1.0e-2, [1.0, 1.0]), (TrialState.FAIL, 3.0e-3, None)):
        study.add_trial(optuna.trial.create_trial(state=state, values=values, params={"learning_rate": lr},
                                                  distributions=optuna_distributions(old_space)))
    (tmp / "space.yaml").write_text(yaml.safe_dump(space))
    result = CliRunner().invoke(main, ["tune", str(tmp / "space.yaml"), "--storage", str(tmp / "runs"),
                                       "--warm-start", str(old)])
    assert result.exit_code == 0 and "Traceback" not in result.output, (result.output, repr(result.exception))
    experiment = tmp / "runs" / "pareto"
    return {"tmp": tmp, "experiment": experiment, "summary": search.summarize(experiment), "old": old,
            "output": result.output}


def _cli(*args):
    from click.testing import CliRunner

    from zray.cli import main

    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == 0 and "Traceback" not in result.output, result.output
    return result.output


def test_the_study_and_zray_agree_on_the_front(pareto_search):
    summary, experiment = pareto_search["summary"], pareto_search["experiment"]
    assert [r["status"] for r in summary["trials"]] == ["complete"] * 2
    study = optuna.load_study(study_name="pareto", storage=f"sqlite:///{experiment / 'optuna.db'}")
    assert study.directions == [StudyDirection.MINIMIZE, StudyDirection.MINIMIZE]
    by_name = {r["trial"]: r for r in summary["trials"]}
    fresh = [t for t in study.trials if warm_start.ATTR not in t.user_attrs]
    for trial in fresh:  # each told the pair of the epoch its checkpoint is ranked by
        record = by_name[trial.user_attrs["zray_trial"]]
        assert trial.values == pytest.approx([record["best"][m] for m in METRICS])
        assert trial.user_attrs["zray_best_checkpoint"] == record["best_checkpoint"]
    front = [r["trial"] for r in summary["pareto"]]
    assert front and sorted(t.user_attrs["zray_trial"] for t in study.best_trials) == sorted(front)
    assert {r["trial"] for r in summary["trials"] if r["pareto"]} == set(front)
    assert summary["best"]["trial"] == front[0] == summary["ranked"][0]["trial"]
    assert front[0] == min(front, key=lambda t: tuple(by_name[t]["best"][m] for m in METRICS))

    shown = _cli("status", experiment)
    assert "Pareto front" in shown and f"chosen: {front[0]}" in shown
    for name in front:
        assert any(line.strip().startswith(name) for line in shown.splitlines()), shown
    with (experiment / "results.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert {row["trial"]: row["pareto"] for row in rows} == {r["trial"]: str(r["pareto"]).lower()
                                                           for r in summary["trials"]}
    best = json.loads((experiment / "best.json").read_text())
    assert best["trial"] == front[0] and best["objectives"] == METRICS and "best val_sigma_mad" in best["rule"]
    assert [p["trial"] for p in best["pareto"]] == front


def test_a_warm_started_search_runs_only_its_new_trials(pareto_search):
    """The earlier complete trial is in the new study, marked, with both values; the failed one is
    not; Tune ran exactly num_samples new trials; status says where the study was seeded from."""
    experiment, old = pareto_search["experiment"], pareto_search["old"]
    assert f"warm-started from {old}" in pareto_search["output"]
    study = optuna.load_study(study_name="pareto", storage=f"sqlite:///{experiment / 'optuna.db'}")
    earlier = [t for t in study.trials if t.user_attrs.get(warm_start.ATTR) == str(old)]
    assert [(t.state, t.params, t.values) for t in earlier] == [
        (TrialState.COMPLETE, {"learning_rate": 1.0e-2}, [1.0, 1.0])]
    fresh = [t for t in study.trials if warm_start.ATTR not in t.user_attrs]
    assert len(fresh) == 2 and {t.state for t in fresh} == {TrialState.COMPLETE}
    assert len(list((experiment / "trials").glob("trial-*"))) == 2  # Tune ran only the new ones
    assert len(list(experiment.glob("trial-*"))) == 2
    shown = _cli("status", experiment)
    assert f"warm-started from {old}: 1 earlier trials in the study" in shown
    assert "trials      2 of 2: 2 complete" in shown


def test_export_takes_the_rules_choice_or_the_named_trial(pareto_search):
    tmp, experiment, summary = pareto_search["tmp"], pareto_search["experiment"], pareto_search["summary"]
    other = next((r["trial"] for r in summary["ranked"][1:]), summary["best"]["trial"])
    _cli("export", experiment, "--out", tmp / "chosen", "--no-calibrate")
    _cli("export", experiment, "--trial", other, "--out", tmp / "other", "--no-calibrate")
    chosen = json.loads((tmp / "chosen" / "bundle.json").read_text())
    named = json.loads((tmp / "other" / "bundle.json").read_text())
    assert chosen["members"][0]["trial"] == summary["best"]["trial"]
    assert named["members"][0]["trial"] == other

    from click.testing import CliRunner

    from zray.cli import main

    result = CliRunner().invoke(main, ["export", str(experiment), "--trial", "trial-nope", "--out",
                                       str(tmp / "nope")])
    assert result.exit_code != 0 and "--trial trial-nope: names no trial" in result.output
    assert not (tmp / "nope").exists()


def test_status_results_and_best_of_a_two_objective_folder(tmp_path):
    """zray's own records, without Ray or Optuna: the front, the rule's choice, results.csv and best.json."""
    from zray import search

    space, _ = _load(tmp_path, {"metrics": ["val_crps", "val_outlier_fraction"], "num_samples": 4})
    experiment = tmp_path / "runs" / "t"
    experiment.mkdir(parents=True)
    (experiment / search.SPACE_FILE).write_text(json.dumps(space.model_dump(mode="json")))
    epochs = {"a": [(0.03, 0.20)], "b": [(0.05, 0.01), (0.04, 0.30)], "c": [(0.06, 0.02)], "d": [(0.03, 0.10)]}
    for name, pairs in epochs.items():
        folder = experiment / f"trial-{name}-0000{len(name)}"
        folder.mkdir()
        (folder / "params.json").write_text(json.dumps({"learning_rate": 0.001, "epochs": 2}))
        (folder / "result.json").write_text("".join(
            json.dumps({"epoch": e, "val_crps": c, "val_outlier_fraction": o, "val_sigma_mad": 0.1}) + "\n"
            for e, (c, o) in enumerate(pairs, 1)))
    summary = search.summarize(experiment)
    # Best epochs by val_crps: a (0.03, 0.20), b epoch 2 (0.04, 0.30), c (0.06, 0.02), d (0.03, 0.10).
    assert [r["trial"] for r in summary["pareto"]] == ["trial-d-00001", "trial-c-00001"]
    assert [r["trial"] for r in summary["ranked"]] == ["trial-d-00001", "trial-c-00001", "trial-a-00001",
                                                       "trial-b-00001"]
    assert summary["best"]["trial"] == "trial-d-00001"
    assert summary["rule"] == "the Pareto front's trial with the best val_crps (ties: the better val_outlier_fraction)"
    search.write_results(summary)
    text = search.format_summary(summary)
    assert "Pareto front (2 trial(s)" in text and "chosen: trial-d-00001, the Pareto front's trial" in text
    assert "crps" in text.splitlines()[3]  # the ranking's header names the objective it lacked
    with (experiment / "results.csv").open() as handle:
        assert {row["trial"]: row["pareto"] for row in csv.DictReader(handle)} == {
            "trial-a-00001": "false", "trial-b-00001": "false", "trial-c-00001": "true", "trial-d-00001": "true"}
    best = json.loads((experiment / "best.json").read_text())
    assert best["trial"] == "trial-d-00001" and best["objectives"] == ["val_crps", "val_outlier_fraction"]
    assert best["pareto"] == [{"trial": "trial-d-00001", "val_crps": 0.03, "val_outlier_fraction": 0.10},
                              {"trial": "trial-c-00001", "val_crps": 0.06, "val_outlier_fraction": 0.02}]
    from zray.export import candidates

    with pytest.raises(ZrayError, match=r"^--trial trial-d-00001: has no scored checkpoint in .*; expected one of its "
                                        r"trials with a checkpoint \(none\)$"):
        candidates(experiment, trial="trial-d-00001")
    with pytest.raises(ZrayError, match=r"^--trial x: .* is not a search \(no search_space.json\); expected runs/NAME"):
        candidates(tmp_path, trial="x")

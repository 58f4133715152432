"""The Optuna study is a faithful record of the search: states, values, every epoch, where the model is.

The searcher is driven here the way Tune drives it (suggest, a result per
epoch, complete; pickled in Tune's experiment state and saved and restored
with save/restore across a driver restart), with a real Optuna study in
SQLite read back with Optuna's own API, so each rule is checked exactly; the
search tests check the same against a real `zray tune`.
"""

from __future__ import annotations

import json
import pickle

import optuna
import optuna.distributions as od
import pytest
from optuna.trial import TrialState
from ray.tune.search import ConcurrencyLimiter

from zray.search.optuna_study import ResumableOptunaSearch

SPACE = {
    "learning_rate": od.FloatDistribution(1e-4, 1e-2, log=True),
    "filters": od.IntDistribution(16, 64, step=16),
    "batch_size": od.CategoricalDistribution([64, 128]),
}


def _searcher(tmp_path, epochs=3, mode="min", seed=0):
    return ResumableOptunaSearch(
        space=SPACE, metric="val_sigma_mad", mode=mode, sampler=optuna.samplers.RandomSampler(seed=seed),
        study_name="s", storage=optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'optuna.db'}"),
        epochs=epochs, experiment_dir=str(tmp_path), seed=seed,
    )


def _trials(tmp_path) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path / 'optuna.db'}").trials


def _checkpoint(tmp_path, trial: str, epoch: int, value: float) -> str:
    folder = tmp_path / "trials" / trial / f"checkpoint_{epoch}"
    (folder / "tf").mkdir(parents=True)
    (folder / "tf" / "ckpt.index").write_bytes(b"x")
    state = {"epoch": epoch - 1, "metrics": {"val_sigma_mad": value},
             "files": {"tf/ckpt.index": 1}}
    (folder / "state.json").write_text(json.dumps(state))
    return str(folder)


def _epochs(searcher, trial_id, values, first=1):
    for epoch, value in enumerate(values, start=first):
        searcher.on_trial_result(trial_id, {"epoch": epoch, "val_sigma_mad": value})


def test_suggest_gives_plain_values_of_the_space(tmp_path):
    searcher = _searcher(tmp_path)
    config = searcher.suggest("run_00000")
    assert set(config) == set(SPACE)
    assert type(config["learning_rate"]) is float and 1e-4 <= config["learning_rate"] <= 1e-2
    assert type(config["filters"]) is int and config["filters"] in (16, 32, 48, 64)
    assert config["batch_size"] in (64, 128)
    assert searcher.suggest("run_00000") == config  # the same trial, asked again
    (trial,) = _trials(tmp_path)
    assert trial.state == TrialState.RUNNING and trial.params == config


def test_states_values_intermediates_and_attributes(tmp_path):
    searcher = _searcher(tmp_path)
    ids = ["run_00000", "run_00001", "run_00002", "run_00003", "run_00004"]
    for trial_id in ids:
        searcher.suggest(trial_id)
    # Completes all 3 epochs; its best epoch is the second.
    best = _checkpoint(tmp_path, "trial-aaa-00000", 2, 0.02)
    _checkpoint(tmp_path, "trial-aaa-00000", 3, 0.03)
    _epochs(searcher, ids[0], [0.05, 0.02])
    searcher.on_trial_complete(ids[0], result={"epoch": 3, "val_sigma_mad": 0.03})  # last epoch: only here
    # Stopped by the scheduler after epoch 1 (Tune does not pass that result to on_trial_result).
    searcher.on_trial_complete(ids[1], result={"epoch": 1, "val_sigma_mad": 0.06})
    # Stopped after epoch 2, worse than epoch 1.
    _epochs(searcher, ids[2], [0.04])
    searcher.on_trial_complete(ids[2], result={"epoch": 2, "val_sigma_mad": 0.08})
    # Failed in epoch 2.
    _epochs(searcher, ids[3], [0.07])
    searcher.on_trial_complete(ids[3], error=True)
    # Reported no usable metric (NaN, none, no epoch) and ended without an error.
    searcher.on_trial_result(ids[4], {"epoch": 1, "val_sigma_mad": float("nan")})
    searcher.on_trial_result(ids[4], {"epoch": 2})
    searcher.on_trial_result(ids[4], {"val_sigma_mad": 0.01})
    searcher.on_trial_complete(ids[4], result={"epoch": 3, "val_sigma_mad": None})

    done, pruned, pruned_later, failed, empty = _trials(tmp_path)
    assert done.state == TrialState.COMPLETE
    assert done.value == 0.02  # the best epoch, as zray ranks
    assert done.intermediate_values == {1: 0.05, 2: 0.02, 3: 0.03}
    assert done.user_attrs == {"zray_trial": "trial-aaa-00000", "zray_best_epoch": 2, "zray_best_value": 0.02,
                               "zray_best_checkpoint": best}
    assert pruned.state == TrialState.PRUNED
    assert pruned.value == 0.06 and pruned.intermediate_values == {1: 0.06}
    assert pruned.user_attrs == {"zray_trial": None, "zray_best_epoch": 1, "zray_best_value": 0.06,
                                 "zray_best_checkpoint": None}  # no trial folder
    # Optuna sets a PRUNED trial's value to its last epoch's; the best is in the attributes.
    assert pruned_later.state == TrialState.PRUNED and pruned_later.intermediate_values == {1: 0.04, 2: 0.08}
    assert pruned_later.value == 0.08
    assert pruned_later.user_attrs["zray_best_epoch"] == 1 and pruned_later.user_attrs["zray_best_value"] == 0.04
    assert failed.state == TrialState.FAIL and failed.value is None and failed.intermediate_values == {1: 0.07}
    assert failed.user_attrs["zray_best_epoch"] == 1
    assert empty.state == TrialState.FAIL and empty.intermediate_values == {}
    assert empty.user_attrs["zray_best_epoch"] is None
    assert optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path / 'optuna.db'}"
                             ).best_trial.number == done.number


def test_each_epoch_is_reported_once_and_a_repeated_completion_changes_nothing(tmp_path):
    searcher = _searcher(tmp_path, epochs=1)
    searcher.suggest("r_00000")
    searcher.on_trial_result("r_00000", {"epoch": 1, "val_sigma_mad": 0.04})
    searcher.on_trial_result("r_00000", {"epoch": 1, "val_sigma_mad": 0.09})  # the same epoch again
    searcher.on_trial_complete("r_00000", result={"epoch": 1, "val_sigma_mad": 0.05})
    searcher.on_trial_result("r_00000", {"epoch": 1, "val_sigma_mad": 0.05})
    searcher.on_trial_result("r_00000", {"epoch": 2, "val_sigma_mad": 0.01})
    searcher.on_trial_complete("r_00000", result={"epoch": 2, "val_sigma_mad": 0.01})
    searcher.on_trial_complete("r_00000", error=True)
    searcher.on_trial_complete("never_suggested", result={"epoch": 1, "val_sigma_mad": 0.01})
    (trial,) = _trials(tmp_path)
    assert trial.state == TrialState.COMPLETE
    assert trial.value == 0.04 and trial.intermediate_values == {1: 0.04}


def test_mode_max_takes_the_highest_epoch(tmp_path):
    searcher = _searcher(tmp_path, mode="max")
    searcher.suggest("m_00000")
    searcher.suggest("m_00001")
    _epochs(searcher, "m_00000", [0.5, 0.9])
    searcher.on_trial_complete("m_00000", result={"epoch": 3, "val_sigma_mad": 0.7})
    _epochs(searcher, "m_00001", [0.6, 0.8, 0.85])
    searcher.on_trial_complete("m_00001", result={"epoch": 3, "val_sigma_mad": 0.85})
    first, second = _trials(tmp_path)
    assert first.state == second.state == TrialState.COMPLETE
    assert first.value == 0.9 and first.user_attrs["zray_best_epoch"] == 2
    assert second.value == 0.85 and second.user_attrs["zray_best_epoch"] == 3
    study = optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    assert study.direction == optuna.study.StudyDirection.MAXIMIZE
    assert study.best_trial.number == first.number


def test_a_pickled_searcher_continues_the_same_trials(tmp_path):
    """Tune's experiment state holds the pickled searcher: unpickled in a new driver
    it reports to and finishes the Optuna trials the old one asked for."""
    before = _searcher(tmp_path)
    configs = [before.suggest(f"p_{i:05d}") for i in range(2)]
    _epochs(before, "p_00000", [0.05])
    _epochs(before, "p_00001", [0.06, 0.03])
    state = before.__getstate__()
    assert not any(isinstance(v, (optuna.Study, optuna.trial.Trial)) for v in state.values())
    blob = pickle.dumps(before)
    # After the save the old driver still reported an epoch and asked for a trial, then died.
    _epochs(before, "p_00000", [0.01], first=2)
    lost = before.suggest("p_00002")  # the restored searcher never heard of it
    del before

    after = pickle.loads(blob)
    assert after.suggest("p_00000") == configs[0]
    # Resumed from its epoch-1 checkpoint, the trial runs epoch 2 again: the study keeps the first value.
    _epochs(after, "p_00000", [0.04, 0.02], first=2)
    after.on_trial_complete("p_00000", result={"epoch": 3, "val_sigma_mad": 0.02})
    _epochs(after, "p_00001", [0.03], first=2)  # epoch 2 again (resumed from an earlier checkpoint)
    after.on_trial_complete("p_00001", result={"epoch": 2, "val_sigma_mad": 0.03})
    # The seeded sampler continues from where it was saved: it proposes the lost trial's point again.
    assert after.suggest("p_00003") == lost

    first, second, orphan, new = _trials(tmp_path)
    assert (first.number, second.number, new.number) == (0, 1, 3)
    assert first.state == TrialState.COMPLETE and first.value == 0.01
    assert first.intermediate_values == {1: 0.05, 2: 0.01, 3: 0.02}
    assert first.user_attrs["zray_best_epoch"] == 2 and first.user_attrs["zray_best_value"] == 0.01
    assert second.state == TrialState.PRUNED and second.intermediate_values == {1: 0.06, 2: 0.03}
    assert second.user_attrs["zray_best_epoch"] == 2
    assert orphan.state == new.state == TrialState.RUNNING and new.params == lost


def test_save_and_restore_continue_the_same_trials_through_tunes_wrapper(tmp_path):
    """What ``--resume`` does: a searcher as Tune unpickles it from tuner.pkl (fresh),
    wrapped in Tune's ConcurrencyLimiter, restored from the searcher checkpoint file."""
    limited = ConcurrencyLimiter(_searcher(tmp_path), max_concurrent=1)
    config = limited.suggest("c_00000")
    assert limited.suggest("c_00001") is None  # Tune's limit, not a new Optuna trial
    _epochs(limited, "c_00000", [0.05, 0.04])
    checkpoint = tmp_path / "searcher-state.json"
    limited.save(str(checkpoint))
    saved = json.loads(checkpoint.read_text())  # plain JSON: nothing is unpickled from it
    assert saved["numbers"] == {"c_00000": 0} and saved["history"] == {"c_00000": {"1": 0.05, "2": 0.04}}
    # The old driver went on: epoch 3 and the completion reached the study, not the checkpoint.
    limited.on_trial_complete("c_00000", result={"epoch": 3, "val_sigma_mad": 0.03})
    (told,) = _trials(tmp_path)

    fresh = pickle.loads(pickle.dumps(ConcurrencyLimiter(_searcher(tmp_path), max_concurrent=1)))
    fresh.restore(str(checkpoint))
    fresh.searcher.on_trial_result("c_00000", {"epoch": 3, "val_sigma_mad": 0.01})
    fresh.searcher.on_trial_complete("c_00000", result={"epoch": 3, "val_sigma_mad": 0.01})
    (again,) = _trials(tmp_path)
    assert again.state == told.state == TrialState.COMPLETE  # a repeated completion changes nothing
    assert again.value == told.value == 0.03
    assert again.intermediate_values == told.intermediate_values == {1: 0.05, 2: 0.04, 3: 0.03}
    assert again.user_attrs == told.user_attrs and again.params == config

    # Restored before the completion reached the study: the restored searcher finishes the same trial.
    # Its sampler is seeded again from the seed and the trials asked: not the search's first point again.
    assert fresh.searcher.suggest("c_00001") != config
    _epochs(fresh.searcher, "c_00001", [0.05])
    fresh.searcher.save(str(checkpoint))
    other = _searcher(tmp_path)
    other.restore(str(checkpoint))
    _epochs(other, "c_00001", [0.02], first=2)
    other.on_trial_complete("c_00001", result={"epoch": 3, "val_sigma_mad": 0.04})
    _, finished = _trials(tmp_path)
    assert finished.number == 1 and finished.state == TrialState.COMPLETE and finished.value == 0.02
    assert finished.intermediate_values == {1: 0.05, 2: 0.02, 3: 0.04}


@pytest.mark.parametrize("content", ['{"numbers": {"t_1": "x"}, "finished": [], "history": {}}',
                                     '{"numbers": {}, "finished": [], "history": {"t_1": {"1": NaN}}}',
                                     '{"numbers": {}', '[1, 2]'])
def test_an_unreadable_saved_search_state_is_one_sentence(tmp_path, content):
    """A cut-short or edited searcher-state file stops the resume with a sentence naming it,
    and leaves the searcher's state as it was."""
    from zray.errors import ZrayError

    searcher = _searcher(tmp_path)
    searcher.suggest("t_00000")
    bad = tmp_path / "searcher-state.json"
    bad.write_text(content)
    with pytest.raises(ZrayError, match="unreadable search state"):
        searcher.restore(str(bad))
    assert searcher.suggest("t_00000") == searcher.suggest("t_00000")

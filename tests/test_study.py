"""The Optuna study is a faithful record of the search: states, values, every epoch, where the model is.

The searcher is driven here the way Tune drives it (suggest, a result per
epoch, complete), with a real Optuna study in SQLite, so each rule is checked
exactly; the search tests check the same against a real `zray tune`.
"""

from __future__ import annotations

import json

import optuna
import optuna.distributions as od

from zray.search.optuna_study import ResumableOptunaSearch


def _searcher(tmp_path, epochs=3):
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'optuna.db'}")
    searcher = ResumableOptunaSearch(
        space={"learning_rate": od.FloatDistribution(1e-4, 1e-2, log=True)},
        metric="val_sigma_mad", mode="min", sampler=optuna.samplers.RandomSampler(seed=0),
        study_name="s", storage=storage, epochs=epochs, experiment_dir=str(tmp_path),
    )
    return searcher, storage


def _checkpoint(tmp_path, trial: str, epoch: int, value: float) -> str:
    folder = tmp_path / "trials" / trial / f"checkpoint_{epoch}"
    (folder / "tf").mkdir(parents=True)
    (folder / "tf" / "ckpt.index").write_bytes(b"x")
    state = {"epoch": epoch - 1, "metrics": {"val_sigma_mad": value},
             "files": {"tf/ckpt.index": 1}}
    (folder / "state.json").write_text(json.dumps(state))
    return str(folder)


def test_states_values_intermediates_and_attributes(tmp_path):
    searcher, _ = _searcher(tmp_path)
    ids = ["run_00000", "run_00001", "run_00002"]
    for trial_id in ids:
        assert searcher.suggest(trial_id)["learning_rate"] > 0
    # Completes all 3 epochs; its best epoch is the second.
    best = _checkpoint(tmp_path, "trial-aaa-00000", 2, 0.02)
    _checkpoint(tmp_path, "trial-aaa-00000", 3, 0.03)
    for epoch, value in ((1, 0.05), (2, 0.02)):
        searcher.on_trial_result(ids[0], {"epoch": epoch, "val_sigma_mad": value})
    searcher.on_trial_complete(ids[0], result={"epoch": 3, "val_sigma_mad": 0.03})  # last epoch: only here
    # Stopped by the scheduler after epoch 1 (Tune does not pass that result to on_trial_result).
    searcher.on_trial_complete(ids[1], result={"epoch": 1, "val_sigma_mad": 0.06})
    # Failed in epoch 2.
    searcher.on_trial_result(ids[2], {"epoch": 1, "val_sigma_mad": 0.07})
    searcher.on_trial_complete(ids[2], error=True)

    study = optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    done, pruned, failed = study.trials
    assert done.state == optuna.trial.TrialState.COMPLETE
    assert done.value == 0.02  # the best epoch, as zray ranks
    assert done.intermediate_values == {1: 0.05, 2: 0.02, 3: 0.03}
    assert done.user_attrs == {"zray_trial": "trial-aaa-00000", "zray_best_epoch": 2, "zray_best_checkpoint": best}
    assert pruned.state == optuna.trial.TrialState.PRUNED
    assert pruned.value == 0.06 and pruned.intermediate_values == {1: 0.06}
    assert failed.state == optuna.trial.TrialState.FAIL and failed.intermediate_values == {1: 0.07}
    assert study.best_trial.number == done.number


def test_a_repeated_completion_after_a_restart_changes_nothing(tmp_path):
    searcher, _ = _searcher(tmp_path, epochs=1)
    searcher.suggest("r_00000")
    searcher.on_trial_complete("r_00000", result={"epoch": 1, "val_sigma_mad": 0.04})
    searcher.on_trial_result("r_00000", {"epoch": 1, "val_sigma_mad": 0.05})
    searcher.on_trial_complete("r_00000", result={"epoch": 1, "val_sigma_mad": 0.05})
    trial = optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path / 'optuna.db'}").trials[0]
    assert trial.value == 0.04 and trial.intermediate_values == {1: 0.04}

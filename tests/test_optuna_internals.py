"""The Optuna internals trainers/sweeps/optuna_internals.py relies on are still where it looks for them.

Each check names the internal, so an Optuna release that moves one fails here by name,
before a sweep meets it.
"""

import inspect

import optuna
from optuna.trial import TrialState

from trainers.sweeps import optuna_internals as internals


def _study() -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(storage=optuna.storages.InMemoryStorage(), direction="maximize")
    study.enqueue_trial({"lr": 0.1})
    return study


def test_study_storage_is_the_storage_the_study_writes_to():
    study = _study()
    assert isinstance(internals.storage(study), optuna.storages.BaseStorage), "Study._storage"


def test_a_queued_trial_is_taken_by_id_and_runs_as_a_trial():
    study = _study()
    (waiting,) = study.get_trials(states=(TrialState.WAITING,))
    trial_id = internals.trial_id(waiting)  # FrozenTrial._trial_id
    assert internals.storage(study).set_trial_state_values(trial_id, state=TrialState.RUNNING)

    trial = internals.running_trial(study, trial_id)  # optuna.Trial(study, trial_id)

    assert list(inspect.signature(optuna.Trial).parameters)[:2] == ["study", "trial_id"], "optuna.Trial(study, trial_id)"
    assert internals.trial_id(trial) == trial_id, "Trial._trial_id"
    assert trial.suggest_float("lr", 0.01, 1.0) == 0.1  # the queued settings
    study.tell(trial, 0.5)
    assert [t.state for t in study.get_trials()] == [TrialState.COMPLETE]  # no trial was created

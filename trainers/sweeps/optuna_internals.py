"""The few Optuna internals the sweep relies on, each in one place with the public API it stands in for.

A sweep's workers take trials that were queued in advance and never create one (so a
grid point runs once however many workers share it). Optuna's public ``Study.ask()``
takes a queued trial too, but creates a new one when none is queued, and its storage
calls need a trial's id, which Optuna keeps private. ``tests/test_sweep.py`` checks
that every name used here still exists, so an Optuna release that moves one fails a
test that names it.
"""

from __future__ import annotations

import optuna
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial


def storage(study: optuna.Study) -> BaseStorage:
    """The study's storage: ``study._storage`` (no public accessor; ``Study.optimize`` uses it)."""
    return study._storage


def trial_id(trial: optuna.Trial | FrozenTrial) -> int:
    """A trial's id in its storage: ``trial._trial_id`` (public storage methods take it)."""
    return trial._trial_id


def running_trial(study: optuna.Study, trial_id: int) -> optuna.Trial:
    """The ``optuna.Trial`` for a trial this process set RUNNING: what ``Study.ask()`` returns
    for a queued trial, without its creating one when the queue is empty."""
    return optuna.Trial(study, trial_id)

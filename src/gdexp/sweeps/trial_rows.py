"""Many trials' rows in one write: Optuna's storage writes an attribute or a report per
transaction; a study writes dozens per batch (each trial's host and pid as it is asked, its run and
its theory as it is told, a pruned population's reports), so these go in one transaction, each row
written by Optuna's own storage code."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from optuna import Study


def write_rows(
    study: Study,
    values: Mapping[int, Mapping[int, float]] | None = None,
    system: Mapping[int, Mapping[str, Any]] | None = None,
    user: Mapping[int, Mapping[str, Any]] | None = None,
) -> None:
    """Trials' intermediate values (trial id -> step -> value), system and user attributes (trial
    id -> key -> value): one transaction on a database, a call each on any other storage."""
    from optuna.storages import RDBStorage

    storage = study._storage
    backend = getattr(storage, "_backend", storage)  # Optuna's cache reads unfinished trials back
    values, system, user = values or {}, system or {}, user or {}
    if isinstance(backend, RDBStorage):
        from optuna.storages._rdb import models
        from optuna.storages._rdb.storage import _create_scoped_session

        with _create_scoped_session(backend.scoped_session, True) as session:
            for trial_id, steps in values.items():
                for step, value in steps.items():
                    backend._set_trial_intermediate_value_without_commit(session, trial_id, step, value)
            for model, attrs in ((models.TrialSystemAttributeModel, system), (models.TrialUserAttributeModel, user)):
                for trial_id, pairs in attrs.items():
                    for key, value in pairs.items():
                        backend._set_trial_attr_without_commit(session, model, trial_id, key, value)
        return
    for trial_id, steps in values.items():
        for step, value in steps.items():
            storage.set_trial_intermediate_value(trial_id, step, value)
    for trial_id, pairs in system.items():
        for key, value in pairs.items():
            storage.set_trial_system_attr(trial_id, key, value)
    for trial_id, pairs in user.items():
        for key, value in pairs.items():
            storage.set_trial_user_attr(trial_id, key, value)

"""A trial event of the ledger is one storage transaction, and reads back exactly as Optuna's
own one-attribute-at-a-time writes do (real SQLite and journal-file storages)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
import pytest

from orchestrator.stores.ledger import write

ATTRS: dict[str, Any] = {
    "ftsweep.request": '{"key": "k"}',
    "ftsweep.worker": "host:1",
    "ftsweep.heartbeat": 1.5,
    "ftsweep.checkpoints": {"1": {"step": 3, "model": "m"}},
}


def _storage(kind: str, tmp_path: Path) -> Any:
    if kind == "sqlite":
        return optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'o.db'}")
    return optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(tmp_path / "o.log"))
    )


def _two_trials(kind: str, tmp_path: Path) -> tuple[Any, optuna.Trial, optuna.Trial]:
    """A storage and two trials of one study: one for the ledger, one for Optuna's calls."""
    storage = _storage(kind, tmp_path)
    study = optuna.create_study(study_name="s", storage=storage)
    return storage, study.ask(), study.ask()


@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_the_values_read_back_as_set_user_attr_and_report_write_them(
    kind: str, tmp_path: Path
) -> None:
    storage, ours, theirs = _two_trials(kind, tmp_path)
    write(ours, ATTRS, {1: 0.5, 2: 0.25})
    for key, value in ATTRS.items():
        theirs.set_user_attr(key, value)
    theirs.report(0.5, 1)
    theirs.report(0.25, 2)
    assert ours.user_attrs == ATTRS  # the trial's own view is current
    again = optuna.load_study(study_name="s", storage=_storage(kind, tmp_path))
    a, b = again.trials
    assert a.user_attrs == b.user_attrs == ATTRS
    assert a.intermediate_values == b.intermediate_values == {1: 0.5, 2: 0.25}
    write(ours, {"ftsweep.heartbeat": 2.5})  # an update of one already written
    assert (
        optuna.load_study(study_name="s", storage=storage).trials[0].user_attrs["ftsweep.heartbeat"]
        == 2.5
    )


def test_one_commit_on_sqlite(tmp_path: Path) -> None:
    import sqlalchemy

    storage = _storage("sqlite", tmp_path)
    study = optuna.create_study(study_name="s", storage=storage)
    trial = study.ask()
    commits: list[int] = []
    sqlalchemy.event.listen(storage.engine, "commit", lambda conn: commits.append(1))
    write(trial, ATTRS, {1: 0.5})
    assert len(commits) == 1
    commits.clear()
    for key, value in ATTRS.items():  # what it replaces: one commit per attribute
        trial.set_user_attr(key, value)
    assert len(commits) == len(ATTRS)


@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_infinite_nan_and_rewritten_values_read_back_as_report_writes_them(
    kind: str, tmp_path: Path
) -> None:
    import math

    _, ours, theirs = _two_trials(kind, tmp_path)
    steps = {1: math.inf, 2: -math.inf, 3: math.nan, 4: 0.5}
    write(ours, {"a": 1}, steps)
    write(ours, {"a": 2, "b": None}, {4: 0.25, 5: 1.0})  # one step again, one new
    for step, value in {**steps, 4: 0.25, 5: 1.0}.items():
        theirs.storage.set_trial_intermediate_value(theirs._trial_id, step, value)
    theirs.set_user_attr("a", 2)
    theirs.set_user_attr("b", None)
    a, b = optuna.load_study(study_name="s", storage=_storage(kind, tmp_path)).trials
    assert a.user_attrs == b.user_attrs == {"a": 2, "b": None}
    assert repr(a.intermediate_values) == repr(b.intermediate_values)
    assert math.isnan(a.intermediate_values[3]) and a.intermediate_values[2] == -math.inf

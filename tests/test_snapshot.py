"""The plain-query reader of ``status``/``report`` (orchestrator/stores/snapshot.py) reads exactly
what Optuna's RDB storage reads, and writes nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
import pytest

from orchestrator.stores.snapshot import StoreReader
from tests.studies import fill


def canonical(value: Any) -> str:
    """``repr`` with every mapping's keys sorted (the order of a trial's attributes is the
    database's, not part of what is stored), NaN equal to NaN."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k!r}: {canonical(value[k])}" for k in sorted(value)) + "}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(canonical(v) for v in value) + "]"
    return repr(value)


def same_as_optuna(url: str, name: str = "s") -> None:
    fill(url, name)
    reader = StoreReader(url)
    mine = reader.study(name)
    theirs = optuna.load_study(study_name=name, storage=url)
    got, want = mine.get_trials(deepcopy=False), theirs.get_trials(deepcopy=False)
    assert [t.state for t in got] == [t.state for t in want]
    for a, b in zip(got, want, strict=True):  # FrozenTrial's == treats NaN as unequal
        assert canonical(a.__dict__) == canonical(b.__dict__)
    assert mine.user_attrs == theirs.user_attrs
    assert mine._storage.get_study_system_attrs(mine._study_id) == {"sys": "x"}
    assert mine.directions == theirs.directions
    assert mine.best_trial.number == theirs.best_trial.number
    studies = {s.study_name: s for s in optuna.storages.RDBStorage(url).get_all_studies()}
    for s in reader.get_all_studies():
        o = studies.pop(s.study_name)
        assert (s._study_id, s.directions, s.user_attrs, s.system_attrs) == (
            o._study_id,
            o.directions,
            o.user_attrs,
            o.system_attrs,
        )
        assert len(reader.get_all_trials(s._study_id)) == len(
            optuna.load_study(study_name=s.study_name, storage=url).trials
        )
    assert not studies


def test_reads_what_optuna_reads(tmp_path: Path) -> None:
    same_as_optuna(f"sqlite:///{tmp_path / 'o.db'}")


def test_is_read_only(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'o.db'}"
    fill(url)
    before = (tmp_path / "o.db").read_bytes()
    study = StoreReader(url).study("s")
    with pytest.raises(RuntimeError, match="read-only"):
        study.set_user_attr("x", 1)
    with pytest.raises(RuntimeError, match="read-only"):
        study.ask()
    assert (tmp_path / "o.db").read_bytes() == before
    with pytest.raises(KeyError):
        StoreReader(url).study("nope")


def test_refuses_a_schema_it_does_not_know(tmp_path: Path) -> None:
    import sqlite3

    url = f"sqlite:///{tmp_path / 'o.db'}"
    fill(url)
    with sqlite3.connect(tmp_path / "o.db") as db:
        db.execute("UPDATE version_info SET schema_version = 99")
    with pytest.raises(RuntimeError, match="schema is version 99"):
        StoreReader(url)

"""The plain-query reader of ``status``/``report`` (orchestrator/stores/snapshot.py) reads exactly
what Optuna's RDB storage reads, and writes nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
import pytest

from orchestrator.core.urls import sqlite_path
from orchestrator.stores.snapshot import StoreReader, reader
from orchestrator.stores.sqlite_reader import SQLITE_SCHEMA_VERSION, SqliteReader
from tests.studies import fill


def canonical(value: Any) -> str:
    """``repr`` with every mapping's keys sorted (the order of a trial's attributes is the
    database's, not part of what is stored), NaN equal to NaN."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k!r}: {canonical(value[k])}" for k in sorted(value)) + "}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(canonical(v) for v in value) + "]"
    return repr(value)


def same_as_optuna(url: str, name: str = "s", plain: bool = False) -> None:
    fill(url, name)
    reader: Any = StoreReader(url)
    if plain:  # the SQLite file through sqlite3 (no SQLAlchemy)
        path = sqlite_path(url)
        assert path is not None
        reader = SqliteReader.open(path)
        assert isinstance(reader, SqliteReader)
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


def test_the_sqlite_reader_reads_what_optuna_reads(tmp_path: Path) -> None:
    same_as_optuna(f"sqlite:///{tmp_path / 'o.db'}", plain=True)


def test_the_sqlite_reader_knows_this_optunas_schema() -> None:
    """Its queries are those of one schema version: this Optuna's (when Optuna changes its
    tables, this fails, and the queries are checked against the new ones)."""
    from orchestrator.stores.optuna_internals import rdb_schema

    models = rdb_schema()
    assert models is not None and models.SCHEMA_VERSION == SQLITE_SCHEMA_VERSION


def test_a_sqlite_store_is_read_without_sqlalchemy(tmp_path: Path) -> None:
    """``reader``/``read_study`` on a SQLite file of the known schema import neither
    SQLAlchemy nor Optuna's models (a fresh process: what ``ftsweep run`` pays)."""
    import subprocess
    import sys

    url = f"sqlite:///{tmp_path / 'o.db'}"
    fill(url)
    code = (
        "import sys\n"
        "from orchestrator.stores.snapshot import read_study, reader\n"
        f"study = read_study({url!r}, 's')\n"
        "assert len(study.trials) == 6 and study.user_attrs['after'] == 1\n"
        f"names = {{s.study_name for s in reader({url!r}).get_all_studies()}}\n"
        "assert names == {'s', 's-other'}\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'sqlalchemy'))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.strip() == "[]"


def test_a_sqlite_file_of_another_schema_is_left_to_optunas_models(tmp_path: Path) -> None:
    import sqlite3

    url = f"sqlite:///{tmp_path / 'o.db'}"
    fill(url)
    with sqlite3.connect(tmp_path / "o.db") as db:
        db.execute("UPDATE version_info SET schema_version = 99")
    assert SqliteReader.open(tmp_path / "o.db") is None
    assert SqliteReader.open(tmp_path / "none.db") is None
    with pytest.raises(RuntimeError, match="schema is version 99"):
        reader(url)


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


def test_the_sqlite_reader_names_a_stored_value_it_does_not_know(tmp_path: Path) -> None:
    """A state this Optuna does not know is an error naming it (not "no such study")."""
    import sqlite3

    fill(f"sqlite:///{tmp_path / 'o.db'}")
    with sqlite3.connect(tmp_path / "o.db") as db:
        db.execute("UPDATE trials SET state = 'ZOMBIE' WHERE number = 0")
    found = SqliteReader.open(tmp_path / "o.db")
    assert found is not None
    with pytest.raises(RuntimeError, match="TrialState 'ZOMBIE'"):
        found.study("s")


def test_the_sqlite_reader_waits_for_a_lock_as_long_as_the_url_says(tmp_path: Path) -> None:
    """``?timeout=`` reaches sqlite3 as it does through SQLAlchemy: a store a writer holds
    exclusively is given up on after the URL's seconds, not sqlite3's default 5."""
    import sqlite3
    import time

    url = f"sqlite:///{tmp_path / 'o.db'}"
    fill(url, "s")
    found = reader(f"{url}?timeout=0.2")
    assert isinstance(found, SqliteReader) and found.timeout == 0.2
    assert reader(url).timeout == 5.0
    writer = sqlite3.connect(tmp_path / "o.db", isolation_level=None)
    writer.execute("BEGIN EXCLUSIVE")
    try:
        started = time.monotonic()
        with pytest.raises(RuntimeError, match="locked"):
            found.get_all_studies()
        assert time.monotonic() - started < 3.0
    finally:
        writer.execute("ROLLBACK")
        writer.close()
    assert "s" in [s.study_name for s in found.get_all_studies()]  # read once released

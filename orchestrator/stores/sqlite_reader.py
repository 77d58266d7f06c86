"""A SQLite Optuna store read with plain SQL through :mod:`sqlite3`: what ``ftsweep run`` of a
finished sweep, ``status`` and ``report`` read from the default store.

:class:`SqliteReader` runs :class:`~.snapshot.StoreReader`'s queries as SQL text, read-only and
in one transaction a read, and builds the same trials (:func:`~.frozen.trials_of`); it imports
neither SQLAlchemy nor Optuna's RDB models (together a third of a second of a fresh command).
It reads the tables of one schema version, :data:`SQLITE_SCHEMA_VERSION` (a test holds it equal
to the installed Optuna's ``SCHEMA_VERSION``); :func:`~.snapshot.reader` leaves a file of any
other version to ``StoreReader``, which reads or refuses it as Optuna's models say.
"""

from __future__ import annotations

import datetime
import json
import math
import sqlite3
from collections.abc import Callable
from contextlib import closing
from enum import Enum
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import optuna
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from orchestrator.stores.frozen import Head, SnapshotStorage, trials_of
from orchestrator.stores.optuna_internals import frozen_study

__all__ = ["DEFAULT_TIMEOUT_S", "SQLITE_SCHEMA_VERSION", "SqliteReader", "url_timeout"]

#: the version of Optuna's RDB schema (``models.SCHEMA_VERSION``) whose SQLite tables
#: :class:`SqliteReader` reads
SQLITE_SCHEMA_VERSION = 12

#: the seconds a read waits for a writer's lock without a ``?timeout=`` (sqlite3's default)
DEFAULT_TIMEOUT_S = 5.0

E = TypeVar("E", bound=Enum)


#: a stored value's kind (Optuna's ``TrialValueType``/``TrialIntermediateValueType`` names)
#: -> the value (a finite one is stored as it is, the others as NULL)
_STORED: dict[str, float] = {"INF_POS": math.inf, "INF_NEG": -math.inf, "NAN": math.nan}


def _stored_value(value: Any, kind: str) -> float:
    """A value as Optuna's models return it from its stored form (``value``, ``kind``)."""
    if kind == "FINITE" and value is not None:
        return float(value)
    if kind in _STORED and value is None:
        return _STORED[kind]
    raise RuntimeError(f"a stored value {value!r} of kind {kind!r} this reader does not know")


class SqliteReader:
    """:class:`StoreReader`'s plain queries on a SQLite file, through :mod:`sqlite3` (read-only,
    one transaction a read): neither SQLAlchemy nor Optuna's models are imported. Reads the
    tables of schema version :data:`SQLITE_SCHEMA_VERSION` only (:meth:`open` gives None for
    another); a table or column that is not there raises ``RuntimeError``."""

    def __init__(self, path: Path, timeout: float = DEFAULT_TIMEOUT_S) -> None:
        self.path = path
        self.timeout = timeout

    @classmethod
    def open(cls, path: Path, timeout: float = DEFAULT_TIMEOUT_S) -> SqliteReader | None:
        """A reader of the SQLite file ``path``, or None when it is no file or its schema
        version is not :data:`SQLITE_SCHEMA_VERSION` (or cannot be read). ``timeout``: the
        seconds a read waits for a writer's lock (the URL's ``?timeout=``, as SQLAlchemy
        passes it to :mod:`sqlite3`)."""
        if not path.is_file():
            return None
        found = cls(path, timeout)
        try:
            with found._connect() as db:
                row = db.execute("SELECT schema_version FROM version_info").fetchone()
        except (RuntimeError, sqlite3.Error):
            return None
        return found if row is not None and row[0] == SQLITE_SCHEMA_VERSION else None

    def _connect(self) -> closing[sqlite3.Connection]:
        address = f"file:{quote(str(self.path.resolve()))}?mode=ro"
        try:  # autocommit: each read opens its own transaction (BEGIN) for one snapshot
            db = sqlite3.connect(address, uri=True, isolation_level=None, timeout=self.timeout)
            return closing(db)
        except sqlite3.Error as exc:
            raise RuntimeError(str(exc)) from exc

    def _read(self, read: Callable[[sqlite3.Connection], Any]) -> Any:
        """``read(db)`` in one read transaction; a database error as ``RuntimeError``."""
        with self._connect() as db:
            try:
                db.execute("BEGIN")
                try:
                    return read(db)
                finally:
                    db.execute("ROLLBACK")
            except sqlite3.Error as exc:
                raise RuntimeError(str(exc)) from exc

    def get_all_studies(self) -> list[Any]:
        """Every study, with its attributes and directions (as RDBStorage's)."""

        def read(db: sqlite3.Connection) -> list[Any]:
            query = "SELECT study_id, study_name FROM studies ORDER BY study_id"
            names = db.execute(query).fetchall()
            directions: dict[int, list[StudyDirection]] = {}
            query = "SELECT study_id, direction FROM study_directions ORDER BY study_id, objective"
            for sid, direction in db.execute(query):
                directions.setdefault(sid, []).append(_member(StudyDirection, direction))
            user = _sqlite_study_attrs(db, "study_user_attributes", None)
            system = _sqlite_study_attrs(db, "study_system_attributes", None)
            return [
                frozen_study(
                    name,
                    user.get(sid, {}),
                    system.get(sid, {}),
                    sid,
                    directions.get(sid, [StudyDirection.MINIMIZE]),
                )
                for sid, name in names
            ]

        found: list[Any] = self._read(read)
        return found

    def study(self, name: str) -> optuna.Study:
        """The study ``name``, read whole in one transaction, as a read-only
        :class:`optuna.Study`. Raises ``KeyError`` when there is no such study."""

        def read(db: sqlite3.Connection) -> SnapshotStorage:
            row = db.execute("SELECT study_id FROM studies WHERE study_name = ?", (name,))
            found = row.fetchone()
            if found is None:
                raise KeyError(f"no study named {name!r}")
            sid = int(found[0])
            query = "SELECT direction FROM study_directions WHERE study_id = ? ORDER BY objective"
            directions = [_member(StudyDirection, d) for (d,) in db.execute(query, (sid,))]
            user = _sqlite_study_attrs(db, "study_user_attributes", sid)
            system = _sqlite_study_attrs(db, "study_system_attributes", sid)
            trials = _sqlite_trials(db, sid)
            return SnapshotStorage(
                sid, name, directions, user.get(sid, {}), system.get(sid, {}), trials
            )

        snapshot: SnapshotStorage = self._read(read)
        return optuna.Study(name, snapshot, sampler=optuna.samplers.RandomSampler())

    def get_all_trials(self, study_id: int, deepcopy: bool = False) -> list[FrozenTrial]:
        """The trials of the study with id ``study_id``, in trial order."""
        found: list[FrozenTrial] = self._read(lambda db: _sqlite_trials(db, study_id))
        return found


def _sqlite_study_attrs(
    db: sqlite3.Connection, table: str, study_id: int | None
) -> dict[int, dict[str, Any]]:
    query = f"SELECT study_id, key, value_json FROM {table}"
    if study_id is None:
        rows = db.execute(query)
    else:
        rows = db.execute(query + " WHERE study_id = ?", (study_id,))
    found: dict[int, dict[str, Any]] = {}
    for sid, key, value in rows:
        found.setdefault(sid, {})[key] = json.loads(value)
    return found


#: each trial table's columns as :func:`trials_of` takes them, and its order
_TRIAL_TABLES = (
    ("trial_params", "trial_id, param_name, param_value, distribution_json", "param_id"),
    ("trial_values", "trial_id, objective, value, value_type", "objective"),
    (
        "trial_intermediate_values",
        "trial_id, step, intermediate_value, intermediate_value_type",
        "step",
    ),
    ("trial_user_attributes", "trial_id, key, value_json", "trial_user_attribute_id"),
    ("trial_system_attributes", "trial_id, key, value_json", "trial_system_attribute_id"),
)


def _sqlite_trials(db: sqlite3.Connection, sid: int) -> list[FrozenTrial]:
    heads: list[Head] = [
        (trial_id, number, _member(TrialState, state), _stamp(start), _stamp(end))
        for trial_id, number, state, start, end in db.execute(
            "SELECT trial_id, number, state, datetime_start, datetime_complete FROM trials "
            "WHERE study_id = ? ORDER BY trial_id",
            (sid,),
        )
    ]
    ids = "SELECT trial_id FROM trials WHERE study_id = ?"
    tables = [
        db.execute(
            f"SELECT {columns} FROM {table} WHERE trial_id IN ({ids}) ORDER BY {order}",
            (sid,),
        ).fetchall()
        for table, columns, order in _TRIAL_TABLES
    ]
    params, values, steps, user, system = tables
    return trials_of(heads, (params, values, steps, user, system), _stored_value, _stored_value)


def _member(kind: type[E], name: str) -> E:
    """The member of the enum ``kind`` stored as its ``name`` (as SQLAlchemy's ``Enum`` stores
    it); one this Optuna does not know is an error naming it, not a missing study."""
    try:
        return kind[name]
    except KeyError:
        raise RuntimeError(f"a stored {kind.__name__} {name!r} this Optuna does not know") from None


def _stamp(text: str | None) -> datetime.datetime | None:
    """A ``DATETIME`` as SQLAlchemy stores it in SQLite (``2026-01-02 03:04:05.000006``)."""
    return datetime.datetime.fromisoformat(text) if text is not None else None


def url_timeout(url: str) -> float:
    """The lock timeout a SQLite URL asks for (``?timeout=SECONDS``, what SQLAlchemy hands
    :mod:`sqlite3`), else :data:`DEFAULT_TIMEOUT_S`; a value that is no number is ignored."""
    from urllib.parse import parse_qs, urlsplit

    found = parse_qs(urlsplit(url).query).get("timeout")
    try:
        return float(found[-1]) if found else DEFAULT_TIMEOUT_S
    except ValueError:
        return DEFAULT_TIMEOUT_S

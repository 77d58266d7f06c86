"""Reading a sweep's Optuna store without writing to it: the lineage's studies, one study.

``status``, ``report``, ``best``, the no-op check of ``run`` and ``retune`` read through these.
A store that is not there is not created (SQLite is opened read-only, a journal file that does
not exist is not made), and a sweep that never ran raises
:class:`~orchestrator.core.errors.SweepNotStartedError`. Plain queries
(:mod:`orchestrator.stores.snapshot`) replace Optuna's ORM where the store is a database.
"""

from __future__ import annotations

import os
import sqlite3
import sys
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import quote

from orchestrator.config import SweepSpec
from orchestrator.core.errors import OrchestratorError, SweepNotStartedError
from orchestrator.core.urls import mask_secret, masked_url, sqlite_path

if TYPE_CHECKING:
    import optuna

__all__ = [
    "GenerationInfo",
    "generation_study_name",
    "generations",
    "load_study",
    "optuna_url",
]


def optuna_url(spec: SweepSpec) -> str:
    """The sweep's Optuna storage URL, resolved as a run resolves it; creates nothing."""
    if spec.storage.optuna:
        return spec.storage.optuna
    if os.environ.get("FTSWEEP_OPTUNA_STORAGE"):
        return os.environ["FTSWEEP_OPTUNA_STORAGE"]
    root = Path(os.environ.get("FTSWEEP_RUNS_DIR") or "mlruns").resolve()
    return f"sqlite:///{root / 'optuna.db'}"


def generation_study_name(sweep: str, number: int) -> str:
    """The study of generation ``number`` of sweep ``sweep``: the sweep's own name for the
    first, ``NAME.gN`` for the later ones (``ftsweep retune``)."""
    return sweep if number <= 1 else f"{sweep}.g{number}"


@dataclass(frozen=True)
class GenerationInfo:
    """One generation of a sweep's lineage, as its study records it."""

    number: int
    study_name: str
    previous: str | None
    changes: tuple[str, ...]
    #: the fingerprint as JSON (orchestrator.plan.fingerprint.Fingerprint), when recorded
    fingerprint: str | None
    #: what the generation concluded with ({at, completed, best_trial, best_value, model})
    concluded: dict[str, Any] | None
    n_trials: int
    started: float | None
    attrs: dict[str, Any]

    @property
    def succeeded(self) -> bool:
        return bool(self.concluded) and int((self.concluded or {}).get("completed", 0)) > 0


T = TypeVar("T")


def _sqlalchemy_errors() -> tuple[type[Exception], ...]:
    """SQLAlchemy's error root, where SQLAlchemy was imported (evaluated as an ``except``
    clause matches, after the read: a read that did not import it raised none of its
    errors, and a SQLite store is read without it)."""
    found = sys.modules.get("sqlalchemy.exc")
    return (found.SQLAlchemyError,) if found is not None else ()


def _read_errors(optunas: type[Exception]) -> tuple[type[Exception], ...]:
    """What a read that cannot be done raises: SQLAlchemy's errors (where it was imported),
    ``optunas`` (Optuna's), and ``RuntimeError`` among the rest (a SQLite file read through
    sqlite3: orchestrator/stores/sqlite_reader.py)."""
    return (*_sqlalchemy_errors(), optunas, ImportError, RuntimeError, OSError, ValueError)


def _read_store(url: str, shown: str, read: Callable[[Any], list[T]]) -> list[T]:
    """``read(storage)`` on the store, read-only ([] when there is no store yet)."""
    import optuna

    from orchestrator.stores.snapshot import reader

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        if url.startswith("journal:"):
            from optuna.storages.journal import JournalFileBackend

            path = Path(url.removeprefix("journal:"))
            if not path.is_file():
                return []
            storage: Any = optuna.storages.JournalStorage(JournalFileBackend(str(path)))
        else:
            if url.startswith("sqlite:"):
                db = sqlite_path(url)
                if db is None or not db.is_file() or not _sqlite_has_table(db, shown):
                    return []
            storage = reader(url)  # plain queries: orchestrator/stores/snapshot.py
        return read(storage)
    except _read_errors(optuna.exceptions.OptunaError) as exc:
        cause: BaseException = exc
        if isinstance(exc, optuna.exceptions.StorageInternalError) and exc.__cause__:
            cause = exc.__cause__  # optuna's wrapper says less than the driver's error
        text = str(getattr(cause, "orig", None) or cause).strip()
        if _no_tables(text):
            return []  # a database with no Optuna store in it yet
        why = mask_secret(text.splitlines()[0] if text else type(cause).__name__, url)
        raise OrchestratorError(f"cannot read the Optuna store {shown}: {why}") from exc


def _no_tables(text: str) -> bool:
    """Whether a database error says the Optuna tables are not there (PostgreSQL, MySQL)."""
    lowered = text.lower()
    postgres = 'relation "' in lowered and "does not exist" in lowered
    mysql = "table '" in lowered and "doesn't exist" in lowered
    return postgres or mysql


def _sqlite_has_table(path: Path, shown: str) -> bool:
    address = f"file:{quote(str(path.resolve()))}?mode=ro"
    try:
        with closing(sqlite3.connect(address, uri=True)) as db:
            rows = db.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'studies'"
            ).fetchall()
    except sqlite3.DatabaseError as exc:
        raise OrchestratorError(f"cannot read the Optuna store {shown}: {exc}") from exc
    return bool(rows)


def generations(spec: SweepSpec, *, details: bool = True) -> list[GenerationInfo]:
    """The sweep's generations, oldest first: its own study (generation 1) and each study a
    retune started after it. Read-only; [] when the sweep never ran. Without ``details``
    the studies' trials are not read (``n_trials`` 0, ``started`` None): one query."""
    from orchestrator.core.attrs import StudyAttrs
    from orchestrator.stores.optuna_internals import study_id

    def read(storage: Any) -> list[GenerationInfo]:
        found = []
        for study in storage.get_all_studies():
            attrs = dict(study.user_attrs)
            if study.study_name != spec.name and attrs.get(StudyAttrs.LINEAGE) != spec.name:
                continue
            number = attrs.get(StudyAttrs.GENERATION)
            if not isinstance(number, int):
                number = 1 if study.study_name == spec.name else None
            if number is None:
                continue
            n_trials, started = 0, None
            if details:
                trials = storage.get_all_trials(study_id(study, storage), deepcopy=False)
                n_trials = len(trials)
                starts = [t.datetime_start for t in trials if t.datetime_start is not None]
                started = min(starts).timestamp() if starts else None
            concluded = attrs.get(StudyAttrs.CONCLUDED)
            found.append(
                GenerationInfo(
                    number=number,
                    study_name=study.study_name,
                    previous=attrs.get(StudyAttrs.PREVIOUS_STUDY),
                    changes=tuple(attrs.get(StudyAttrs.CHANGES) or ()),
                    fingerprint=attrs.get(StudyAttrs.FINGERPRINT),
                    concluded=dict(concluded) if isinstance(concluded, dict) else None,
                    n_trials=n_trials,
                    started=started,
                    attrs=attrs,
                )
            )
        return sorted(found, key=lambda g: g.number)

    url = optuna_url(spec)
    return _read_store(url, masked_url(url), read)


def _sqlite_has_study(path: Path, name: str, shown: str) -> bool:
    """Whether the SQLite file holds an Optuna study ``name``, asked read-only (a missing
    file is not created)."""
    if not path.is_file():
        return False
    address = f"file:{quote(str(path.resolve()))}?mode=ro"
    try:
        with closing(sqlite3.connect(address, uri=True)) as db:
            rows = db.execute("SELECT 1 FROM studies WHERE study_name = ?", (name,)).fetchall()
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return False  # a SQLite file, but no Optuna store in it
        raise OrchestratorError(f"cannot read the Optuna store {shown}: {exc}") from exc
    except sqlite3.DatabaseError as exc:
        raise OrchestratorError(f"cannot read the Optuna store {shown}: {exc}") from exc
    return bool(rows)


def load_study(name: str, url: str, shown: str, not_started: SweepNotStartedError) -> optuna.Study:
    """Study ``name`` of the store at ``url``, read-only; raises ``not_started`` when the store
    or the study is not there, :class:`OrchestratorError` (naming ``shown``) when it cannot be
    read."""
    import optuna

    from orchestrator.stores.snapshot import read_study

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        if url.startswith("journal:"):
            from optuna.storages.journal import JournalFileBackend

            path = Path(url.removeprefix("journal:"))
            if not path.is_file():  # JournalFileBackend would create it
                raise not_started
            storage = optuna.storages.JournalStorage(JournalFileBackend(str(path)))
            return optuna.load_study(
                study_name=name, storage=storage, sampler=optuna.samplers.RandomSampler()
            )
        if url.startswith("sqlite:"):
            db = sqlite_path(url)
            if db is None or not _sqlite_has_study(db, name, shown):
                raise not_started
        return read_study(url, name)  # plain queries: orchestrator/stores/snapshot.py
    except KeyError:  # optuna: no study of that name in this storage
        raise not_started from None
    # StorageInternalError: Optuna's wrapper of a database that does not answer
    except _read_errors(optuna.exceptions.StorageInternalError) as exc:
        cause = getattr(exc.__cause__, "orig", None) or exc.__cause__ or exc
        if isinstance(exc, _sqlalchemy_errors()):
            cause = exc
        why = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
        why = mask_secret(why, url)  # drivers do not echo it; in case one does
        raise OrchestratorError(f"cannot read the Optuna store {shown}: {why}") from exc

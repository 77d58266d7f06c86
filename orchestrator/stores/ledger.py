"""Who owns a trial: worker ids and whether their process is alive.

The ledger itself is the trial's user attributes in the Optuna study (names in
:mod:`orchestrator.core.attrs`, written by :class:`~orchestrator.engine.trial.TrialRun`): it lives
in the study's storage (SQLite, PostgreSQL, a journal file), so any process that opens the
study can re-attach to jobs a dead process left running, and several workers on several
machines see the same ledger. A worker is ``host:pid``.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    import optuna

__all__ = ["owner_alive", "worker_id", "write"]


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def owner_alive(worker: str | None) -> bool | None:
    """True/False for a worker on this host (by pid); None when it is on another host (then
    only its heartbeat tells)."""
    if not worker or ":" not in worker:
        return None
    host, _, pid = worker.rpartition(":")
    if host != socket.gethostname():
        return None
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError):
        return True
    return True


def write(
    trial: optuna.Trial,
    attrs: Mapping[str, Any],
    intermediate: Mapping[int, float] | None = None,
) -> None:
    """Write one trial event of the ledger: several user attributes of ``trial`` (and the
    objective values it reports at epoch ``steps``) as one storage transaction.

    Optuna's ``Trial.set_user_attr`` and ``Trial.report`` commit each value on its own (a
    SQLite or PostgreSQL transaction each). On an RDB storage these go in one session: one
    commit, the attributes in one upsert on SQLite and PostgreSQL (as Optuna upserts each
    there) and through Optuna's own per-row writes elsewhere: the rows are exactly those the
    public calls write, so every reader, and every study written before, is unchanged. A
    journal storage gets them one by one (its replay reads one attribute a record), as does
    any other storage or an Optuna whose internals differ. ``intermediate`` values already
    known to the trial (the caller reported them in its cache for the pruner) are written,
    not checked again."""
    values = dict(attrs)
    steps = dict(intermediate or {})
    if not values and not steps:
        return
    storage: Any = trial.storage
    backend = getattr(storage, "_backend", storage)  # _CachedStorage wraps an RDBStorage
    if not _write_batched(backend, trial._trial_id, values, steps):
        for key, value in values.items():
            storage.set_trial_user_attr(trial._trial_id, key, value)
        for step, value in steps.items():
            storage.set_trial_intermediate_value(trial._trial_id, step, value)
    cached = trial._cached_frozen_trial
    cached.user_attrs.update(values)
    cached.intermediate_values.update(steps)


def _write_batched(
    storage: Any, trial_id: int, values: dict[str, Any], steps: dict[int, float]
) -> bool:
    """True when everything was written in one transaction (see :func:`write`)."""
    from optuna.storages import RDBStorage

    if not isinstance(storage, RDBStorage):
        return False
    try:
        from optuna.storages._rdb import models
        from optuna.storages._rdb.storage import _create_scoped_session

        set_attr = storage._set_trial_attr_without_commit
        set_value = storage._set_trial_intermediate_value_without_commit
    except (ImportError, AttributeError):
        return False
    from sqlalchemy.exc import IntegrityError

    upsert = _upsert(storage.engine.name)
    try:
        with _create_scoped_session(storage.scoped_session) as session:
            if upsert is not None:  # the attributes in one statement, the values in another
                trial = models.TrialModel.find_or_raise_by_id(trial_id, session)
                storage.check_trial_is_updatable(trial_id, cast(Any, trial.state))
                if values:
                    session.execute(upsert(*_attribute_rows(trial_id, values)))
                if steps:
                    session.execute(upsert(*_value_rows(trial_id, steps)))
            else:
                for key, value in values.items():
                    set_attr(session, models.TrialUserAttributeModel, trial_id, key, value)
                for step, value in steps.items():
                    set_value(session, trial_id, step, value)
    except IntegrityError:  # another process wrote one of the rows meanwhile: rolled back,
        return False  # written one by one (as Optuna does, which ignores that race)
    return True


def _attribute_rows(trial_id: int, values: Mapping[str, Any]) -> tuple[Any, list[Any], str]:
    """User-attribute rows as ``set_trial_user_attr`` writes them, keyed by (trial, key)."""
    from optuna.storages._rdb import models

    rows = [
        {"trial_id": trial_id, "key": k, "value_json": json.dumps(v)} for k, v in values.items()
    ]
    return models.TrialUserAttributeModel, rows, "key"


def _value_rows(trial_id: int, steps: Mapping[int, float]) -> tuple[Any, list[Any], str]:
    """Intermediate-value rows as ``set_trial_intermediate_value`` writes them (its stored
    representation of inf and NaN), keyed by (trial, step)."""
    from optuna.storages._rdb import models

    table = models.TrialIntermediateValueModel
    rows = []
    for step, value in steps.items():
        stored, kind = table.intermediate_value_to_stored_repr(value)
        rows.append(
            {
                "trial_id": trial_id,
                "step": step,
                "intermediate_value": stored,
                "intermediate_value_type": kind,
            }
        )
    return table, rows, "step"


def _upsert(dialect: str) -> Callable[[Any, list[Any], str], Any] | None:
    """``upsert(table, rows, key)``: one statement inserting ``rows`` of one trial, or
    updating the row of the same (trial, ``key``), on the databases where Optuna itself
    upserts (SQLite 3.24+, PostgreSQL); None elsewhere."""
    import sqlite3

    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    elif dialect == "sqlite" and sqlite3.sqlite_version_info >= (3, 24, 0):
        from sqlalchemy.dialects.sqlite import insert  # type: ignore[assignment]
    else:
        return None

    def statement(table: Any, rows: list[Any], key: str) -> Any:
        stmt = insert(table).values(rows)
        keys = {"trial_id", key}
        return stmt.on_conflict_do_update(
            index_elements=[table.trial_id, getattr(table, key)],
            set_={c: getattr(stmt.excluded, c) for c in rows[0] if c not in keys},
        )

    return statement

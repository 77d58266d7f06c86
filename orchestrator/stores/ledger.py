"""Who owns a trial: worker ids and whether their process is alive.

The ledger itself is the trial's user attributes in the Optuna study (names in
:mod:`orchestrator.core.attrs`, written by :class:`~orchestrator.engine.trial.TrialRun`): it lives
in the study's storage (SQLite, PostgreSQL, a journal file), so any process that opens the
study can re-attach to jobs a dead process left running, and several workers on several
machines see the same ledger. A worker is ``host:pid``.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from orchestrator.stores.optuna_internals import (
    Params,
    rdb_storage,
    remember,
    trial_id,
    write_in_one_transaction,
)

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
    params: Params | None = None,
) -> None:
    """Write one trial event of the ledger: several user attributes of ``trial`` (and the
    objective values it reports at epoch ``steps``) as one storage transaction.

    Optuna's ``Trial.set_user_attr`` and ``Trial.report`` commit each value on its own (a
    SQLite or PostgreSQL transaction each). On an RDB storage these go in one session: one
    commit, the attributes in one upsert on SQLite and PostgreSQL (as Optuna upserts each
    there) and through Optuna's own per-row writes elsewhere: the rows are exactly those the
    public calls write, so every reader, and every study written before, is unchanged. A
    journal storage gets them one by one (its replay reads one attribute a record), as does
    any other storage or an Optuna whose internals differ
    (:func:`~orchestrator.stores.optuna_internals.write_in_one_transaction`).
    ``intermediate`` values already known to the trial (the caller reported them in its
    cache for the pruner) are written, not checked again. ``params``: the parameters
    :func:`~orchestrator.stores.optuna_internals.ask` sampled and left to the trial's first
    write (the public fallback writes them first, one by one, as Optuna's ``ask`` does)."""
    values = dict(attrs)
    steps = dict(intermediate or {})
    if not values and not steps and not params:
        return
    storage: Any = trial.storage
    tid = trial_id(trial)
    if not write_in_one_transaction(rdb_storage(storage), tid, values, steps, params):
        for name, (internal, distribution) in (params or {}).items():
            storage.set_trial_param(tid, name, internal, distribution)
        for key, value in values.items():
            storage.set_trial_user_attr(tid, key, value)
        for step, value in steps.items():
            storage.set_trial_intermediate_value(tid, step, value)
    remember(trial, values, steps)

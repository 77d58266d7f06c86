"""Who owns a trial: worker ids and whether their process is alive.

The ledger itself is the trial's user attributes in the Optuna study (names in
:mod:`orchestrator.attrs`, written by :class:`~orchestrator.engine.trial.TrialRun`): it lives
in the study's storage (SQLite, PostgreSQL, a journal file), so any process that opens the
study can re-attach to jobs a dead process left running, and several workers on several
machines see the same ledger. A worker is ``host:pid``.
"""

from __future__ import annotations

import os
import socket

__all__ = ["owner_alive", "worker_id"]


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

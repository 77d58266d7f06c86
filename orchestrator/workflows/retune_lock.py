"""The retune lock: only one retune of a sweep runs at a time, across machines.

The lock is a study in the Optuna storage (``NAME.retune-lock``) that exists while it is held:
creating a study is atomic in every storage (a unique name), so it holds across machines
without another service. Its owner (``host:pid``) and a heartbeat are the study's user
attribute; a lock whose owner died (a dead process on this host, or a heartbeat older than
:data:`LOCK_STALE_S`) is broken by the next retune.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

from orchestrator.stores.ledger import owner_alive, worker_id

__all__ = ["LOCK_STALE_S", "StorageLock", "retune_lock"]

#: a lock whose heartbeat is older than this is taken to belong to a dead retune
LOCK_STALE_S = 600.0
_LOCK_BEAT_S = 30.0
_LOCK_ATTR = "ftsweep.lock"


@contextmanager
def retune_lock(url: str, sweep: str) -> Iterator[str | None]:
    """Hold the sweep's retune lock; yields None when held, else who holds it."""
    lock = StorageLock(url, f"{sweep}.retune-lock")
    holder = lock.acquire()
    try:
        yield holder
    finally:
        if holder is None:
            lock.release()


class StorageLock:
    """A lock that is a study in the Optuna storage: creating a study is atomic in every
    storage (a unique name), so exactly one process across machines holds it."""

    def __init__(self, url: str, name: str, stale_s: float = LOCK_STALE_S) -> None:
        self.url, self.name, self.stale_s = url, name, stale_s
        self.owner = worker_id()
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None
        self._study_id: int | None = None

    def _storage(self) -> Any:
        from orchestrator.stores.study import storage

        return storage(self.url)

    def acquire(self) -> str | None:
        import optuna
        from optuna.exceptions import DuplicatedStudyError

        from orchestrator.stores.locks import create_aside, sqlite_init_lock

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        with sqlite_init_lock(self.url):  # the storage may be created here (PostgreSQL too)
            from orchestrator.stores.study import new_rdb

            create_aside(self.url, new_rdb)
            storage = self._storage()
        for attempt in range(3):
            try:
                sid = storage.create_new_study([optuna.study.StudyDirection.MINIMIZE], self.name)
            except DuplicatedStudyError:
                holder = self._holder(storage, attempt)
                if holder is not None:
                    return holder
                continue  # broken: try again
            now = time.time()
            storage.set_study_user_attr(
                sid, _LOCK_ATTR, {"owner": self.owner, "since": now, "heartbeat": now}
            )
            self._study_id = sid
            self._beat = threading.Thread(target=self._heartbeat, daemon=True)
            self._beat.start()
            return None
        return "a lock that could not be taken"

    def _holder(self, storage: Any, attempt: int) -> str | None:
        """Who holds the lock; None after breaking a dead holder's lock."""
        try:
            sid = storage.get_study_id_from_name(self.name)
        except KeyError:
            return None  # released meanwhile
        info = storage.get_study_user_attrs(sid).get(_LOCK_ATTR)
        if not isinstance(info, dict):
            if attempt == 0:
                time.sleep(1.0)  # just created: its owner is writing who it is
                return self._holder_again(storage, sid)
            info = {}
        owner = str(info.get("owner", "?"))
        beat = float(info.get("heartbeat", 0) or 0)
        if owner_alive(owner) is False or time.time() - beat > self.stale_s:
            with suppress(KeyError):
                storage.delete_study(sid)
            return None
        since = dt.datetime.fromtimestamp(float(info.get("since", beat)), dt.UTC)
        return f"{owner}, since {since:%Y-%m-%d %H:%M} UTC"

    def _holder_again(self, storage: Any, sid: int) -> str | None:
        info = storage.get_study_user_attrs(sid).get(_LOCK_ATTR)
        if isinstance(info, dict):
            return f"{info.get('owner', '?')}"
        with suppress(KeyError):  # created and never claimed: its owner died at once
            storage.delete_study(sid)
        return None

    def _heartbeat(self) -> None:
        storage = self._storage()
        while not self._stop.wait(_LOCK_BEAT_S):
            try:
                info = storage.get_study_user_attrs(self._study_id).get(_LOCK_ATTR) or {}
                info = {**info, "heartbeat": time.time()}
                storage.set_study_user_attr(self._study_id, _LOCK_ATTR, info)
            except Exception:  # a missed beat is not fatal; LOCK_STALE_S is many beats
                continue

    def release(self) -> None:
        self._stop.set()
        if self._beat is not None:
            self._beat.join(timeout=5)
        if self._study_id is None:
            return
        with suppress(Exception):  # gone already; a stale lock is broken by the next retune
            self._storage().delete_study(self._study_id)

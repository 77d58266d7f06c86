"""Every lock of ftsweep, in one module.

- :func:`launch_lock` -- around a study's launch decision, shared by every worker of the study.
  Counting the finished and running trials, the committed and spent dollars and the running
  jobs, then asking for the next trial, are several storage calls; two workers between them
  would both start a trial when one place (or one dollar, or one job slot) is left. The lock
  makes the decision atomic among all workers of one study:

  - PostgreSQL (``postgresql[+driver]://``): a transaction-level advisory lock
    (``pg_advisory_xact_lock``) on a key derived from the study name, taken through
    SQLAlchemy on the Optuna URL, so workers on any number of machines queue for it;
  - SQLite and journal files: a file lock beside the storage (one machine);
  - other databases: none; a trial asked past the limit is then told FAIL at once
    (``not started: the study reached its limit``) and never runs.

  The same lock keeps two workers that start at once from each making the study's MLflow
  parent run.
- :func:`sqlite_init_lock` -- while a store is created or migrated (a file lock beside a
  SQLite database, an advisory lock on PostgreSQL).
- :func:`file_lock` -- the file lock both use: ``filelock.FileLock`` (``flock`` underneath),
  given up after :data:`LOCK_TIMEOUT_S` with one line naming the file, like the advisory lock.
- :func:`try_flock` -- the non-blocking ``flock`` of ``ftsweep schedule`` (the lock the
  crontab line's ``flock -n`` takes), whose descriptor a child process inherits.
- :func:`advisory_lock` -- a PostgreSQL advisory lock by name.

A lock that lives in the study storage itself (``ftsweep retune``'s) decides whether its
holder is alive by :func:`orchestrator.stores.ledger.owner_alive`, as the sweep loop does for
a trial's owner.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from orchestrator.core.errors import StoreUnreachableError
from orchestrator.core.urls import mask_secret, masked_url, sqlite_path

__all__ = [
    "LOCK_TIMEOUT_S",
    "advisory_key",
    "advisory_lock",
    "create_aside",
    "exclusive",
    "file_lock",
    "launch_lock",
    "sqlite_init_lock",
    "try_flock",
]

#: seconds a worker waits for a lock before giving up (another worker holds it for
#: milliseconds, or seconds while it creates a store or the MLflow parent run)
LOCK_TIMEOUT_S = 120


def _storage_file(optuna_url: str) -> Path | None:
    """The file of a SQLite or journal storage, beside which its file locks live."""
    if optuna_url.startswith("journal:"):
        return Path(optuna_url.removeprefix("journal:"))
    return sqlite_path(optuna_url)


def exclusive(optuna_url: str) -> bool:
    """Whether :func:`launch_lock` on this storage excludes every other worker of the study
    (then a trial asked under it is within the limit, and needs no second look)."""
    return _storage_file(optuna_url) is not None or _is_postgres(optuna_url)


@contextlib.contextmanager
def launch_lock(optuna_url: str, study: str = "") -> Iterator[None]:
    """Exclusive while held, for the workers of study ``study`` on storage ``optuna_url``."""
    path = _storage_file(optuna_url)
    if path is None and _is_postgres(optuna_url):
        with advisory_lock(optuna_url, f"ftsweep.launch:{study}", "the study's launch lock"):
            yield
        return
    if path is None:
        yield
        return
    with file_lock(Path(f"{path}.launch.lock"), "the study's launch lock"):
        yield


@contextmanager
def file_lock(path: Path, what: str = "a lock", timeout: float = LOCK_TIMEOUT_S) -> Iterator[None]:
    """An exclusive lock on ``path`` (created if missing, left in place) among this machine's
    processes (and threads). A lock still held by another after ``timeout`` seconds raises
    :class:`StoreUnreachableError`, one line naming ``what`` and the file."""
    from filelock import FileLock, Timeout

    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(path, timeout=timeout)
    try:
        lock.acquire()
    except Timeout:
        raise StoreUnreachableError(
            f"cannot take {what} ({path}): another process has held it for {timeout:g} s"
        ) from None
    try:
        yield
    finally:
        lock.release()


@contextmanager
def try_flock(path: Path) -> Iterator[int | None]:
    """An exclusive non-blocking ``flock`` on ``path`` (created if missing): yields its
    descriptor when taken, None when another process holds it. It is the lock ``flock -n
    PATH CMD`` takes (a crontab line of ``ftsweep schedule``), and the descriptor may be
    passed to a child process (``pass_fds``), which then holds it as long as it runs."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield None
            return
        yield fd
    finally:
        os.close(fd)


_ENGINES: dict[str, Any] = {}
_ENGINES_LOCK = threading.Lock()


def _is_postgres(url: str) -> bool:
    return url.split(":", 1)[0].split("+", 1)[0] in ("postgresql", "postgres")


def advisory_key(name: str) -> int:
    """A signed 64-bit PostgreSQL advisory-lock key for ``name``, the same on every machine."""
    digest = hashlib.blake2b(name.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def _engine(url: str) -> Any:
    import sqlalchemy

    with _ENGINES_LOCK:
        engine = _ENGINES.get(url)
        if engine is None:
            engine = sqlalchemy.create_engine(
                url,
                pool_size=1,
                max_overflow=4,  # a lock taken inside another (other names) gets its own
                pool_pre_ping=True,
                connect_args={"connect_timeout": 10},
            )
            _ENGINES[url] = engine
        return engine


@contextmanager
def advisory_lock(url: str, name: str, what: str = "a lock") -> Iterator[None]:
    """``pg_advisory_xact_lock`` on ``name``'s key, in a transaction of its own on the
    PostgreSQL database ``url``, held for the block: every process on every machine that
    asks for the same name waits. Released at the commit, or when the connection drops (a
    process that dies holding it). A failure is one line without the password."""
    import sqlalchemy
    from sqlalchemy.exc import SQLAlchemyError

    conn = None
    try:
        conn = _engine(url).connect()
        tx = conn.begin()
        conn.execute(sqlalchemy.text(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT_S}s'"))
        conn.execute(sqlalchemy.text("SELECT pg_advisory_xact_lock(:k)"), {"k": advisory_key(name)})
    except SQLAlchemyError as exc:
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()
        cause = getattr(exc, "orig", None) or exc
        text = mask_secret((str(cause).strip().splitlines() or [type(cause).__name__])[0], url)
        shown = masked_url(url)
        # not chained: the driver's error carries the connection arguments
        raise StoreUnreachableError(f"cannot take {what} on {shown}: {text[:300]}") from None
    try:
        yield
    finally:
        try:
            tx.commit()
        finally:
            conn.close()


@contextmanager
def sqlite_init_lock(url: str) -> Iterator[None]:
    """Hold an exclusive lock while a store may be created or migrated: two workers starting
    at once would otherwise run the schema creation twice (and one fail). A file lock beside
    a SQLite database; an advisory lock on a PostgreSQL one, across machines."""
    if _is_postgres(url):
        with advisory_lock(url, "ftsweep.store-init", "the store-creation lock"):
            yield
        return
    path = sqlite_path(url)
    if path is None:
        yield
        return
    with file_lock(Path(f"{path}.lock"), "the store-creation lock"):
        yield


def create_aside(url: str, make: Callable[[str], object]) -> None:
    """Create a new SQLite store (``make(url)`` builds its tables) in a temporary file beside
    it and move it into place, so a run interrupted while creating it (Ctrl-C during MLflow's
    migrations) leaves no half-made store behind. Does nothing for other URLs or when the
    file exists. Call it under :func:`sqlite_init_lock`."""
    path = sqlite_path(url)
    if path is None or path.exists():
        return
    tmp = path.with_name(f".{path.name}.{os.getpid()}.new")
    tmp.unlink(missing_ok=True)
    try:
        make(f"sqlite:///{tmp}")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)

"""A lock around a study's launch decision, shared by every worker of the study.

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
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from orchestrator.errors import StoreUnreachableError

__all__ = ["advisory_key", "launch_lock"]

#: seconds a worker waits for the lock before giving up (another worker holds it for
#: milliseconds, or seconds while it makes the MLflow parent run)
LOCK_TIMEOUT_S = 120
_ENGINES: dict[str, Any] = {}
_ENGINES_LOCK = threading.Lock()


def advisory_key(study: str) -> int:
    """A signed 64-bit key for ``pg_advisory_xact_lock``, the same on every machine."""
    digest = hashlib.blake2b(f"ftsweep.launch:{study}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def _is_postgres(url: str) -> bool:
    return url.split(":", 1)[0].split("+", 1)[0] in ("postgresql", "postgres")


@contextlib.contextmanager
def launch_lock(optuna_url: str, study: str = "") -> Iterator[None]:
    """Exclusive while held, for the workers of study ``study`` on storage ``optuna_url``."""
    if optuna_url.startswith("sqlite:///"):
        path: Path | None = Path(optuna_url.removeprefix("sqlite:///"))
    elif optuna_url.startswith("journal:"):
        path = Path(optuna_url.removeprefix("journal:"))
    elif _is_postgres(optuna_url):
        with _advisory_lock(optuna_url, advisory_key(study)):
            yield
        return
    else:
        yield
        return
    from orchestrator.tracking.client import file_lock

    with file_lock(Path(f"{path}.launch.lock")):
        yield


def _engine(url: str) -> Any:
    import sqlalchemy

    with _ENGINES_LOCK:
        engine = _ENGINES.get(url)
        if engine is None:
            engine = sqlalchemy.create_engine(
                url, pool_size=1, max_overflow=0, pool_pre_ping=True,
                connect_args={"connect_timeout": 10},
            )  # fmt: skip
            _ENGINES[url] = engine
        return engine


@contextlib.contextmanager
def _advisory_lock(url: str, key: int) -> Iterator[None]:
    """``pg_advisory_xact_lock(key)`` in a transaction of its own, held for the block: it is
    released at the commit (or when the connection drops, if this process dies)."""
    import sqlalchemy
    from sqlalchemy.exc import SQLAlchemyError

    try:
        conn = _engine(url).connect()
        tx = conn.begin()
        conn.execute(sqlalchemy.text(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT_S}s'"))
        conn.execute(sqlalchemy.text("SELECT pg_advisory_xact_lock(:k)"), {"k": key})
    except SQLAlchemyError as exc:
        with contextlib.suppress(Exception):
            conn.close()
        shown = sqlalchemy.engine.make_url(url).render_as_string(hide_password=True)
        cause = getattr(exc, "orig", None) or exc
        text = (str(cause).strip().splitlines() or [type(cause).__name__])[0]
        password = sqlalchemy.engine.make_url(url).password
        if password:
            text = text.replace(str(password), "***")
        raise StoreUnreachableError(
            f"cannot take the study's launch lock on {shown}: {text[:300]}"
        ) from None
    try:
        yield
    finally:
        try:
            tx.commit()
        finally:
            conn.close()

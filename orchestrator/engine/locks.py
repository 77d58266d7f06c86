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
from collections.abc import Iterator
from pathlib import Path

__all__ = ["advisory_key", "exclusive", "launch_lock"]


def advisory_key(study: str) -> int:
    """The launch lock's key for ``pg_advisory_xact_lock``, the same on every machine."""
    from orchestrator.tracking.client import advisory_key as key

    return key(f"ftsweep.launch:{study}")


def _is_postgres(url: str) -> bool:
    return url.split(":", 1)[0].split("+", 1)[0] in ("postgresql", "postgres")


def exclusive(optuna_url: str) -> bool:
    """Whether :func:`launch_lock` on this storage excludes every other worker of the study
    (then a trial asked under it is within the limit, and needs no second look)."""
    return optuna_url.startswith(("sqlite:///", "journal:")) or _is_postgres(optuna_url)


@contextlib.contextmanager
def launch_lock(optuna_url: str, study: str = "") -> Iterator[None]:
    """Exclusive while held, for the workers of study ``study`` on storage ``optuna_url``."""
    from orchestrator.tracking.client import advisory_lock, file_lock

    if optuna_url.startswith("sqlite:///"):
        path: Path | None = Path(optuna_url.removeprefix("sqlite:///"))
    elif optuna_url.startswith("journal:"):
        path = Path(optuna_url.removeprefix("journal:"))
    elif _is_postgres(optuna_url):
        with advisory_lock(optuna_url, f"ftsweep.launch:{study}", "the study's launch lock"):
            yield
        return
    else:
        yield
        return
    with file_lock(Path(f"{path}.launch.lock")):
        yield

"""A lock around asking the study for a trial, so workers on one machine keep the limit exact.

Counting the finished and running trials and asking for the next one are two storage calls;
two workers between them would both start a trial when one place is left. On one machine
(a SQLite file or a journal file) a file lock beside the storage makes the pair atomic. On a
database server shared by several machines there is no such file: a trial asked past the
limit is then told FAIL at once (``not started: the study reached its limit``) and never runs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

__all__ = ["launch_lock"]


@contextlib.contextmanager
def launch_lock(optuna_url: str) -> Iterator[None]:
    """Exclusive while held, across the processes of this machine, for one study storage."""
    if optuna_url.startswith("sqlite:///"):
        path = Path(optuna_url.removeprefix("sqlite:///"))
    elif optuna_url.startswith("journal:"):
        path = Path(optuna_url.removeprefix("journal:"))
    else:
        yield
        return
    from orchestrator.tracking.client import file_lock

    with file_lock(Path(f"{path}.launch.lock")):
        yield

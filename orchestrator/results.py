"""Read-only access to a sweep's results: its study as it stands, with nothing planned or made.

``ftsweep status``, ``report`` and ``best`` read through :func:`open_results`. Only the sweep
file is loaded (its data files may have moved or gone since the sweep ran), the Optuna store
is resolved by the same rule as a run's (the sweep file's ``storage.optuna``, else
``FTSWEEP_OPTUNA_STORAGE``, else ``sqlite:///`` ``optuna.db`` under ``FTSWEEP_RUNS_DIR`` or
``mlruns/``), and the study is loaded only if it is there: a sweep that never ran raises
:class:`~orchestrator.errors.SweepNotStartedError`. Nothing is written: no file, no folder,
no table, no study.
"""

from __future__ import annotations

import os
import re
import sqlite3
from collections import Counter
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit, urlunsplit

from orchestrator.config import SweepSpec, load_spec
from orchestrator.errors import OrchestratorError, SweepNotStartedError
from orchestrator.params import NAMES
from orchestrator.report import best_trial, trial_hyperparameters, trials_frame

if TYPE_CHECKING:
    import optuna
    import pandas as pd

__all__ = ["SweepResults", "open_results", "optuna_url"]


@dataclass(frozen=True)
class SweepResults:
    """The results of one sweep, read from its existing study."""

    spec: SweepSpec
    #: the Optuna storage URL, as shown to users (no password)
    store: str
    study: optuna.Study

    def fixed(self) -> dict[str, Any]:
        """The hyper-parameters the sweep file fixes to one value."""
        values = {}
        for name in NAMES:
            param = getattr(self.spec.space, name, None)
            if param is not None and param.value is not None:
                values[name] = param.value
        return values

    def frame(self) -> pd.DataFrame:
        """One row per trial (see :func:`orchestrator.report.trials_frame`)."""
        return trials_frame(self.study, self.fixed())

    def best(self) -> optuna.trial.FrozenTrial | None:
        """The best completed trial, or None when none has completed."""
        return best_trial(self.study)

    def counts(self) -> dict[str, int]:
        """Trials by state name (``COMPLETE``, ``PRUNED``, ``RUNNING`` ...), sorted by name."""
        seen = Counter(t.state.name for t in self.study.get_trials(deepcopy=False))
        return dict(sorted(seen.items()))

    def hyperparameters(self, trial: optuna.trial.FrozenTrial) -> dict[str, Any]:
        """What ``trial`` trained (its request), else its sampled and fixed values."""
        return trial_hyperparameters(trial, self.fixed())


def optuna_url(spec: SweepSpec) -> str:
    """The sweep's Optuna storage URL, resolved as a run resolves it; creates nothing."""
    if spec.storage.optuna:
        return spec.storage.optuna
    if os.environ.get("FTSWEEP_OPTUNA_STORAGE"):
        return os.environ["FTSWEEP_OPTUNA_STORAGE"]
    root = Path(os.environ.get("FTSWEEP_RUNS_DIR") or "mlruns").resolve()
    return f"sqlite:///{root / 'optuna.db'}"


def open_results(spec_path: str | os.PathLike[str]) -> SweepResults:
    """The results of the sweep in ``spec_path``, read-only.

    Raises :class:`~orchestrator.errors.SpecError` for an invalid sweep file,
    :class:`~orchestrator.errors.SweepNotStartedError` when its study does not exist (no
    store file, or no study of that name in the store), and
    :class:`~orchestrator.errors.OrchestratorError` when the store cannot be read.
    """
    spec = load_spec(spec_path)
    url = optuna_url(spec)
    shown = _without_password(url)
    not_started = SweepNotStartedError(spec.name, shown, str(spec_path))
    return SweepResults(spec, shown, _load_study(spec.name, url, shown, not_started))


def _without_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))


def _sqlite_path(url: str) -> Path | None:
    """The database file of a ``sqlite:`` URL (None for an in-memory database)."""
    _, sep, rest = url.partition(":///")
    path = rest.split("?", 1)[0] if sep else ""
    return Path(path) if path and path != ":memory:" else None


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


def _load_study(name: str, url: str, shown: str, not_started: SweepNotStartedError) -> optuna.Study:
    import optuna
    from sqlalchemy.exc import SQLAlchemyError

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage: optuna.storages.BaseStorage
    try:
        if url.startswith("journal:"):
            from optuna.storages.journal import JournalFileBackend

            path = Path(url.removeprefix("journal:"))
            if not path.is_file():  # JournalFileBackend would create it
                raise not_started
            storage = optuna.storages.JournalStorage(JournalFileBackend(str(path)))
        elif url.startswith("sqlite:"):
            db = _sqlite_path(url)
            if db is None or not _sqlite_has_study(db, name, shown):
                raise not_started
            storage = optuna.storages.RDBStorage(url, skip_table_creation=True)
        else:
            storage = optuna.storages.RDBStorage(
                url, engine_kwargs={"pool_pre_ping": True}, skip_table_creation=True
            )
        return optuna.load_study(
            study_name=name, storage=storage, sampler=optuna.samplers.RandomSampler()
        )
    except KeyError:  # optuna: no study of that name in this storage
        raise not_started from None
    except (
        SQLAlchemyError,
        optuna.exceptions.StorageInternalError,  # wraps a database that does not answer
        ImportError,
        RuntimeError,
        OSError,
        ValueError,
    ) as exc:
        cause = getattr(exc.__cause__, "orig", None) or exc.__cause__ or exc
        if isinstance(exc, SQLAlchemyError):
            cause = exc
        why = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
        password = urlsplit(url).password
        if password:  # drivers do not echo it; in case one does
            why = re.sub(rf"(?<![\w]){re.escape(password)}(?![\w])", "***", why)
        raise OrchestratorError(f"cannot read the Optuna store {shown}: {why}") from exc

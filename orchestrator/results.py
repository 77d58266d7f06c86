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
from collections.abc import Callable, Mapping
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import quote, urlsplit, urlunsplit

from orchestrator.attrs import StudyAttrs, TrialAttrs
from orchestrator.config import SweepSpec, load_spec
from orchestrator.errors import OrchestratorError, SweepNotStartedError
from orchestrator.params import NAMES
from orchestrator.report import best_trial, trial_hyperparameters, trials_frame

if TYPE_CHECKING:
    import optuna
    import pandas as pd

__all__ = [
    "GenerationInfo",
    "SweepResults",
    "generation_study_name",
    "generations",
    "html_report",
    "open_results",
    "optuna_url",
]


@dataclass(frozen=True)
class SweepResults:
    """The results of one sweep, read from its existing study."""

    spec: SweepSpec
    #: the Optuna storage URL, as shown to users (no password)
    store: str
    study: optuna.Study
    #: the generation shown (the lineage's latest; 1 for a sweep never retuned)
    generation: int = 1

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
        """Trials by state name (``COMPLETE``, ``PRUNED``, ``RUNNING`` ...), sorted by name;
        earlier epochs told as trials of their own (``engine/fidelity.py``) as ``DERIVED``,
        since they do not count toward the sweep's trials."""
        from orchestrator.attrs import TrialAttrs

        seen = Counter(
            "DERIVED" if TrialAttrs.DERIVED_FROM in t.user_attrs else t.state.name
            for t in self.study.get_trials(deepcopy=False)
        )
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


def open_results(spec_path: str | os.PathLike[str], *, current: bool = False) -> SweepResults:
    """The results of the sweep in ``spec_path``, read-only: its latest generation's, or
    with ``current`` the latest one that produced a model (``ftsweep retune``).

    Raises :class:`~orchestrator.errors.SpecError` for an invalid sweep file,
    :class:`~orchestrator.errors.SweepNotStartedError` when its study does not exist (no
    store file, or no study of that name in the store), and
    :class:`~orchestrator.errors.OrchestratorError` when the store cannot be read.
    """
    spec = load_spec(spec_path)
    url = optuna_url(spec)
    shown = _without_password(url)
    not_started = SweepNotStartedError(spec.name, shown, str(spec_path))
    found = generations(spec, details=False)
    if current and any(g.succeeded for g in found):
        found = [g for g in found if g.succeeded]
    head = found[-1] if found else None
    name = head.study_name if head else spec.name
    number = head.number if head else 1
    return SweepResults(spec, shown, _load_study(name, url, shown, not_started), number)


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
    #: the fingerprint as JSON (orchestrator.fingerprint.Fingerprint), when recorded
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


def _read_store(url: str, shown: str, read: Callable[[Any], list[T]]) -> list[T]:
    """``read(storage)`` on the store, read-only ([] when there is no store yet)."""
    import optuna
    from sqlalchemy.exc import SQLAlchemyError

    from orchestrator.snapshot import StoreReader

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
                db = _sqlite_path(url)
                if db is None or not db.is_file() or not _sqlite_has_table(db, shown):
                    return []
            storage = StoreReader(url)  # plain queries: orchestrator/snapshot.py
        return read(storage)
    except (
        SQLAlchemyError,
        optuna.exceptions.OptunaError,
        ImportError,
        RuntimeError,
        OSError,
        ValueError,
    ) as exc:
        cause: BaseException = exc
        if isinstance(exc, optuna.exceptions.StorageInternalError) and exc.__cause__:
            cause = exc.__cause__  # optuna's wrapper says less than the driver's error
        text = str(getattr(cause, "orig", None) or cause).strip()
        if _no_tables(text):
            return []  # a database with no Optuna store in it yet
        why = text.splitlines()[0] if text else type(cause).__name__
        password = urlsplit(url).password
        if password:
            why = re.sub(rf"(?<![\w]){re.escape(password)}(?![\w])", "***", why)
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
    from orchestrator.attrs import StudyAttrs

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
                trials = storage.get_all_trials(study._study_id, deepcopy=False)
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
    return _read_store(url, _without_password(url), read)


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

    from orchestrator.snapshot import StoreReader

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
            db = _sqlite_path(url)
            if db is None or not _sqlite_has_study(db, name, shown):
                raise not_started
        return StoreReader(url).study(name)  # plain queries: orchestrator/snapshot.py
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


# -- the HTML report ------------------------------------------------------------------------


def _curves(
    tracking_uri: str, study: optuna.Study
) -> tuple[dict[int, dict[str, list[tuple[int, float]]]], str | None]:
    """Each trial's logged curves, read from MLflow; ({}, why) when they cannot be read.
    An embedded store that is not there is not created."""
    from pathlib import Path

    if tracking_uri.startswith("sqlite:///"):
        path = Path(tracking_uri.removeprefix("sqlite:///"))
        if not path.is_file():
            return {}, f"no MLflow store at {path}: the curves are not shown"
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from orchestrator.htmlreport import CURVE_METRICS, MAX_CURVE_PANELS

    client = MlflowClient(tracking_uri=tracking_uri)
    found: dict[int, dict[str, list[tuple[int, float]]]] = {}
    trials = [
        t for t in study.get_trials(deepcopy=False) if t.user_attrs.get(TrialAttrs.MLFLOW_RUN)
    ]
    try:
        for t in trials[: MAX_CURVE_PANELS * 4]:
            run_id = str(t.user_attrs[TrialAttrs.MLFLOW_RUN])
            try:
                logged = client.get_run(run_id).data.metrics
            except MlflowException:
                continue  # a run deleted since
            curves = {}
            for name in CURVE_METRICS:
                if name in logged:
                    history = client.get_metric_history(run_id, name)
                    curves[name] = sorted((m.step, m.value) for m in history)
            if curves:
                found[t.number] = curves
    except Exception as exc:  # the report is still worth writing without them
        why = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return found, f"the curves could not be read from MLflow ({why})"
    return found, None


def _previous_best(study: optuna.Study, storage: str) -> float | None:
    name = study.user_attrs.get(StudyAttrs.PREVIOUS_STUDY)
    if not name:
        return None
    import optuna

    try:
        previous = optuna.load_study(study_name=str(name), storage=storage)
    except (KeyError, ValueError):
        return None
    concluded = previous.user_attrs.get(StudyAttrs.CONCLUDED)
    if isinstance(concluded, Mapping) and isinstance(concluded.get("best_value"), int | float):
        return float(concluded["best_value"])
    return None


def _advice_notes(spec_path: str, results: SweepResults, frame: pd.DataFrame) -> list[str]:
    """The next sweep's advice, as ``ftsweep run`` prints it (needs the sweep's data to
    resolve the space; without it, none)."""
    from orchestrator.engine import _advice
    from orchestrator.errors import OrchestratorError
    from orchestrator.plan import plan_sweep

    best = results.best()
    if best is None:
        return []
    try:
        plan = plan_sweep(spec_path)
    except OrchestratorError:
        return []
    advice = _advice(plan, results.study, frame, best)
    return list(advice.notes) if advice is not None else []


def html_report(spec_path: str) -> str:
    """The HTML report of the sweep in ``spec_path`` (its latest generation), read-only."""
    from orchestrator.engine.study import resolve_stores
    from orchestrator.htmlreport import ReportInputs, render_html, steps_per_epoch

    results = open_results(spec_path)
    spec = results.spec
    frame = results.frame()
    curves, why = _curves(resolve_stores(spec).mlflow, results.study)
    space = results.study.user_attrs.get(StudyAttrs.SPACE) or spec.space.model_dump(
        mode="json", exclude_none=True
    )
    inputs = ReportInputs(
        sweep=spec.name,
        study=results.study,
        frame=frame,
        metric=spec.objective.metric,
        direction=spec.objective.direction,
        backend=spec.backend.name,
        model=spec.backend.model,
        generation=results.generation,
        budget_usd=spec.budget_usd,
        curves=curves,
        curves_note=why,
        advice=_advice_notes(spec_path, results, frame),
        space=space if isinstance(space, Mapping) else {},
        steps_per_epoch=steps_per_epoch(results.study),
        previous_best=_previous_best(results.study, optuna_url(spec)),
    )
    return render_html(inputs)

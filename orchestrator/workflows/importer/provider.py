"""A provider's past fine-tuning jobs, read through the ``openai`` SDK of a remote backend.

:func:`list_jobs` pages ``client.fine_tuning.jobs.list`` (``after``/``limit``/``has_more``,
each page one retried call of the backend's :class:`~orchestrator.backends.remote.retry.Caller`)
and keeps the finished jobs :class:`JobFilter` selects. :func:`read_job` turns one into an
:class:`ImportedJob`: its hyper-parameters, status, fine-tuned model, trained tokens and the
cost they reconcile to, its curves from the result file (``client.files.content``; a file
that is gone imports with a note and no curve; a failed or cancelled job, which has none,
from its metric events), its checkpoints, and whether it trained on the
sweep's own training file (same file name and size at the provider).
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.backends.remote.events import steps_per_epoch
from orchestrator.backends.remote.resultfile import Curves, parse_result_csv
from orchestrator.catalog.prices import training_cost
from orchestrator.core.errors import BackendError, DataError, UsageError

__all__ = ["FINISHED", "ImportedJob", "JobFilter", "SameFile", "list_jobs", "read_job", "suffix_of"]

#: the job statuses that can be imported (a job still running is not history yet)
FINISHED = ("succeeded", "failed", "cancelled")
_PAGE = 100
_MAX_PAGES = 10_000


@dataclass(frozen=True)
class JobFilter:
    """Which jobs to import: created on or after ``since`` and on or before ``until`` (UTC
    days), whose suffix is ``suffix``, whose base model starts with ``model``, in one of
    ``statuses``."""

    since: dt.date | None = None
    until: dt.date | None = None
    suffix: str | None = None
    model: str | None = None
    statuses: tuple[str, ...] = FINISHED

    def __post_init__(self) -> None:
        bad = sorted(set(self.statuses) - set(FINISHED))
        if bad:
            raise UsageError(f"--status: {bad[0]!r} is not one of {', '.join(FINISHED)}")
        if self.since and self.until and self.since > self.until:
            raise UsageError(f"--since {self.since} is after --until {self.until}")

    def wants(self, job: Any) -> bool:
        """Whether the SDK's job object passes the filter."""
        if str(job.status) not in self.statuses:
            return False
        day = dt.datetime.fromtimestamp(int(job.created_at), dt.UTC).date()
        if (self.since and day < self.since) or (self.until and day > self.until):
            return False
        if self.model and not str(job.model).startswith(self.model):
            return False
        return self.suffix is None or suffix_of(job) == self.suffix


def suffix_of(job: Any) -> str | None:
    """The suffix the job was created with (OpenAI: ``user_provided_suffix``, Azure:
    ``suffix``; else the one in ``ft:model:org:SUFFIX:id``)."""
    for name in ("user_provided_suffix", "suffix"):
        value = getattr(job, name, None)
        if isinstance(value, str) and value:
            return value
    model = str(getattr(job, "fine_tuned_model", None) or "")
    parts = model.split(":")
    return parts[3] if model.startswith("ft:") and len(parts) >= 5 and parts[3] else None


@dataclass(frozen=True)
class ImportedJob:
    """One finished job as the provider recorded it."""

    job_id: str
    provider: str
    status: str  # succeeded | failed | cancelled
    model: str
    created_at: float
    finished_at: float | None
    hyperparameters: dict[str, Any]
    fine_tuned_model: str | None
    trained_tokens: int | None
    cost_usd: float | None
    training_file: str | None
    suffix: str | None
    error: str | None
    curves: Curves = field(default_factory=dict)
    #: why the curve is missing ("result file gone"), or None
    note: str | None = None
    #: trained on the sweep's training file (same name and size at the provider)
    same_data: bool = False
    #: examples in its training file: the sweep's when ``same_data``, else estimated from
    #: the steps per epoch x the batch size (None: not known)
    n_examples: int | None = None
    checkpoints: tuple[str, ...] = ()

    @property
    def steps(self) -> int:
        """The last step of its curves (0: none)."""
        return max((s for c in self.curves.values() for s, _ in c), default=0)


def list_jobs(backend: Any, wanted: JobFilter, *, page_size: int = _PAGE) -> Iterator[Any]:
    """The provider's jobs that ``wanted`` selects, newest first (as the API lists them),
    ``page_size`` per request."""
    fetch = backend.client.fine_tuning.jobs.list
    after: str | None = None
    for _ in range(_MAX_PAGES):
        kwargs: dict[str, Any] = {"limit": page_size}
        if after:
            kwargs["after"] = after
        page = backend.caller.call("list fine-tuning jobs", functools.partial(fetch, **kwargs))
        items = list(page.data)
        for job in items:
            if wanted.wants(job):
                yield job
        if not items or not page.has_more:
            return
        after = items[-1].id


def _hyperparameters(job: Any) -> dict[str, Any]:
    hp = job.hyperparameters
    method = getattr(job, "method", None)
    supervised = getattr(method, "supervised", None) if method is not None else None
    if supervised is not None and getattr(supervised, "hyperparameters", None) is not None:
        hp = supervised.hyperparameters
    found: dict[str, Any] = {}
    for name, kind in (("n_epochs", int), ("batch_size", int), ("learning_rate_multiplier", float)):
        value = getattr(hp, name, None)
        if isinstance(value, int | float) and not isinstance(value, bool):
            found[name] = kind(value)
    return found


def _not_found(exc: BaseException) -> bool:
    return getattr(exc.__cause__, "status_code", None) == 404


def read_job(
    backend: Any,
    job: Any,
    *,
    train_file: Path,
    n_train: int,
    same_file: Callable[[str], bool] | None = None,
) -> ImportedJob:
    """``job`` (the SDK's object) with its result file and checkpoints read (see the module
    docstring). ``same_file(file_id)`` says whether a training file is the sweep's (default:
    the provider's file has ``train_file``'s name and size)."""
    client, call = backend.client, backend.caller.call
    hp = _hyperparameters(job)
    curves: Curves = {}
    note = None
    result_files = list(getattr(job, "result_files", None) or [])
    if result_files:
        file_id = result_files[0]
        try:
            content = call("download results", lambda: client.files.content(file_id))
            curves = parse_result_csv(content.read(), f"{job.id}: result file {file_id}")
        except BackendError as exc:
            if not _not_found(exc):
                raise
            note = f"result file {file_id} is gone (404): no curve"
        except DataError as exc:
            note = f"result file {file_id} unreadable: {exc}"
    elif job.status == "succeeded":
        note = "no result file: no curve"
    else:  # a failed or cancelled job has no result file: its metric events, if any
        curves = _event_curves(backend, str(job.id))
    checkpoints: list[str] = []
    if job.status == "succeeded":
        page = call(
            "list checkpoints",
            lambda: client.fine_tuning.jobs.checkpoints.list(job.id, limit=_PAGE),
        )
        found = sorted(page.data, key=lambda c: int(getattr(c, "step_number", 0) or 0))
        checkpoints = [str(c.fine_tuned_model_checkpoint) for c in found]
    training_file = getattr(job, "training_file", None)
    check = same_file or SameFile(backend, train_file)
    same = bool(training_file) and check(str(training_file))
    n_examples: int | None = n_train if same else None
    total = max((s for c in curves.values() for s, _ in c), default=0)
    per_epoch = steps_per_epoch(total, hp.get("n_epochs")) if job.status == "succeeded" else None
    if n_examples is None and per_epoch and "batch_size" in hp:
        n_examples = round(per_epoch) * int(hp["batch_size"])
    trained = getattr(job, "trained_tokens", None)
    price = backend.price(str(job.model))
    cost = training_cost(int(trained), 1, price) if trained and price is not None else None
    err = getattr(job, "error", None)
    error = None
    if job.status == "failed" and err is not None:
        code, message = getattr(err, "code", None), getattr(err, "message", None)
        error = f"{code}: {message}" if code and message else (message or code or "job failed")
    finished = getattr(job, "finished_at", None)
    return ImportedJob(
        job_id=str(job.id),
        provider=backend.name,
        status=str(job.status),
        model=str(job.model),
        created_at=float(job.created_at),
        finished_at=float(finished) if finished else None,
        hyperparameters=hp,
        fine_tuned_model=getattr(job, "fine_tuned_model", None) or None,
        trained_tokens=int(trained) if trained else None,
        cost_usd=cost,
        training_file=str(training_file) if training_file else None,
        suffix=suffix_of(job),
        error=backend.caller.message(error) if error else None,
        curves=curves,
        note=note,
        same_data=same,
        n_examples=n_examples,
        checkpoints=tuple(checkpoints),
    )


def _event_curves(backend: Any, job_id: str) -> Curves:
    """The curves of a job's metric events (``fine_tuning.jobs.list_events``, through the
    backend's poll from the start)."""
    from orchestrator.backends.base import JobHandle

    update = backend.poll(JobHandle(backend.name, job_id, ""))
    curves: Curves = {}
    for p in sorted(update.points, key=lambda p: p.step):
        curve = curves.setdefault(p.name, [])
        if not curve or p.step > curve[-1][0]:
            curve.append((p.step, p.value))
    return curves


class SameFile:
    """Whether a provider file is the sweep's training file: the same name and size (one
    ``files.retrieve`` per file id; a file deleted since is not the same)."""

    def __init__(self, backend: Any, train_file: Path) -> None:
        self.backend = backend
        self.train_file = train_file
        self._seen: dict[str, bool] = {}

    def __call__(self, file_id: str) -> bool:
        if file_id not in self._seen:
            self._seen[file_id] = self._check(file_id)
        return self._seen[file_id]

    def _check(self, file_id: str) -> bool:
        backend = self.backend
        try:
            found = backend.caller.call(
                "retrieve file", lambda: backend.client.files.retrieve(file_id)
            )
            size = self.train_file.stat().st_size
        except BackendError as exc:
            if _not_found(exc):
                return False
            raise
        except OSError:
            return False
        return (str(found.filename), int(found.bytes)) == (self.train_file.name, size)

"""What the OpenAI and Azure OpenAI backends share: submit, poll, cancel on the ``openai`` SDK.

* Files are uploaded once per content (:class:`.files.FileCache`).
* ``submit`` looks for the key's job first (:meth:`Backend.find`); when a create attempt fails
  with a 5xx or a dropped connection, it looks again before retrying, so a job is never
  created twice for one key.
* ``poll`` retrieves the job, then only the events after the cursor (the id of the newest
  event seen, plus the total step count), sorted by ``created_at``; metrics events become
  :class:`MetricPoint` s, with ``epoch = step / (total_steps / n_epochs)``. Checkpoints of
  earlier epochs come with every update of a started job.
"""

from __future__ import annotations

import functools
import time
from abc import abstractmethod
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar

from orchestrator.backends.base import (
    Backend,
    Checkpoint,
    JobHandle,
    JobStatus,
    JobUpdate,
    MetricPoint,
    TrainingRequest,
)
from orchestrator.backends.remote.events import (
    checkpoint_of,
    job_status,
    metric_points,
    parse_result_csv,
    steps_per_epoch,
)
from orchestrator.backends.remote.files import FileCache
from orchestrator.backends.remote.retry import Caller, RetryPolicy, describe
from orchestrator.costs import training_cost, training_price
from orchestrator.errors import BackendError, DataError, UnsupportedParameterError, UsageError

__all__ = ["RemoteBackend"]

_SECRET_OPTIONS = {"api_key", "key", "azure_ad_token", "token", "password", "secret"}
_PAGE = 100
_MAX_PAGES = 1000


def _encode_cursor(event_id: str | None, total: int | None) -> str | None:
    if event_id is None and total is None:
        return None
    return f"{event_id or ''}|{total or ''}"


def _decode_cursor(cursor: str | None) -> tuple[str | None, int | None]:
    if not cursor:
        return None, None
    event_id, _, total = cursor.partition("|")
    return event_id or None, int(total) if total.isdigit() else None


def _file_not_ready(exc: Exception) -> bool:
    """A 400 on create because an upload is still being processed: worth retrying."""
    text = describe(exc).lower()
    return any(words in text for words in ("not ready", "not been processed", "still processing"))


class RemoteBackend(Backend):
    """A fine-tuning API reached through the ``openai`` SDK (see the module docstring)."""

    supported_parameters: ClassVar[frozenset[str]] = frozenset(
        {"n_epochs", "batch_size", "learning_rate_multiplier"}
    )
    max_batch_size: ClassVar[int | None] = 256
    poll_interval: tuple[float, float] = (5.0, 60.0)
    #: per-request options (``TrainingRequest.options``) this backend understands
    request_options: ClassVar[frozenset[str]] = frozenset()
    #: backend options (the sweep file's ``backend.options``) accepted by the constructor
    backend_options: ClassVar[frozenset[str]] = frozenset(
        {"timeout", "max_wait", "prices", "poll_interval"}
    )
    #: does the events list come newest first (OpenAI) or oldest first (Azure)?
    events_newest_first: ClassVar[bool] = True

    def __init__(
        self,
        *,
        client: Any = None,
        workdir: str | Path | None = None,
        timeout: float = 60.0,
        max_wait: float = 300.0,
        prices: Mapping[str, float] | None = None,
        poll_interval: tuple[float, float] | list[float] | None = None,
        sleeper: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client_instance = client
        self.workdir = Path(workdir) if workdir is not None else None
        self.timeout = timeout
        self.prices = dict(prices or {})
        if poll_interval is not None:  # e.g. [0.2, 1] for rehearsals against a fast apisim
            lo, hi = (float(x) for x in poll_interval)
            if not 0 < lo <= hi:
                raise UsageError("backend.options: poll_interval: give [first, most] seconds > 0")
            self.poll_interval = (lo, hi)
        self.caller = Caller(
            RetryPolicy(max_wait=max_wait), sleeper=sleeper, clock=clock, secrets=self._secrets
        )
        self._files: FileCache | None = None
        self._tokens: dict[tuple[str, str, int, int], int] = {}

    @classmethod
    def from_options(cls, options: Mapping[str, Any], *, workdir: Path) -> Backend:
        """Options from the sweep file; keys never come from there (only the environment)."""
        secret = sorted(set(options) & _SECRET_OPTIONS)
        if secret:
            raise UsageError(
                f"backend.options: {secret[0]}: credentials come from the environment, "
                "never from sweep files"
            )
        unknown = sorted(set(options) - cls.backend_options)
        if unknown:
            known = ", ".join(sorted(cls.backend_options))
            raise UsageError(f"backend.options: unknown option {unknown[0]!r}; known: {known}")
        return cls(workdir=workdir, **options)

    # -- what each provider defines --------------------------------------------------------
    @abstractmethod
    def _make_client(self) -> Any:
        """A configured SDK client (``max_retries=0``) from the environment."""

    @abstractmethod
    def _scope(self) -> str:
        """The provider's address: file ids and ledgers are only valid there."""

    @abstractmethod
    def _create_params(
        self, request: TrainingRequest, train_id: str, valid_id: str | None
    ) -> dict[str, Any]:
        """Keyword arguments of ``fine_tuning.jobs.create`` (carrying the request's key)."""

    @abstractmethod
    def _find_job(self, key: str) -> Any | None:
        """The provider's job object created for ``key``, or None."""

    def _created(self, key: str, job_id: str) -> None:
        """Called once a job exists for ``key`` (a ledger may record it)."""

    def _secrets(self) -> list[str]:
        return []

    # -- plumbing -------------------------------------------------------------------------
    @property
    def client(self) -> Any:
        if self._client_instance is None:
            self._client_instance = self._make_client()
        return self._client_instance

    @property
    def files(self) -> FileCache:
        if self._files is None:
            index = self.workdir / "remote-files.json" if self.workdir is not None else None
            self._files = FileCache(index, f"{self.name}:{self._scope()}")
        return self._files

    def _call(self, what: str, fn: Callable[[], Any], **kw: Any) -> Any:
        return self.caller.call(what, fn, **kw)

    # -- the contract ---------------------------------------------------------------------
    def check(self, request: TrainingRequest) -> None:
        super().check(request)
        hp = request.hyperparameters
        unknown = sorted(set(request.options) - self.request_options)
        if unknown:
            allowed = ", ".join(sorted(self.request_options)) or "none"
            raise UnsupportedParameterError(
                f"backend {self.name!r} does not accept option {unknown[0]!r} (accepted: {allowed})"
            )
        if not 1 <= hp.n_epochs <= 50:
            raise UnsupportedParameterError(f"n_epochs must be 1 to 50, got {hp.n_epochs}")
        if hp.batch_size < 1:
            raise UnsupportedParameterError(f"batch_size must be >= 1, got {hp.batch_size}")
        if not hp.learning_rate_multiplier > 0:
            raise UnsupportedParameterError(
                f"learning_rate_multiplier must be > 0, got {hp.learning_rate_multiplier}"
            )
        for path in (request.train_file, request.valid_file):
            if path is not None and not Path(path).is_file():
                raise DataError(str(path), "no such file")

    def estimate_cost(self, request: TrainingRequest) -> float | None:
        """Price per token from the table (or ``prices``) x billed tokens x epochs."""
        price = training_price(request.model, self.prices)
        tokens = self._billed_tokens(Path(request.train_file), request.model)
        if price is None or tokens is None:
            return None
        return training_cost(tokens, request.hyperparameters.n_epochs, price)

    def _billed_tokens(self, path: Path, model: str) -> int | None:
        from orchestrator.data.checks import check_file
        from orchestrator.errors import OrchestratorError

        try:
            st = path.stat()
        except OSError:
            return None
        key = (str(path.resolve()), model, st.st_size, st.st_mtime_ns)
        if key not in self._tokens:
            try:
                stats, _, _ = check_file(path, model)
            except OrchestratorError:
                return None
            self._tokens[key] = stats.billed_tokens
        return self._tokens[key]

    def submit(self, request: TrainingRequest) -> JobHandle:
        self.check(request)
        existing = self.find(request.key)
        if existing is not None:
            return existing
        train_id = self.files.file_id(self.client, Path(request.train_file), self.caller)
        valid_id = (
            self.files.file_id(self.client, Path(request.valid_file), self.caller)
            if request.valid_file is not None
            else None
        )
        params = self._create_params(request, train_id, valid_id)
        job = self._call(
            "create fine-tuning job",
            lambda: self.client.fine_tuning.jobs.create(**params),
            recover=lambda: self._find_job(request.key),
            retry_if=_file_not_ready,
        )
        self._created(request.key, job.id)
        return JobHandle(self.name, job.id, request.key)

    def find(self, key: str) -> JobHandle | None:
        job = self._find_job(key)
        if job is None:
            return None
        self._created(key, job.id)
        return JobHandle(self.name, job.id, key)

    def poll(self, handle: JobHandle, cursor: str | None = None) -> JobUpdate:
        jobs = self.client.fine_tuning.jobs
        job = self._call("retrieve job", lambda: jobs.retrieve(handle.job_id))
        status = job_status(job.status)
        last_id, total = _decode_cursor(cursor)
        fresh = self._events_after(handle.job_id, last_id)
        n_epochs = getattr(job.hyperparameters, "n_epochs", None)
        points: list[MetricPoint] = []
        for event in fresh:
            if getattr(event, "type", None) != "metrics" and not event.message.startswith("Step "):
                continue
            data = event.data if isinstance(event.data, dict) else None
            _, seen_total, new = metric_points(
                data, event.message, steps_per_epoch(total, n_epochs)
            )
            if seen_total and seen_total != total:
                total = seen_total
                _, _, new = metric_points(data, event.message, steps_per_epoch(total, n_epochs))
            points.extend(new)
        if fresh:
            last_id = fresh[-1].id
        checkpoints: tuple[Checkpoint, ...] = ()
        if status is not JobStatus.QUEUED:
            checkpoints = self._checkpoints(handle.job_id, steps_per_epoch(total, n_epochs))
        error = None
        if status is JobStatus.FAILED:
            err = job.error
            code, message = getattr(err, "code", None), getattr(err, "message", None)
            text = f"{code}: {message}" if code and message else (message or code or "job failed")
            error = self.caller.message(str(text))
        return JobUpdate(
            status=status,
            points=tuple(points),
            cursor=_encode_cursor(last_id, total),
            total_steps=total,
            trained_tokens=job.trained_tokens if status.terminal else None,
            fine_tuned_model=job.fine_tuned_model,
            error=error,
            checkpoints=checkpoints,
        )

    def _pages(
        self, what: str, fetch: Callable[..., Any], after: str | None = None
    ) -> Iterator[list[Any]]:
        """The items of each page of a cursor-paginated list, one retried call per page."""
        for _ in range(_MAX_PAGES):
            kwargs: dict[str, Any] = {"limit": _PAGE}
            if after:
                kwargs["after"] = after
            page = self._call(what, functools.partial(fetch, **kwargs))
            items = list(page.data)
            yield items
            if not items or page.has_more is False:
                return
            after = items[-1].id

    def _events_after(self, job_id: str, last_id: str | None) -> list[Any]:
        """Events newer than ``last_id``, oldest first."""
        fetch = functools.partial(self.client.fine_tuning.jobs.list_events, job_id)
        collected: list[Any] = []
        if self.events_newest_first:  # walk back from the newest to the last one seen
            for items in self._pages("list job events", fetch):
                ids = [item.id for item in items]
                if last_id in ids:
                    collected += items[: ids.index(last_id)]
                    break
                collected += items
            collected.reverse()
        else:
            for items in self._pages("list job events", fetch, after=last_id):
                collected += items
        return sorted(collected, key=lambda e: e.created_at)

    def _checkpoints(self, job_id: str, per_epoch: float | None) -> tuple[Checkpoint, ...]:
        page = self._call(
            "list checkpoints",
            lambda: self.client.fine_tuning.jobs.checkpoints.list(job_id, limit=_PAGE),
        )
        found = [checkpoint_of(c, per_epoch) for c in page.data]
        return tuple(sorted(found, key=lambda c: c.step))

    def cancel(self, handle: JobHandle) -> None:
        jobs = self.client.fine_tuning.jobs
        job = self._call("retrieve job", lambda: jobs.retrieve(handle.job_id))
        if job_status(job.status).terminal:
            return
        try:
            self._call("cancel job", lambda: jobs.cancel(handle.job_id))
        except BackendError:
            job = self._call("retrieve job", lambda: jobs.retrieve(handle.job_id))
            if not job_status(job.status).terminal:  # else it finished meanwhile: a no-op
                raise

    def results(self, handle: JobHandle) -> list[MetricPoint]:
        """Every point of a finished job's result file (``result_files[0]``), or []."""
        jobs = self.client.fine_tuning.jobs
        job = self._call("retrieve job", lambda: jobs.retrieve(handle.job_id))
        if not job.result_files:
            return []
        file_id = job.result_files[0]
        content = self._call("download results", lambda: self.client.files.content(file_id))
        return parse_result_csv(content.read())

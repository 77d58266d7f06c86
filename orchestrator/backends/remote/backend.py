"""What the OpenAI and Azure OpenAI backends share: submit, poll, cancel on the ``openai`` SDK.

* Files are uploaded once per content (:class:`.files.FileCache`).
* ``submit`` looks for the key's job first (:meth:`Backend.find`); when a create attempt fails
  with a 5xx or a dropped connection, it looks again before retrying, so a job is never
  created twice for one key.
* ``preflight`` builds the client (credentials set) and lists one fine-tuning job (they are
  accepted, the address answers), waiting at most ``connect_timeout`` seconds.
* ``poll`` retrieves the job, then only the events after the cursor (the id of the newest
  event seen, plus the total step count), sorted by ``created_at``; metrics events become
  :class:`MetricPoint` s, with ``epoch = step / (total_steps / n_epochs)``. Checkpoints of
  earlier epochs come with every update of a started job.
* ``list_models`` lists the provider's models (one retried call, :mod:`.models` reads the
  OpenAI and Azure shapes); ``submit`` resolves an alias (``gpt-4o-mini@latest``) with it to
  the newest snapshot, and refuses one whose snapshots are all shut down, naming what to use.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import time
from abc import abstractmethod
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import Field, model_validator

from orchestrator.backends.base import (
    DEFAULT_CAPABILITIES,
    Backend,
    BackendOptions,
    Capabilities,
    Checkpoint,
    JobHandle,
    JobStatus,
    JobUpdate,
    MetricPoint,
    ModelInfo,
    Range,
    TrainingRequest,
    epoch_ends_of,
)
from orchestrator.backends.remote.events import (
    checkpoint_of,
    job_status,
    metric_points,
    parse_result_csv,
    steps_per_epoch,
)
from orchestrator.backends.remote.files import FileCache
from orchestrator.backends.remote.models import models_of
from orchestrator.backends.remote.retry import Caller, Provider, RetryPolicy, describe
from orchestrator.catalog.names import is_alias, resolve_model, sunset, sunset_message
from orchestrator.catalog.prices import training_cost, training_price
from orchestrator.core import clock
from orchestrator.core.errors import (
    BackendError,
    DataError,
    ProviderAuthError,
    ProviderBusyError,
    ProviderUnreachableError,
    UnsupportedParameterError,
    UsageError,
)

if TYPE_CHECKING:
    from orchestrator.catalog.tokens import ExampleCounter
    from orchestrator.data.findings import DatasetStats

__all__ = ["REMOTE_CAPABILITIES", "RemoteBackend", "RemoteOptions"]

_SECRET_OPTIONS = {"api_key", "key", "azure_ad_token", "token", "password", "secret"}

#: what OpenAI's and Azure's fine-tuning APIs accept (``n_epochs`` 1-50, ``batch_size`` up to
#: 256, a positive multiplier); no ``prompt_loss_weight`` on today's jobs
REMOTE_CAPABILITIES = Capabilities(
    parameters={
        **DEFAULT_CAPABILITIES.parameters,
        "n_epochs": Range(1, 50),
        "batch_size": Range(1, 256),
    },
    priced=True,
)


class RemoteOptions(BackendOptions):
    """``backend.options`` shared by the remote backends. Credentials are never options:
    they come from the environment."""

    #: seconds per HTTP request
    timeout: float = Field(default=60.0, gt=0, allow_inf_nan=False)
    #: seconds one call may spend retrying 429s and 5xx before the provider counts as busy
    max_wait: float = Field(default=300.0, ge=0, allow_inf_nan=False)
    #: seconds of failed connections (refused, unknown host, timeouts) before the provider
    #: counts as unreachable: at the pre-flight check and in every call of the sweep
    connect_timeout: float = Field(default=30.0, gt=0, allow_inf_nan=False)
    #: USD per 1M trained tokens by model name, over the built-in table
    prices: dict[str, float] = Field(default_factory=dict)
    #: [first, most] seconds between polls of one job (e.g. [0.2, 1] against a fast apisim)
    poll_interval: list[float] | None = Field(default=None, min_length=2, max_length=2)

    @model_validator(mode="before")
    @classmethod
    def _no_credentials(cls, data: Any) -> Any:
        if isinstance(data, Mapping):
            secret = sorted(set(data) & _SECRET_OPTIONS)
            if secret:
                raise ValueError(
                    f"{secret[0]}: credentials come from the environment, never from sweep files"
                )
        return data

    @model_validator(mode="after")
    def _checked(self) -> RemoteOptions:
        for model, price in self.prices.items():
            if not (price >= 0 and price < float("inf")):
                raise ValueError(f"prices: {model}: must be a finite number >= 0")
        if self.poll_interval is not None:
            lo, hi = self.poll_interval
            if not 0 < lo <= hi < float("inf"):
                raise ValueError("poll_interval: give [first, most] seconds, 0 < first <= most")
        return self


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

    capabilities: ClassVar[Capabilities] = REMOTE_CAPABILITIES
    Options: ClassVar[type[BackendOptions]] = RemoteOptions
    poll_interval: tuple[float, float] = (5.0, 60.0)
    #: does the events list come newest first (OpenAI) or oldest first (Azure)?
    events_newest_first: ClassVar[bool] = True

    def __init__(
        self,
        *,
        client: Any = None,
        workdir: str | Path | None = None,
        options: BackendOptions | None = None,
        sleeper: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        today: Callable[[], datetime.date] = clock.today,
        **settings: Any,
    ) -> None:
        """``settings`` are options given as keywords (``timeout=5``), laid over ``options``;
        ``today`` dates model shutdowns (for aliases)."""
        base = options.model_dump() if options is not None else {}
        parsed = self.Options.model_validate({**base, **settings}, strict=False)
        super().__init__(workdir=Path(workdir) if workdir is not None else None, options=parsed)
        opts = self.remote_options
        self._client_instance = client
        self.timeout = opts.timeout
        self.prices = dict(opts.prices)
        if opts.poll_interval is not None:
            lo, hi = opts.poll_interval
            self.poll_interval = (lo, hi)
        self.caller = Caller(
            RetryPolicy(max_wait=opts.max_wait, connect_wait=opts.connect_timeout),
            sleeper=sleeper,
            clock=clock,
            secrets=self._secrets,
            provider=self._provider,
        )
        self._files: FileCache | None = None
        self.today = today
        self._models: list[ModelInfo] | None = None

    @property
    def remote_options(self) -> RemoteOptions:
        assert isinstance(self.options, RemoteOptions)
        return self.options

    @classmethod
    def token_counter(cls, model: str, options: BackendOptions) -> ExampleCounter | None:
        """tiktoken's exact counts for OpenAI models (the cookbook's chat formula)."""
        from orchestrator.catalog.tokens import openai_counter

        return openai_counter(model)

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

    def _provider(self) -> Provider:
        """Names for messages: what to check when credentials are refused, where the
        address is set (asked when a message needs them)."""
        return Provider(self.name, url=self._scope)

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
    def preflight(self) -> None:
        """The credentials are set (the client is built), then one cheap authenticated call:
        list one fine-tuning job, retried for at most ``connect_timeout`` seconds. 401/403
        raise :class:`ProviderAuthError`, no connection :class:`ProviderUnreachableError`;
        a rate limit passes (the key was accepted); any other failure, a persistent 5xx or
        a 404 of a wrong address, is a :class:`BackendError` naming the address."""
        import openai

        client = self.client
        wait = self.remote_options.connect_timeout
        caller = Caller(
            RetryPolicy(max_wait=wait, connect_wait=wait),
            sleeper=self.caller.sleeper,
            clock=self.caller.clock,
            secrets=self._secrets,
            provider=self._provider,
        )
        timeout = min(self.timeout, max(wait, 1.0))
        try:
            caller.call(
                "list fine-tuning jobs",
                lambda: client.fine_tuning.jobs.list(limit=1, timeout=timeout),
            )
        except (ProviderAuthError, ProviderUnreachableError):
            raise
        except ProviderBusyError as exc:
            if isinstance(exc.__cause__, openai.RateLimitError):
                return  # rate-limited: the credentials were accepted
            raise BackendError(
                f"{self.name} at {self._scope()} is failing ({exc}): try again later"
            ) from exc
        except BackendError as exc:
            setting = self._provider().address_setting
            raise BackendError(
                f"{self.name} at {self._scope()} cannot be used ({exc}): check {setting}"
            ) from exc

    def check(self, request: TrainingRequest) -> None:
        super().check(request)
        try:
            self.Options.model_validate(dict(request.options), strict=False)
        except ValueError as exc:
            raise UnsupportedParameterError(
                f"backend {self.name!r}: bad options in the request: {exc}"
            ) from None
        for path in (request.train_file, request.valid_file):
            if path is not None and not Path(path).is_file():
                raise DataError(str(path), "no such file")

    def price(self, model: str) -> float | None:
        """USD per 1M trained tokens for ``model`` (``prices`` over the built-in table)."""
        return training_price(model, self.prices)

    def estimate_cost(self, request: TrainingRequest, train: DatasetStats) -> float | None:
        """Price per token x the file's billed tokens x epochs."""
        price = self.price(request.model)
        if price is None or train.tokens is None:
            return None
        return training_cost(train.billed_tokens, request.hyperparameters.n_epochs, price)

    def job_cost(
        self, request: TrainingRequest, update: JobUpdate, train: DatasetStats
    ) -> float | None:
        """Reconciled from the job's ``trained_tokens`` when the provider reports them."""
        price = self.price(request.model)
        if update.cost_usd is None and update.trained_tokens is not None and price is not None:
            return training_cost(update.trained_tokens, 1, price)
        return super().job_cost(request, update, train)

    def list_models(self) -> list[ModelInfo]:
        """The provider's models (``client.models.list()``), through the retrying caller."""
        page = self._call("list models", lambda: self.client.models.list())
        models = models_of(getattr(page, "data", None) or [])
        self._models = models
        return models

    def resolve_model(self, model: str) -> str:
        """``model`` itself, or for an alias the snapshot it names in the provider's list
        (listed once per instance). Raises :class:`UsageError` for an alias with no snapshot
        or whose snapshots are all shut down (naming the replacement, if any)."""
        if not is_alias(model):
            return model
        models = self._models if self._models is not None else self.list_models()
        today = self.today()
        resolved = resolve_model(model, models, today)
        ending = sunset(resolved, models, today)
        if ending is not None and ending.passed:
            raise UsageError(f"{model}: {sunset_message(ending, backend=self.name)}")
        return resolved

    def submit(self, request: TrainingRequest) -> JobHandle:
        self.check(request)
        existing = self.find(request.key)
        if existing is not None:
            return existing
        model = self.resolve_model(request.model)
        if model != request.model:  # the key stays: resubmitting finds this job
            request = dataclasses.replace(request, model=model)
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
        if points and status is JobStatus.QUEUED:
            # the job was read before its events: it started in between (metrics are only
            # written while a job runs), so it is running now, not queued
            status = JobStatus.RUNNING
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
            epoch_ends=epoch_ends_of(points),
            paused=str(job.status or "").lower() == "paused",
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

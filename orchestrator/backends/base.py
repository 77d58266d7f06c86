"""The backend contract: what every fine-tuning backend implements.

A backend runs one fine-tuning job per :class:`TrainingRequest` and is driven by polling, so a
local subprocess and a remote API job look the same to the sweep engine. A backend is complete
by this contract alone; ``docs/backends.md`` shows one written from scratch, and
:mod:`orchestrator.testing` ships the contract suite it must pass.

**What a backend declares (data, checked before anything starts).**

* :attr:`Backend.capabilities` — the hyper-parameters it accepts and the range of each
  (:class:`Range`), how many jobs may run at once, the metrics its jobs report, whether jobs
  cost money. ``ftsweep space``/``estimate``/``run`` check the whole resolved search space
  and every ``enqueue`` entry against it, so a value the backend would refuse is an error
  (exit 2) before a study, an upload or a job exists.
* :attr:`Backend.Options` — a pydantic model of the sweep file's ``backend.options``
  (``extra="forbid"``): a mistyped option reads ``sweeps/x.yaml: backend.options.lr: unknown
  field``. The validated options reach the backend (``self.options``, through
  :meth:`Backend.from_options`, which receives the model, not a mapping) and every request
  (:attr:`TrainingRequest.options`, part of the configuration hash).

**What a backend can check.** :meth:`Backend.check_resources` (optional) refuses a space
whose most demanding configuration its jobs cannot run (the local trainer: one that cannot
fit a GPU's memory), for ``space``, ``estimate`` and ``run`` alike (exit 2).

**What a backend can supply.** :meth:`Backend.token_counter` counts tokens for its models
exactly as it trains them (the data checks use it; ``None`` skips token counts);
:meth:`Backend.estimate_cost` the cost of a job before it runs, from the dataset's statistics;
:meth:`Backend.job_cost` the cost of a finished job (by default :attr:`JobUpdate.cost_usd`,
else the estimate, so a budget always binds). The engine and ``ftsweep estimate`` read
whatever these return and never :attr:`Capabilities.priced`: an estimate of an unpriced
backend counts toward the budget and the estimate like any other, so a backend whose jobs
cost nothing keeps the default ``None``. ``priced`` is a declaration: the contract suite
then requires an estimate, and a cost of every finished job.

**What a backend can list.** :meth:`Backend.list_models` returns the provider's models as
:class:`ModelInfo` (id, created, shutdown date, fine-tunable), or None (the default) when
there is no model list; aliases (``gpt-4o-mini@latest``) and sunsets are computed from it by
:mod:`orchestrator.catalog.names`.

**Before the first trial.** :meth:`Backend.preflight` (optional; the default does nothing)
checks that jobs can be started at all: credentials present, and for a remote service one
cheap authenticated call that answers within a bounded wait. ``ftsweep run`` calls it right
after building the backend, before a study exists or a trial is asked, and stops with exit 1
and its one-line message: a missing key, a refused one or a dead address never costs a
trial. It must start nothing and spend nothing.

**The job methods** (each method's docstring states its arguments, result and errors).

* :meth:`Backend.submit` is **idempotent on** ``request.key``: submitting a request whose key
  already has a job returns that job's handle and starts nothing.
* :meth:`Backend.find` re-attaches: from a fresh process, given only the key, it returns the
  handle of the job started for that key (running or finished), or ``None``.
* :meth:`Backend.poll` returns what happened since ``cursor`` (an opaque string the previous
  update returned; ``None`` the first time): the status and only the *new* metric points and
  epoch ends, so polling with each returned cursor yields every point exactly once, and
  polling with ``None`` yields everything again. A poll may move the job on (a provider
  that works only when asked, or a simulated one such as
  :class:`orchestrator.testing.instant.InstantBackend`); ``poll(handle, None)`` then returns
  everything up to where that poll took it, and a poll with ``None`` moves the job no
  further than a poll with a cursor would (the engine polls with ``None`` after a restart).
* :meth:`Backend.cancel` stops a job; metrics reported before it stay readable. Cancelling a
  finished job is a no-op. A job may end before its first poll (a backend whose jobs finish
  at submit): the contract suite has a mode for it (``BackendCase.instant_jobs``).

**Errors.** Every method raises only :class:`~orchestrator.core.errors.OrchestratorError`
subclasses on purpose: ``ProviderBusyError`` from ``submit`` when the provider refuses new
work for now (the engine submits again later; only this waits); ``UsageError`` (such as
``UnsupportedParameterError``) for a request that can never run; ``BackendError`` for anything
else (a failed ``submit`` fails that trial; a failed ``poll`` is retried with back-off; a
failed ``cancel`` is retried with back-off and reported). The engine keeps any other error,
even an unexpected one, inside the trial it happened in: the sweep goes on. Two errors are
about the provider, not the trial, and may come from any method (``preflight`` included):
``ProviderAuthError`` (credentials missing or refused, HTTP 401/403, an account that may not
fine-tune) and ``ProviderUnreachableError`` (no connection within the backend's bounded
wait, naming the URL). The engine stops the sweep on them with exit 1 and charges no trial
for them: trials in flight stay RUNNING, and the next ``ftsweep run`` re-attaches.

**Epochs.** An epoch ends at the optimizer step where the job has passed once over the
training data. Backends say so in :attr:`JobUpdate.epoch_ends`: over the whole job each
epoch ``1..n_epochs`` once, in step order, the last at the job's last step
(:attr:`JobUpdate.total_steps`). When the steps do not divide evenly into epochs (100 steps
over 3 epochs), epoch ``k`` ends at the first step by which ``k`` passes are done
(``ceil(k * total_steps / n_epochs)``: 34, 67, 100). Backends that report the ``epoch``
metric (fractional epochs done, growing by the same amount each step) can use
:func:`epoch_ends_of`, which finds these steps whether or not ``epoch`` is a whole number
there. The engine reports the objective to the pruner once per epoch end (step = epoch
number), with the value at or before that step: a backend without epoch ends is never
pruned.

**State.** ``self.workdir`` (given by :meth:`Backend.from_options`, under the sweep's stores)
is where a backend keeps what must outlive the process (job folders, a key -> job index), so
``find`` works from a fresh process with the same sweep file. It is ``None`` when the
backend was built directly without one (``Backend()`` in a test or a script; ftsweep itself
always gives one): a backend that needs it raises
:class:`~orchestrator.core.errors.BackendError` saying so.

Metric names are OpenAI's (:data:`METRIC_NAMES`), step-indexed, plus ``epoch``. The
requests, handles and updates are defined in :mod:`orchestrator.backends.jobs` and exported
from here, where backends import them. Backends are discovered through the entry-point
group ``ftsweep.backends`` (see :mod:`orchestrator.backends.registry`).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict

from orchestrator.backends.jobs import (
    GENERATION_METRICS,
    METRIC_NAMES,
    THROUGHPUT_METRICS,
    Checkpoint,
    EpochEnd,
    Hyperparameters,
    JobHandle,
    JobStatus,
    JobUpdate,
    MetricPoint,
    TrainingRequest,
    epoch_ends_of,
)
from orchestrator.catalog.names import ModelInfo
from orchestrator.core.errors import UnsupportedParameterError
from orchestrator.core.params import NAMES, parameter

if TYPE_CHECKING:
    from orchestrator.catalog.tokens import ExampleCounter
    from orchestrator.data.findings import DatasetStats

__all__ = [
    "DEFAULT_CAPABILITIES",
    "GENERATION_METRICS",
    "METRIC_NAMES",
    "THROUGHPUT_METRICS",
    "Backend",
    "BackendOptions",
    "Capabilities",
    "Checkpoint",
    "EpochEnd",
    "Hyperparameters",
    "JobHandle",
    "JobStatus",
    "JobUpdate",
    "MetricPoint",
    "ModelInfo",
    "Range",
    "TrainingRequest",
    "epoch_ends_of",
]


@dataclass(frozen=True)
class Range:
    """The values a backend accepts for one hyper-parameter: ``low <= x <= high``, with
    ``low`` excluded when ``low_exclusive``; None is unbounded on that side."""

    low: float | None = None
    high: float | None = None
    low_exclusive: bool = False

    def violation(self, value: float) -> str | None:
        """Why ``value`` is not accepted ("must be 1 to 50"), or None."""
        if isinstance(value, float) and not math.isfinite(value):
            return f"must be a finite number, got {value}"
        low_ok = self.low is None or (value > self.low if self.low_exclusive else value >= self.low)
        high_ok = self.high is None or value <= self.high
        return None if low_ok and high_ok else f"must be {self.describe()}, got {value:g}"

    def describe(self) -> str:
        lo, hi = self.low, self.high
        if lo is not None and hi is not None and not self.low_exclusive:
            return f"{lo:g} to {hi:g}"
        parts = []
        if lo is not None:
            parts.append(f"{'>' if self.low_exclusive else '>='} {lo:g}")
        if hi is not None:
            parts.append(f"<= {hi:g}")
        return " and ".join(parts) or "any number"


@dataclass(frozen=True)
class Capabilities:
    """What a backend accepts and reports, as data (see the module docstring)."""

    #: the hyper-parameters the backend accepts, each with its allowed values
    parameters: Mapping[str, Range]
    #: how many jobs may run at once (a provider quota); the engine queues the rest
    max_concurrent_jobs: int | None = None
    #: how many more may wait in the provider's own queue (with ``max_concurrent_jobs``)
    max_queued: int | None = None
    #: the metrics its jobs report (objectives must be one); see :meth:`Backend.metric_names`
    metrics: frozenset[str] = frozenset(METRIC_NAMES)
    #: whether jobs cost money (then :meth:`Backend.estimate_cost` should know how much)
    priced: bool = False

    def __post_init__(self) -> None:
        unknown = sorted(set(self.parameters) - set(NAMES))
        if unknown:
            raise ValueError(f"unknown hyper-parameters {unknown}; known: {list(NAMES)}")
        required = [p for p in NAMES if not parameter(p).optional and p not in self.parameters]
        if required:
            raise ValueError(f"every backend takes {required}")

    def accepts(self, name: str) -> bool:
        return name in self.parameters

    @property
    def max_in_flight(self) -> int | None:
        """Jobs the engine may have submitted and unfinished at once across the study:
        those that may run plus those the provider queues (None: no cap)."""
        if self.max_concurrent_jobs is None:
            return None
        return self.max_concurrent_jobs + (self.max_queued or 0)

    @property
    def max_batch_size(self) -> int | None:
        high = self.parameters["batch_size"].high
        return None if high is None else int(high)

    def violation(self, name: str, value: float) -> str | None:
        """Why this backend would refuse ``name = value``, or None."""
        if name not in self.parameters:
            return "not accepted by this backend"
        return self.parameters[name].violation(value)


DEFAULT_CAPABILITIES = Capabilities(
    parameters={
        "n_epochs": Range(1),
        "batch_size": Range(1),
        "learning_rate_multiplier": Range(0, low_exclusive=True),
    }
)


class BackendOptions(BaseModel):
    """The sweep file's ``backend.options`` of a backend: subclass it with typed fields.

    Unknown keys are refused (``extra="forbid"``), types are strict (``"8"`` is not an
    integer, ``true`` is not a number), and the instance is frozen.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class Backend(ABC):
    """A place where fine-tuning jobs run. See the module docstring for the contract."""

    name: ClassVar[str]
    capabilities: ClassVar[Capabilities] = DEFAULT_CAPABILITIES
    #: the model of the sweep file's ``backend.options``
    Options: ClassVar[type[BackendOptions]] = BackendOptions
    #: seconds between polls of one job: the first, and the most after backing off (a
    #: backend may set it per instance, from an option)
    poll_interval: tuple[float, float] = (1.0, 30.0)

    def __init__(self, *, workdir: Path | None = None, options: BackendOptions | None = None):
        self.workdir = Path(workdir) if workdir is not None else None
        self.options = options if options is not None else self.Options()

    # -- built from the sweep file ----------------------------------------------------------
    @classmethod
    def parse_options(cls, raw: Mapping[str, Any]) -> BackendOptions:
        """Validate ``backend.options`` (raises pydantic's ``ValidationError``)."""
        return cls.Options.model_validate(dict(raw))

    @classmethod
    def from_options(cls, options: BackendOptions, *, workdir: Path) -> Backend:
        """Build the backend from its validated options and its working folder.

        Args:
            options: the instance of :attr:`Options` that :meth:`parse_options` returned (a
                pydantic model, read as attributes: ``options.endpoint``; not the mapping
                of the earlier contract).
            workdir: the folder this backend keeps its state in (see the module docstring).

        Returns:
            The backend. It builds no client that reaches the provider before it is used:
            ``ftsweep estimate`` builds one in a temporary folder.
        """
        return cls(workdir=workdir, options=options)

    @classmethod
    def metric_names(cls, options: BackendOptions) -> frozenset[str]:
        """The metrics jobs report with these options (objectives must be one)."""
        return cls.capabilities.metrics

    @classmethod
    def token_counter(cls, model: str, options: BackendOptions) -> ExampleCounter | None:
        """Exact token counts for ``model`` as this backend trains it, or None when it cannot
        count (the data checks then report no token figures). Raises
        :class:`~orchestrator.core.errors.UnknownModelError` for a model it does not know."""
        return None

    @classmethod
    def check_resources(
        cls, model: str, options: BackendOptions, dearest: Hyperparameters, train: DatasetStats
    ) -> tuple[tuple[str, str], ...]:
        """Check the search space's most demanding configuration (``dearest``: every
        parameter at its high end) against what this backend's jobs run on, before anything
        starts. Raise :class:`~orchestrator.core.errors.UsageError` naming the configuration
        and the option that would make it run when it cannot (one line); otherwise return
        what was found as ``(label, value)`` rows for ``ftsweep estimate``. ``train`` has
        token counts when they were counted. The default checks nothing, finds nothing."""
        return ()

    # -- costs ------------------------------------------------------------------------------
    def estimate_cost(self, request: TrainingRequest, train: DatasetStats) -> float | None:
        """The estimated cost of the job for ``request``, before it runs.

        The engine commits it to the budget before each submit (spent + committed + this
        must stay within ``budget_usd``) and charges it for a finished job whose cost is
        unknown; ``ftsweep estimate`` prints it for the cheapest and the dearest trial, and
        prices "per 1M tokens" when it grows with ``train.billed_tokens``, "per job" when
        not. Whatever it returns counts, whether or not :attr:`Capabilities.priced` says the
        backend is priced. Nothing is started or reached: no client call.

        Args:
            request: the job's request (``hyperparameters.n_epochs`` is the epochs it
                trains).
            train: the training file's statistics, computed once per run (``n_examples``;
                ``billed_tokens`` when tokens were counted, else ``tokens`` is None).

        Returns:
            USD, finite and >= 0; or None when the job costs nothing or the cost cannot be
            known (the default).

        Raises:
            BackendError: the cost cannot be computed; the trial fails with this reason
                and is not started (so does any other exception).
        """
        return None

    def job_cost(
        self, request: TrainingRequest, update: JobUpdate, train: DatasetStats
    ) -> float | None:
        """What a finished job cost, charged to the budget and recorded on its trial.

        Args:
            request: the job's request.
            update: the first update of the job with a terminal status that the engine
                polled (with the trial's cursor, or with ``None`` after a re-attach). Only
                when the engine fails a trial before its job ended (an error in a poll of
                it) is it the last update it saw, which may be a running one.
            train: the training file's statistics, as for :meth:`estimate_cost`.

        Returns:
            USD: by default :attr:`JobUpdate.cost_usd` when the update carries it, else
            :meth:`estimate_cost` (so a budget always binds); None when neither is known
            (the engine then charges the trial's recorded estimate).

        Raises:
            BackendError: the cost cannot be computed (the engine notes "cost unknown"
                and charges the estimate; any other exception is treated the same way).
        """
        if update.cost_usd is not None:
            return update.cost_usd
        return self.estimate_cost(request, train)

    # -- checks -----------------------------------------------------------------------------
    def check(self, request: TrainingRequest) -> None:
        """Raise :class:`UnsupportedParameterError` for anything this backend cannot run.

        The default checks every hyper-parameter against :attr:`capabilities`."""
        for name, value in request.hyperparameters.as_dict().items():
            problem = self.capabilities.violation(name, value)
            if problem is not None:
                raise UnsupportedParameterError(f"backend {self.name!r}: {name} {problem}")

    def preflight(self) -> None:
        """Check, before the first trial, that jobs can be started at all.

        ``ftsweep run`` calls it once, right after building the backend and before a study,
        a store or a trial exists; an error stops the run with exit 1 and its one line.
        Credentials present, and for a remote service one cheap authenticated call within
        a bounded wait. It starts and spends nothing; the default checks nothing.

        Returns:
            None, when jobs can be started.

        Raises:
            ProviderAuthError: credentials missing or refused (name the variable to set).
            ProviderUnreachableError: the provider's address does not answer within the
                backend's bounded wait (name the address and where it is set).
            BackendError: anything else that keeps jobs from starting.
        """
        return None

    def list_models(self) -> list[ModelInfo] | None:
        """The provider's base models, or None when the backend has no model list (default).

        Used to resolve aliases (``gpt-4o-mini@latest``, see :mod:`orchestrator.catalog.names`)
        and to warn of base models that shut down. One call to the provider (retried like the
        others); it raises what the job methods raise (``ProviderAuthError``,
        ``ProviderUnreachableError``, ``BackendError``) and starts nothing."""
        return None

    # -- jobs -------------------------------------------------------------------------------
    @abstractmethod
    def submit(self, request: TrainingRequest) -> JobHandle:
        """Start the job for ``request``, or return the one its key already has.

        Idempotent on ``request.key``: whatever the process, a second submit of a key
        starts nothing and returns the first job's handle (the engine submits again after
        a crash or a busy provider). A refused submit leaves no job behind.

        Args:
            request: what to train; ``request.key`` identifies the job.

        Returns:
            The job's handle: ``backend`` is :attr:`name`, ``key`` is ``request.key``.

        Raises:
            ProviderBusyError: the provider takes no new work for now (a quota, a 429);
                the engine waits ``retry_after`` seconds and submits again.
            UnsupportedParameterError: (a ``UsageError``) the request can never run here.
            ProviderAuthError: credentials missing or refused: the sweep stops.
            ProviderUnreachableError: no connection within the bounded wait: the sweep stops.
            BackendError: anything else; the trial fails and the sweep goes on.
        """

    @abstractmethod
    def find(self, key: str) -> JobHandle | None:
        """The job started for ``key``, from any process (a re-attach after a crash).

        Args:
            key: a :attr:`TrainingRequest.key` given to :meth:`submit`, maybe by another
                process with the same sweep file (the same :attr:`workdir`).

        Returns:
            The handle :meth:`submit` returned for that key, whether the job is running or
            ended; None when no job was started for it.

        Raises:
            ProviderAuthError, ProviderUnreachableError: as for :meth:`submit`.
            BackendError: the provider or the local index cannot be read.
        """

    @abstractmethod
    def poll(self, handle: JobHandle, cursor: str | None = None) -> JobUpdate:
        """The job's status and what is new since ``cursor``.

        Polling with each returned cursor yields every metric point and every epoch end
        exactly once, in step order; polling with ``None`` yields everything so far again
        (a re-attach). A poll may move the job on (see the module docstring); it never
        moves it further because the cursor is ``None``. After a terminal status every
        poll returns that status, no new points with the last cursor, and the same
        :attr:`JobUpdate.cost_usd`.

        Args:
            handle: a handle from :meth:`submit` or :meth:`find`, maybe of another process.
            cursor: the ``cursor`` of the previous update, or None for everything.

        Returns:
            The update: ``status``, the new ``points`` and ``epoch_ends``, the next
            ``cursor``; ``total_steps``, ``checkpoints``, ``trained_tokens``,
            ``fine_tuned_model``, ``error`` (FAILED) and ``paused`` as the job is now;
            ``cost_usd`` on a terminal update when the backend knows the job's cost.

        Raises:
            ProviderAuthError, ProviderUnreachableError: as for :meth:`submit`.
            BackendError: the status cannot be read now; the engine polls again later,
                backing off.
        """

    @abstractmethod
    def cancel(self, handle: JobHandle) -> None:
        """Stop the job; the engine cancels a pruned trial's job.

        Its metric points so far stay readable (``poll(handle, None)`` still returns them)
        and its next polls say ``CANCELLED`` within seconds. Cancelling an ended job
        (succeeded, failed, cancelled) is a no-op: its status stays as it was.

        Args:
            handle: a handle from :meth:`submit` or :meth:`find`.

        Raises:
            ProviderAuthError, ProviderUnreachableError: as for :meth:`submit`.
            BackendError: the cancel did not reach the provider; the engine retries it with
                back-off and reports it if it never lands.
        """

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
  field``. The validated options reach the backend (``self.options``) and every request
  (:attr:`TrainingRequest.options`, part of the configuration hash).

**What a backend can check.** :meth:`Backend.check_resources` (optional) refuses a space
whose most demanding configuration its jobs cannot run (the local trainer: one that cannot
fit a GPU's memory), for ``space``, ``estimate`` and ``run`` alike (exit 2).

**What a backend can supply.** :meth:`Backend.token_counter` counts tokens for its models
exactly as it trains them (the data checks use it; ``None`` skips token counts);
:meth:`Backend.estimate_cost` the cost of a job before it runs, from the dataset's statistics;
:meth:`Backend.job_cost` the cost of a finished job (by default :attr:`JobUpdate.cost_usd`,
else the estimate, so a budget always binds).

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

**The job methods.**

* :meth:`Backend.submit` is **idempotent on** ``request.key``: submitting a request whose key
  already has a job returns that job's handle and starts nothing.
* :meth:`Backend.find` re-attaches: from a fresh process, given only the key, it returns the
  handle of the job started for that key (running or finished), or ``None``.
* :meth:`Backend.poll` returns what happened since ``cursor`` (an opaque string the previous
  update returned; ``None`` the first time): the status and only the *new* metric points and
  epoch ends, so polling with each returned cursor yields every point exactly once, and
  polling with ``None`` yields everything again.
* :meth:`Backend.cancel` stops a job; metrics reported before it stay readable. Cancelling a
  finished job is a no-op.

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
training data. Backends say so in :attr:`JobUpdate.epoch_ends`; those that report the
``epoch`` metric (fractional epochs done, an integer at each epoch's last step) can use
:func:`epoch_ends_of`. The engine reports the objective to the pruner once per epoch end
(step = epoch number), with the value at or before that step.

**State.** ``self.workdir`` (given by :meth:`Backend.from_options`, under the sweep's stores)
is where a backend keeps what must outlive the process (job folders, a key -> job index), so
``find`` works from a fresh process with the same sweep file.

Metric names are OpenAI's (:data:`METRIC_NAMES`), step-indexed, plus ``epoch``.
Backends are discovered through the entry-point group ``ftsweep.backends``
(see :mod:`orchestrator.backends.registry`).
"""

from __future__ import annotations

import hashlib
import json
import math
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict

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

METRIC_NAMES = (
    "train_loss",
    "train_mean_token_accuracy",
    "valid_loss",
    "valid_mean_token_accuracy",
    "full_valid_loss",
    "full_valid_mean_token_accuracy",
    "epoch",
)


#: metrics from greedy generations of the validation completions (backends that can generate)
GENERATION_METRICS = ("full_valid_exact_match", "full_valid_label_accuracy")


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)


@dataclass(frozen=True)
class Hyperparameters:
    """The tuned parameters of one trial (see :mod:`orchestrator.core.params`). ``batch_size`` is
    the resolved integer; ``prompt_loss_weight`` is None for backends that do not take it."""

    n_epochs: int
    batch_size: int
    learning_rate_multiplier: float
    prompt_loss_weight: float | None = None

    def as_dict(self) -> dict[str, Any]:
        values = (self.n_epochs, self.batch_size, self.learning_rate_multiplier)
        found = dict(zip(NAMES, (*values, self.prompt_loss_weight), strict=True))
        return {k: v for k, v in found.items() if v is not None}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> Hyperparameters:
        """From a mapping of parameter names (unknown names are a KeyError)."""
        unknown = sorted(set(values) - set(NAMES))
        if unknown:
            raise KeyError(f"unknown hyper-parameters {unknown}")
        plw = values.get("prompt_loss_weight")
        return cls(
            n_epochs=int(values["n_epochs"]),
            batch_size=int(values["batch_size"]),
            learning_rate_multiplier=float(values["learning_rate_multiplier"]),
            prompt_loss_weight=None if plw is None else float(plw),
        )


assert tuple(f.name for f in fields(Hyperparameters)) == NAMES, "params.PARAMETERS drifted"


@dataclass(frozen=True)
class TrainingRequest:
    """Everything a backend needs to start one job.

    ``key`` is the idempotency key: the same key means the same job. :meth:`make` derives it
    from the study, the trial and :meth:`config_hash`. ``options`` are the validated backend
    options (JSON-ready), the same for every trial of a sweep.
    """

    key: str
    model: str
    hyperparameters: Hyperparameters
    train_file: Path
    valid_file: Path | None = None
    seed: int = 0
    options: Mapping[str, Any] = field(default_factory=dict)
    metadata: Mapping[str, str] = field(default_factory=dict)

    def config_hash(self) -> str:
        """A hash of what determines the trained model (not the key, not metadata)."""
        payload = {
            "model": self.model,
            "hyperparameters": self.hyperparameters.as_dict(),
            "train": str(self.train_file),
            "valid": str(self.valid_file) if self.valid_file else None,
            "seed": self.seed,
            "options": dict(self.options),
        }
        blob = json.dumps(payload, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def to_json(self) -> str:
        """The request as JSON; :meth:`from_json` reads it back."""
        payload = {
            "key": self.key,
            "model": self.model,
            "hyperparameters": self.hyperparameters.as_dict(),
            "train_file": str(self.train_file),
            "valid_file": str(self.valid_file) if self.valid_file else None,
            "seed": self.seed,
            "options": dict(self.options),
            "metadata": dict(self.metadata),
        }
        return json.dumps(payload, sort_keys=True, default=str)

    @classmethod
    def from_json(cls, text: str) -> TrainingRequest:
        d = json.loads(text)
        return cls(
            key=str(d["key"]),
            model=str(d["model"]),
            hyperparameters=Hyperparameters.from_dict(d["hyperparameters"]),
            train_file=Path(d["train_file"]),
            valid_file=Path(d["valid_file"]) if d.get("valid_file") else None,
            seed=int(d.get("seed", 0)),
            options=dict(d.get("options") or {}),
            metadata={str(k): str(v) for k, v in (d.get("metadata") or {}).items()},
        )

    @classmethod
    def make(
        cls,
        *,
        study: str,
        trial: int,
        model: str,
        hyperparameters: Hyperparameters,
        train_file: Path,
        valid_file: Path | None = None,
        seed: int = 0,
        options: Mapping[str, Any] | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> TrainingRequest:
        draft = cls("", model, hyperparameters, train_file, valid_file, seed, dict(options or {}))
        key = f"{study}-t{trial}-{draft.config_hash()}"
        return cls(
            key,
            model,
            hyperparameters,
            train_file,
            valid_file,
            seed,
            dict(options or {}),
            dict(metadata or {}),
        )


@dataclass(frozen=True)
class JobHandle:
    """Identifies one job of one backend."""

    backend: str
    job_id: str
    key: str


@dataclass(frozen=True)
class MetricPoint:
    """One value of one metric at one optimizer step (1-based)."""

    step: int
    name: str
    value: float


@dataclass(frozen=True)
class EpochEnd:
    """Epoch ``epoch`` (1-based) ended at optimizer step ``step``."""

    epoch: int
    step: int


def epoch_ends_of(points: Iterable[MetricPoint]) -> tuple[EpochEnd, ...]:
    """The epoch ends among ``points``: where the ``epoch`` metric is a whole number >= 1."""
    ends: dict[int, int] = {}
    for p in points:
        if p.name != "epoch" or not math.isfinite(p.value):
            continue
        k = round(p.value)
        if k >= 1 and abs(p.value - k) < 1e-6:
            ends.setdefault(k, p.step)
    return tuple(EpochEnd(k, s) for k, s in sorted(ends.items()))


@dataclass(frozen=True)
class Checkpoint:
    """A model saved at the end of an earlier epoch, with the metrics it had there.

    Providers keep checkpoints of the last epochs before the final one, so a job trained for
    4 epochs also tells what 2 and 3 epochs gave (``metrics`` uses :data:`METRIC_NAMES`).
    """

    step: int
    epoch: int
    metrics: Mapping[str, float]
    model_id: str


@dataclass(frozen=True)
class JobUpdate:
    """What :meth:`Backend.poll` saw: status, new points, and the cursor for the next poll."""

    status: JobStatus
    points: tuple[MetricPoint, ...] = ()
    cursor: str | None = None
    total_steps: int | None = None
    trained_tokens: int | None = None
    fine_tuned_model: str | None = None
    error: str | None = None
    #: every checkpoint known so far (not only new ones), oldest first
    checkpoints: tuple[Checkpoint, ...] = ()
    #: epochs that ended among this update's points (new since the cursor), oldest first
    epoch_ends: tuple[EpochEnd, ...] = ()
    #: what the job cost, when the backend knows (USD); see :meth:`Backend.job_cost`
    cost_usd: float | None = None
    #: the provider paused the job (e.g. Azure's pre-emptible Developer tier): it is still
    #: running (``status``) and will resume by itself; not a failure
    paused: bool = False


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
        """Build the backend from its validated options and its working folder."""
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
        """Estimated USD cost of the job from the training data's statistics (its billed
        tokens), or None when it costs nothing or cannot be known."""
        return None

    def job_cost(
        self, request: TrainingRequest, update: JobUpdate, train: DatasetStats
    ) -> float | None:
        """What a finished job cost: :attr:`JobUpdate.cost_usd` when the backend reported it,
        else its estimate (so a budget always binds)."""
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
        """Check, before the first trial, that jobs can be started at all (see the module
        docstring): raise :class:`~orchestrator.core.errors.ProviderAuthError` for missing or
        refused credentials, :class:`~orchestrator.core.errors.ProviderUnreachableError` for an
        address that does not answer, :class:`~orchestrator.core.errors.BackendError` otherwise.
        Starts and spends nothing; the default checks nothing."""
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
        """Start the job for ``request`` (or return the one its key already has)."""

    @abstractmethod
    def find(self, key: str) -> JobHandle | None:
        """The job started for ``key``, from any process, or None."""

    @abstractmethod
    def poll(self, handle: JobHandle, cursor: str | None = None) -> JobUpdate:
        """Status and the metric points (and epoch ends) after ``cursor``."""

    @abstractmethod
    def cancel(self, handle: JobHandle) -> None:
        """Stop the job; its metrics so far stay readable. A finished job: a no-op."""

"""The backend contract: what every fine-tuning backend implements.

A backend runs one fine-tuning job per :class:`TrainingRequest` and is driven by polling, so a
local subprocess and a remote API job look the same to the sweep engine:

* :meth:`Backend.submit` is **idempotent on** ``request.key``: submitting a request whose key
  already has a job returns that job's handle and starts nothing.
* :meth:`Backend.find` re-attaches: from a fresh process, given only the key, it returns the
  handle of the job started for that key (running or finished), or ``None``.
* :meth:`Backend.poll` returns what happened since ``cursor`` (an opaque string the previous
  update returned; ``None`` the first time): the status and only the *new* metric points, so
  polling with each returned cursor yields every point exactly once.
* :meth:`Backend.cancel` stops a job; metrics reported before it stay readable. Cancelling a
  finished job is a no-op.

Metric names are OpenAI's (:data:`METRIC_NAMES`), step-indexed, plus ``epoch``.
Backends are discovered through the entry-point group ``ftsweep.backends``
(see :mod:`orchestrator.backends.registry`).
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, ClassVar

from orchestrator.errors import UnsupportedParameterError

__all__ = [
    "GENERATION_METRICS",
    "METRIC_NAMES",
    "Backend",
    "Checkpoint",
    "Hyperparameters",
    "JobHandle",
    "JobStatus",
    "JobUpdate",
    "MetricPoint",
    "TrainingRequest",
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
    """The tuned parameters of one trial. ``batch_size`` is the resolved integer."""

    n_epochs: int
    batch_size: int
    learning_rate_multiplier: float
    prompt_loss_weight: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


@dataclass(frozen=True)
class TrainingRequest:
    """Everything a backend needs to start one job.

    ``key`` is the idempotency key: the same key means the same job. :meth:`make` derives it
    from the study, the trial and a hash of the configuration.
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


class Backend(ABC):
    """A place where fine-tuning jobs run. See the module docstring for the contract."""

    name: ClassVar[str]
    #: hyper-parameters this backend accepts (names of :class:`Hyperparameters` fields)
    supported_parameters: ClassVar[frozenset[str]] = frozenset(
        {"n_epochs", "batch_size", "learning_rate_multiplier"}
    )
    #: the largest batch size the provider accepts, if any
    max_batch_size: ClassVar[int | None] = None
    #: how many jobs may run at once (a provider quota); the engine queues the rest
    max_concurrent_jobs: ClassVar[int | None] = None
    #: seconds between polls of one job: the first, and the most after backing off (a
    #: backend may set it per instance, from an option)
    poll_interval: tuple[float, float] = (1.0, 30.0)

    @classmethod
    def metric_names(cls, options: Mapping[str, Any]) -> frozenset[str]:
        """The metrics jobs report with these backend options (objectives must be one)."""
        return frozenset(METRIC_NAMES)

    @classmethod
    def from_options(cls, options: Mapping[str, Any], *, workdir: Path) -> Backend:
        """Build the backend from the sweep file's ``backend.options`` and a working folder."""
        return cls(**options)

    def check(self, request: TrainingRequest) -> None:
        """Raise :class:`UnsupportedParameterError` for anything this backend cannot run."""
        hp = request.hyperparameters
        if (
            hp.prompt_loss_weight is not None
            and "prompt_loss_weight" not in self.supported_parameters
        ):
            raise UnsupportedParameterError(
                f"backend {self.name!r} does not accept prompt_loss_weight"
            )
        if self.max_batch_size is not None and hp.batch_size > self.max_batch_size:
            raise UnsupportedParameterError(
                f"batch_size {hp.batch_size} exceeds {self.name}'s maximum {self.max_batch_size}"
            )

    def estimate_cost(self, request: TrainingRequest) -> float | None:
        """Estimated USD cost of the job, or None when it costs nothing or cannot be known."""
        return None

    @abstractmethod
    def submit(self, request: TrainingRequest) -> JobHandle:
        """Start the job for ``request`` (or return the one its key already has)."""

    @abstractmethod
    def find(self, key: str) -> JobHandle | None:
        """The job started for ``key``, from any process, or None."""

    @abstractmethod
    def poll(self, handle: JobHandle, cursor: str | None = None) -> JobUpdate:
        """Status and the metric points after ``cursor``."""

    @abstractmethod
    def cancel(self, handle: JobHandle) -> None:
        """Stop the job; its metrics so far stay readable."""

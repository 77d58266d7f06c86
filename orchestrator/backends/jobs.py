"""What a backend and the sweep engine exchange: requests, handles and updates.

These frozen dataclasses are part of the backend contract (:mod:`orchestrator.backends.base`,
which re-exports every name here: import them from there). A :class:`TrainingRequest` goes
into :meth:`~orchestrator.backends.base.Backend.submit`, a :class:`JobHandle` comes back, and
each :meth:`~orchestrator.backends.base.Backend.poll` returns a :class:`JobUpdate` holding the
new :class:`MetricPoint` s, :class:`EpochEnd` s and :class:`Checkpoint` s of the job.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from enum import StrEnum
from pathlib import Path
from typing import Any

from orchestrator.core.params import NAMES

__all__ = [
    "GENERATION_METRICS",
    "METRIC_NAMES",
    "THROUGHPUT_METRICS",
    "Checkpoint",
    "EpochEnd",
    "Hyperparameters",
    "JobHandle",
    "JobStatus",
    "JobUpdate",
    "MetricPoint",
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

#: speed and memory at each epoch's end (backends that measure them; ``mfu`` where known)
THROUGHPUT_METRICS = ("tokens_per_second", "mfu", "peak_memory_mb")


class JobStatus(StrEnum):
    """Where a job is. ``SUCCEEDED``, ``FAILED`` and ``CANCELLED`` are terminal: a job in one
    of them never changes again (cancelling it is a no-op)."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        """True for a job that has ended (succeeded, failed or was cancelled)."""
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


#: the fields of :meth:`TrainingRequest.to_dict` that :meth:`TrainingRequest.config_hash`
#: hashes, under the names it has always hashed them as (so hashes, and keys, stay the same)
_HASHED = {
    "model": "model",
    "hyperparameters": "hyperparameters",
    "train_file": "train",
    "valid_file": "valid",
    "seed": "seed",
    "options": "options",
}


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
        record = self.to_dict()
        payload = {hashed: record[name] for name, hashed in _HASHED.items()}
        blob = json.dumps(payload, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def to_dict(self) -> dict[str, Any]:
        """The request as a JSON-ready mapping (paths as strings): the one shape of a request
        written anywhere (the ledger, a local job's ``request.json``); :meth:`from_dict`
        reads it back."""
        return {
            "key": self.key,
            "model": self.model,
            "hyperparameters": self.hyperparameters.as_dict(),
            "train_file": str(self.train_file),
            "valid_file": str(self.valid_file) if self.valid_file else None,
            "seed": self.seed,
            "options": dict(self.options),
            "metadata": dict(self.metadata),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TrainingRequest:
        """A request from :meth:`to_dict`'s mapping (other keys are ignored; a missing
        required one is a KeyError)."""
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

    def to_json(self) -> str:
        """The request as JSON; :meth:`from_json` reads it back."""
        return json.dumps(self.to_dict(), sort_keys=True, default=str)

    @classmethod
    def from_json(cls, text: str) -> TrainingRequest:
        return cls.from_dict(json.loads(text))

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


#: how far an ``epoch`` value may fall short of a whole number and still reach it (the
#: providers' values are rounded, to 6 decimals for OpenAI's events)
EPOCH_TOLERANCE = 1e-6


def epoch_ends_of(points: Iterable[MetricPoint]) -> tuple[EpochEnd, ...]:
    """The epoch ends among ``points``, from their ``epoch`` metric (fractional epochs done).

    Epoch ``k`` ends at the first step whose ``epoch`` value reaches ``k``: where the value
    is a whole number when each epoch has a whole number of steps, and the step after the
    value passes ``k`` when it does not (100 steps over 3 epochs, ``epoch = step / 33.33``,
    end at steps 34, 67 and 100). Each end is reported by the first point that reaches it,
    so updates polled with each returned cursor report every end once. What came before a
    point is the previous ``epoch`` point of ``points``; for the first one, its value scaled
    back by the spacing of the points (one step when they are on every step or there is only
    one): ``value * (step - spacing) / step``, exact when ``epoch`` grows by the same amount
    each step, as ``step / steps_per_epoch`` does.

    Args:
        points: one update's new points, in any order; only ``epoch`` ones are read,
            non-finite values are skipped.

    Returns:
        The ends, oldest first, each epoch (1-based) once.
    """
    epochs = sorted(
        (p for p in points if p.name == "epoch" and math.isfinite(p.value)), key=lambda p: p.step
    )
    if not epochs:
        return ()
    gaps = [b.step - a.step for a, b in itertools.pairwise(epochs) if b.step > a.step]
    first = epochs[0]
    before = first.value * max(first.step - min(gaps, default=1), 0) / max(first.step, 1)
    ends: dict[int, int] = {}
    for p in epochs:
        reached = math.floor(p.value + EPOCH_TOLERANCE)
        for k in range(max(1, math.floor(before + EPOCH_TOLERANCE) + 1), reached + 1):
            ends.setdefault(k, p.step)
        before = max(before, p.value)
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
    """What :meth:`~orchestrator.backends.base.Backend.poll` saw: the status, what is new
    since the cursor it was given, and the cursor for the next poll.

    ``points``, ``epoch_ends`` are *new* since the cursor (all of them for a cursor of None);
    ``checkpoints`` and the other fields describe the job as it is now, on every update.
    """

    status: JobStatus
    #: metric points new since the cursor, in step order
    points: tuple[MetricPoint, ...] = ()
    #: an opaque string for the next poll (None only when there is nothing to resume from)
    cursor: str | None = None
    #: the optimizer steps the whole job takes, when known (the last epoch ends there)
    total_steps: int | None = None
    #: tokens trained so far (the provider's billing figure), when known
    trained_tokens: int | None = None
    #: the trained model's id or path, once the job succeeded
    fine_tuned_model: str | None = None
    #: why the job failed (one line, no secret), for a FAILED job
    error: str | None = None
    #: every checkpoint known so far (not only new ones), oldest first
    checkpoints: tuple[Checkpoint, ...] = ()
    #: epochs that ended among this update's points (new since the cursor), oldest first:
    #: over the whole job, each epoch 1..n_epochs once, the last at ``total_steps``
    epoch_ends: tuple[EpochEnd, ...] = ()
    #: what the whole job cost in USD, when the backend knows: on every terminal update
    #: (whatever the cursor), the same on each; the engine charges it through
    #: :meth:`~orchestrator.backends.base.Backend.job_cost` of the first one it polls
    cost_usd: float | None = None
    #: the provider paused the job (e.g. Azure's pre-emptible Developer tier): it is still
    #: running (``status``) and will resume by itself; not a failure
    paused: bool = False

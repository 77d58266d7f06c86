"""An instant, in-memory backend written as a third party would, and a clock to drive it.

``InstantBackend`` registers under the entry-point group ``ftsweep.backends`` through a real
``*.dist-info`` folder on ``sys.path`` (:func:`install`), exactly as an installed package
does. Each poll moves a job by one epoch; its losses come from a closed-form response surface,
so tests know which configuration wins. Faults (a busy provider, failing cancels, a poll that
raises, Ctrl-C) are options.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field

from orchestrator.backends.base import (
    DEFAULT_CAPABILITIES,
    Backend,
    BackendOptions,
    Capabilities,
    EpochEnd,
    JobHandle,
    JobStatus,
    JobUpdate,
    MetricPoint,
    Range,
    TrainingRequest,
)
from orchestrator.core.errors import BackendError, ProviderBusyError
from orchestrator.data.findings import DatasetStats


class InstantOptions(BackendOptions):
    steps_per_epoch: int = Field(default=3, ge=1)
    busy_submits: int = 0  # the first N submits are refused as busy
    failing_submits: int = 0  # the first N submits fail (the provider's 500s, retries spent)
    failing_cancels: int = 0  # the first N cancels raise BackendError
    poll_error_trial: int | None = None  # polls of this trial's job raise ValueError
    interrupt_on_poll: int | None = None  # KeyboardInterrupt at the Nth poll
    fail_trial: int | None = None  # this trial's job ends FAILED
    fail_every_trial: bool = False  # every job ends FAILED after its first epoch
    price_per_epoch: float = 0.0  # USD; priced when > 0
    cost_error: bool = False  # job_cost raises (a bug in the backend)
    poll_seconds: float | None = None  # poll this often (real-time runs: several workers)


@dataclass
class _Job:
    request: TrainingRequest
    epochs_done: int = 0
    status: JobStatus = JobStatus.QUEUED
    cancelled: bool = False


@dataclass
class World:
    """What the provider knows: shared by every backend instance of a test (a fresh process
    would see the same jobs)."""

    jobs: dict[str, _Job] = field(default_factory=dict)
    by_key: dict[str, str] = field(default_factory=dict)
    submits: int = 0
    cancels: int = 0
    polls: int = 0
    created: list[str] = field(default_factory=list)


WORLD = World()


def loss(hp: Any, epoch: int) -> float:
    """Validation loss after ``epoch`` epochs: best near lr 0.1, more epochs help a little."""
    lr = hp.learning_rate_multiplier
    return 1.0 + (math.log10(lr) + 1.0) ** 2 + 1.0 / epoch + 0.001 * hp.batch_size


class InstantBackend(Backend):
    name: ClassVar[str] = "instant"
    capabilities: ClassVar[Capabilities] = Capabilities(
        parameters={**DEFAULT_CAPABILITIES.parameters, "n_epochs": Range(1, 20)},
        max_concurrent_jobs=2,
        priced=True,
    )
    Options: ClassVar[type[BackendOptions]] = InstantOptions
    poll_interval: tuple[float, float] = (1.0, 4.0)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if self.opts.poll_seconds:
            self.poll_interval = (self.opts.poll_seconds, self.opts.poll_seconds)

    @property
    def opts(self) -> InstantOptions:
        assert isinstance(self.options, InstantOptions)
        return self.options

    def estimate_cost(self, request: TrainingRequest, train: DatasetStats) -> float | None:
        price = self.opts.price_per_epoch
        return price * request.hyperparameters.n_epochs if price else None

    def job_cost(
        self, request: TrainingRequest, update: JobUpdate, train: DatasetStats
    ) -> float | None:
        if self.opts.cost_error:
            raise KeyError("usd")
        return super().job_cost(request, update, train)

    def submit(self, request: TrainingRequest) -> JobHandle:
        found = self.find(request.key)
        if found is not None:
            return found
        WORLD.submits += 1
        if WORLD.submits <= self.opts.busy_submits:
            raise ProviderBusyError("daily job limit reached", retry_after=30)
        if WORLD.submits <= self.opts.failing_submits:
            raise BackendError("create job failed after 6 attempt(s): HTTP 500 server_error")
        job_id = f"inst-{len(WORLD.jobs)}"
        WORLD.jobs[job_id] = _Job(request)
        WORLD.by_key[request.key] = job_id
        WORLD.created.append(job_id)
        return JobHandle(self.name, job_id, request.key)

    def find(self, key: str) -> JobHandle | None:
        job_id = WORLD.by_key.get(key)
        return JobHandle(self.name, job_id, key) if job_id else None

    def poll(self, handle: JobHandle, cursor: str | None = None) -> JobUpdate:
        WORLD.polls += 1
        if self.opts.interrupt_on_poll is not None and WORLD.polls >= self.opts.interrupt_on_poll:
            raise KeyboardInterrupt
        job = WORLD.jobs[handle.job_id]
        trial = int(job.request.metadata.get("ftsweep_trial", -1))
        if self.opts.poll_error_trial == trial:
            raise ValueError("the provider's answer could not be parsed")
        hp = job.request.hyperparameters
        if not job.status.terminal:
            if job.cancelled:
                job.status = JobStatus.CANCELLED
            elif (self.opts.fail_trial == trial or self.opts.fail_every_trial) and (
                job.epochs_done >= 1
            ):
                job.status = JobStatus.FAILED
            else:
                job.status = JobStatus.RUNNING
                job.epochs_done += 1
                if job.epochs_done >= hp.n_epochs:
                    job.status = JobStatus.SUCCEEDED
        done = int(cursor or 0)
        spe = self.opts.steps_per_epoch
        points: list[MetricPoint] = []
        ends: list[EpochEnd] = []
        for epoch in range(done + 1, job.epochs_done + 1):
            for i in range(1, spe + 1):
                step = (epoch - 1) * spe + i
                points.append(MetricPoint(step, "train_loss", loss(hp, epoch) - 0.1 * i / spe))
                points.append(MetricPoint(step, "epoch", epoch - 1 + i / spe))
            points.append(MetricPoint(epoch * spe, "full_valid_loss", loss(hp, epoch)))
            ends.append(EpochEnd(epoch, epoch * spe))
        cost = None
        if job.status.terminal and self.opts.price_per_epoch:
            cost = self.opts.price_per_epoch * job.epochs_done
        return JobUpdate(
            status=job.status,
            points=tuple(points),
            cursor=str(job.epochs_done),
            total_steps=hp.n_epochs * spe,
            error="the job failed: server_error" if job.status is JobStatus.FAILED else None,
            epoch_ends=tuple(ends),
            cost_usd=cost,
            fine_tuned_model=f"instant:{handle.job_id}"
            if job.status is JobStatus.SUCCEEDED
            else None,
        )

    def cancel(self, handle: JobHandle) -> None:
        WORLD.cancels += 1
        if WORLD.cancels <= self.opts.failing_cancels:
            raise BackendError(f"cancel job {handle.job_id} failed: HTTP 409 conflict")
        job = WORLD.jobs[handle.job_id]
        if not job.status.terminal:
            job.cancelled = True


@dataclass
class FakeClock:
    """Monotonic time that moves only when the loop sleeps."""

    now: float = 0.0
    slept: float = 0.0

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds
        self.slept += seconds

    def wall(self) -> float:
        return 1_800_000_000.0 + self.now


def install(folder: Path) -> None:
    """Register :class:`InstantBackend` as an installed distribution's entry point."""
    dist = folder / "instant_backend-1.0.dist-info"
    dist.mkdir(parents=True, exist_ok=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: instant-backend\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        "[ftsweep.backends]\ninstant = tests.engine.fakes:InstantBackend\n"
    )
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

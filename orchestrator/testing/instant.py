"""An instant backend to test with, shipped as httpx ships ``MockTransport``.

:class:`InstantBackend` keeps the whole backend contract (:mod:`orchestrator.backends.base`)
and passes the contract suite, but trains nothing: **each poll moves a job on by one epoch**
(a job that advances only when polled), and its losses come from a closed-form response
surface (:func:`loss`, best near a multiplier of 0.1), so a test knows which configuration
wins and a sweep through the real engine, Optuna and MLflow takes a fraction of a second per
trial. ftsweep's engine tests and its overhead benchmark run on it; a third-party backend's
author can read it as a small, complete implementation of the contract.

Register it by entry point as an installed package would (:func:`install`; the name is
``instant``), then name it in a sweep file (``backend: {name: instant, model: any}``) or a
:class:`~orchestrator.testing.BackendCase`. Its options (:class:`InstantOptions`) shape the
jobs (steps, the ``epoch`` metric, a price) and inject faults: a busy provider, failing
submits, polls and cancels, a failed job, Ctrl-C at a given poll.

**Where the provider lives.** By default in this process's memory (:data:`WORLD`, shared by
every instance, so a test can look at what was submitted, polled and cancelled); with
``persist: true`` in a JSON file in the backend's ``workdir``, so a fresh process with the
same workdir finds the same jobs (what the contract suite's re-attach test needs; one
process at a time: the file is read and written whole by each call). Each process of a
multi-process test with the memory world has a provider of its own.

:class:`FakeClock` is a clock for the engine's clock seam (``run_sweep(clock=..., sleep=...,
wall=...)``) that moves only when the engine sleeps.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import Field

from orchestrator.backends.base import (
    DEFAULT_CAPABILITIES,
    Backend,
    BackendOptions,
    Capabilities,
    EpochEnd,
    Hyperparameters,
    JobHandle,
    JobStatus,
    JobUpdate,
    MetricPoint,
    Range,
    TrainingRequest,
)
from orchestrator.core.errors import BackendError, ProviderBusyError

if TYPE_CHECKING:
    from orchestrator.data.findings import DatasetStats

__all__ = [
    "NAME",
    "WORLD",
    "FakeClock",
    "InstantBackend",
    "InstantOptions",
    "Job",
    "World",
    "epoch_points",
    "install",
    "loss",
    "provider_busy",
]

#: the backend's name in ``ftsweep.backends`` (:func:`install`)
NAME = "instant"
#: the provider's state in a ``persist`` backend's workdir
WORLD_FILE = "instant-provider.json"


class InstantOptions(BackendOptions):
    """The instant backend's ``backend.options``: the shape of its jobs, and faults."""

    #: optimizer steps in each epoch (unless ``total_steps`` is given)
    steps_per_epoch: int = Field(default=3, ge=1)
    #: steps of the whole job, whatever its epochs (at least one an epoch); when they do not
    #: divide evenly, epochs differ in length by a step (see :func:`epoch_points`)
    total_steps: int | None = Field(default=None, ge=1)
    #: report the ``epoch`` metric (fractional epochs done) on every step
    epoch_metric: bool = True
    #: keep the provider in ``workdir`` (a fresh process sees the same jobs), not in memory
    persist: bool = False
    #: every job has ended when submitted (its first poll says SUCCEEDED with every point)
    finish_at_submit: bool = False
    #: USD per epoch trained: the estimate, and the cost on the terminal update (0: free)
    price_per_epoch: float = Field(default=0.0, ge=0)
    #: seconds between polls, first and longest (default 1 and 4)
    poll_seconds: float | None = Field(default=None, ge=0)
    # -- faults -------------------------------------------------------------------------
    #: the first N submits are refused as busy (ProviderBusyError)
    busy_submits: int = 0
    #: the first N submits fail (the provider's 500s, retries spent: BackendError)
    failing_submits: int = 0
    #: the first N cancels raise BackendError
    failing_cancels: int = 0
    #: polls of this trial's job (``metadata["ftsweep_trial"]``) raise ValueError
    poll_error_trial: int | None = None
    #: KeyboardInterrupt at the Nth poll of the process
    interrupt_on_poll: int | None = None
    #: this trial's job ends FAILED after its first epoch
    fail_trial: int | None = None
    #: every job ends FAILED after its first epoch
    fail_every_trial: bool = False
    #: job_cost raises (a bug in the backend)
    cost_error: bool = False


@dataclass
class Job:
    """One job at the provider."""

    request: TrainingRequest
    epochs_done: int = 0
    status: JobStatus = JobStatus.QUEUED
    cancelled: bool = False


@dataclass
class World:
    """What the provider knows: its jobs, its key index, what it was asked, and whether it
    takes new work (``busy``)."""

    jobs: dict[str, Job] = field(default_factory=dict)
    by_key: dict[str, str] = field(default_factory=dict)
    submits: int = 0
    cancels: int = 0
    polls: int = 0
    created: list[str] = field(default_factory=list)
    busy: bool = False

    def to_json(self) -> str:
        """The world as JSON (:meth:`from_json` reads it back)."""
        jobs = {
            job_id: {
                "request": json.loads(job.request.to_json()),
                "epochs_done": job.epochs_done,
                "status": job.status.value,
                "cancelled": job.cancelled,
            }
            for job_id, job in self.jobs.items()
        }
        counts = {"submits": self.submits, "cancels": self.cancels, "polls": self.polls}
        return json.dumps(
            {"jobs": jobs, "by_key": self.by_key, "created": self.created, "busy": self.busy}
            | counts
        )

    @classmethod
    def from_json(cls, text: str) -> World:
        """The world :meth:`to_json` wrote."""
        d = json.loads(text)
        jobs = {
            job_id: Job(
                TrainingRequest.from_json(json.dumps(j["request"])),
                int(j["epochs_done"]),
                JobStatus(j["status"]),
                bool(j["cancelled"]),
            )
            for job_id, j in d["jobs"].items()
        }
        return cls(
            jobs,
            dict(d["by_key"]),
            int(d["submits"]),
            int(d["cancels"]),
            int(d["polls"]),
            list(d["created"]),
            bool(d["busy"]),
        )


#: the provider of every instant backend of this process without ``persist``; a test resets
#: it with ``WORLD.__init__()``
WORLD = World()


def loss(hp: Hyperparameters, epoch: int) -> float:
    """Validation loss after ``epoch`` epochs: best near lr 0.1, more epochs help a little."""
    lr = hp.learning_rate_multiplier
    return 1.0 + (math.log10(lr) + 1.0) ** 2 + 1.0 / epoch + 0.001 * hp.batch_size


def _steps(hp: Hyperparameters, opts: InstantOptions) -> int:
    if opts.total_steps is None:
        return hp.n_epochs * opts.steps_per_epoch
    return max(opts.total_steps, hp.n_epochs)


def epoch_points(
    hp: Hyperparameters, epoch: int, opts: InstantOptions
) -> tuple[list[MetricPoint], EpochEnd]:
    """The points a job reports for one epoch, and where that epoch ends.

    Epoch ``k`` of a job of ``T`` steps over ``n`` epochs ends at step ``ceil(k * T / n)``
    (the contract's rule when the steps do not divide evenly). The epoch has a
    ``train_loss`` on each of its steps (``loss(hp, epoch)`` less up to 0.1 across it), the
    ``epoch`` metric beside it (unless ``epoch_metric`` is off; a whole number at its last
    step), and its ``full_valid_loss`` (:func:`loss`) at its last step.
    """
    total, n_epochs = _steps(hp, opts), hp.n_epochs
    first = -(-(epoch - 1) * total // n_epochs) + 1
    last = -(-epoch * total // n_epochs)
    value, n = loss(hp, epoch), last - first + 1
    points: list[MetricPoint] = []
    for i, step in enumerate(range(first, last + 1), 1):
        points.append(MetricPoint(step, "train_loss", value - 0.1 * i / n))
        if opts.epoch_metric:
            points.append(MetricPoint(step, "epoch", epoch - 1 + i / n))
    points.append(MetricPoint(last, "full_valid_loss", value))
    return points, EpochEnd(epoch, last)


class InstantBackend(Backend):
    """Jobs that move on by one epoch a poll (see the module docstring)."""

    name: ClassVar[str] = NAME
    capabilities: ClassVar[Capabilities] = Capabilities(
        parameters={**DEFAULT_CAPABILITIES.parameters, "n_epochs": Range(1, 20)},
        max_concurrent_jobs=2,
        priced=True,
    )
    Options: ClassVar[type[BackendOptions]] = InstantOptions
    poll_interval: tuple[float, float] = (1.0, 4.0)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if self.opts.poll_seconds is not None:
            self.poll_interval = (self.opts.poll_seconds, self.opts.poll_seconds)

    @property
    def opts(self) -> InstantOptions:
        """The options, as their own type."""
        assert isinstance(self.options, InstantOptions)
        return self.options

    @contextlib.contextmanager
    def _provider(self) -> Iterator[World]:
        """The provider's state: :data:`WORLD`, or read from and written back to the
        workdir's file (``persist``), whatever the block raises."""
        if not self.opts.persist:
            yield WORLD
            return
        if self.workdir is None:
            raise BackendError("instant: persist needs a workdir (from_options gives one)")
        path = self.workdir / WORLD_FILE
        world = World.from_json(path.read_text()) if path.exists() else World()
        try:
            yield world
        finally:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            tmp.write_text(world.to_json())
            tmp.replace(path)

    def estimate_cost(self, request: TrainingRequest, train: DatasetStats) -> float | None:
        """``price_per_epoch`` x epochs (per job: it does not grow with the tokens)."""
        price = self.opts.price_per_epoch
        return price * request.hyperparameters.n_epochs if price else None

    def job_cost(
        self, request: TrainingRequest, update: JobUpdate, train: DatasetStats
    ) -> float | None:
        """The terminal update's ``cost_usd`` (the epochs trained), else the estimate."""
        if self.opts.cost_error:
            raise KeyError("usd")
        return super().job_cost(request, update, train)

    def submit(self, request: TrainingRequest) -> JobHandle:
        """A new job for a new key; the fault options may refuse it."""
        with self._provider() as world:
            job_id = world.by_key.get(request.key)
            if job_id is not None:
                return JobHandle(self.name, job_id, request.key)
            world.submits += 1
            if world.busy or world.submits <= self.opts.busy_submits:
                raise ProviderBusyError("daily job limit reached", retry_after=30)
            if world.submits <= self.opts.failing_submits:
                raise BackendError("create job failed after 6 attempt(s): HTTP 500 server_error")
            job_id = f"inst-{len(world.jobs)}"
            job = world.jobs[job_id] = Job(request)
            if self.opts.finish_at_submit:
                job.epochs_done, job.status = request.hyperparameters.n_epochs, JobStatus.SUCCEEDED
            world.by_key[request.key] = job_id
            world.created.append(job_id)
            return JobHandle(self.name, job_id, request.key)

    def find(self, key: str) -> JobHandle | None:
        """The job of ``key`` in the provider's index."""
        with self._provider() as world:
            job_id = world.by_key.get(key)
        return JobHandle(self.name, job_id, key) if job_id else None

    def poll(self, handle: JobHandle, cursor: str | None = None) -> JobUpdate:
        """Move the job on by one epoch, then report the epochs after ``cursor``."""
        with self._provider() as world:
            world.polls += 1
            if self.opts.interrupt_on_poll is not None and (
                world.polls >= self.opts.interrupt_on_poll
            ):
                raise KeyboardInterrupt
            job = world.jobs.get(handle.job_id)
            if job is None:
                raise BackendError(f"instant: no job {handle.job_id}")
            trial = int(job.request.metadata.get("ftsweep_trial", -1))
            if self.opts.poll_error_trial == trial:
                raise ValueError("the provider's answer could not be parsed")
            self._advance(job, trial)
            return self._update(handle, job, int(cursor or 0))

    def _advance(self, job: Job, trial: int) -> None:
        if job.status.terminal:
            return
        if job.cancelled:
            job.status = JobStatus.CANCELLED
        elif (self.opts.fail_trial == trial or self.opts.fail_every_trial) and job.epochs_done:
            job.status = JobStatus.FAILED
        else:
            job.status = JobStatus.RUNNING
            job.epochs_done += 1
            if job.epochs_done >= job.request.hyperparameters.n_epochs:
                job.status = JobStatus.SUCCEEDED

    def _update(self, handle: JobHandle, job: Job, after: int) -> JobUpdate:
        hp = job.request.hyperparameters
        points: list[MetricPoint] = []
        ends: list[EpochEnd] = []
        for epoch in range(after + 1, job.epochs_done + 1):
            new, end = epoch_points(hp, epoch, self.opts)
            points += new
            ends.append(end)
        cost = None
        if job.status.terminal and self.opts.price_per_epoch:
            cost = self.opts.price_per_epoch * job.epochs_done
        succeeded = job.status is JobStatus.SUCCEEDED
        return JobUpdate(
            status=job.status,
            points=tuple(points),
            cursor=str(job.epochs_done),
            total_steps=_steps(hp, self.opts),
            error="the job failed: server_error" if job.status is JobStatus.FAILED else None,
            epoch_ends=tuple(ends),
            cost_usd=cost,
            fine_tuned_model=f"instant:{handle.job_id}" if succeeded else None,
        )

    def cancel(self, handle: JobHandle) -> None:
        """The job's next poll says CANCELLED; an ended job is left as it is."""
        with self._provider() as world:
            world.cancels += 1
            if world.cancels <= self.opts.failing_cancels:
                raise BackendError(f"cancel job {handle.job_id} failed: HTTP 409 conflict")
            job = world.jobs.get(handle.job_id)
            if job is None:
                raise BackendError(f"instant: no job {handle.job_id}")
            if not job.status.terminal:
                job.cancelled = True


@contextlib.contextmanager
def provider_busy(workdir: Path | None = None) -> Iterator[None]:
    """While inside, the provider refuses new jobs (``submit`` raises ProviderBusyError):
    the workdir's provider of ``persist`` backends, else :data:`WORLD`."""
    backend = InstantBackend(workdir=workdir, options=InstantOptions(persist=workdir is not None))
    with backend._provider() as world:
        world.busy = True
    try:
        yield
    finally:
        with backend._provider() as world:
            world.busy = False


@dataclass
class FakeClock:
    """Monotonic time that moves only when the loop sleeps."""

    now: float = 0.0
    slept: float = 0.0

    def clock(self) -> float:
        """Seconds on the monotonic clock."""
        return self.now

    def sleep(self, seconds: float) -> None:
        """Move the clock on, at once."""
        self.now += seconds
        self.slept += seconds

    def wall(self) -> float:
        """Seconds since the epoch (a fixed start plus the clock)."""
        return 1_800_000_000.0 + self.now


def install(folder: Path) -> None:
    """Register :class:`InstantBackend` as ``instant`` the way an installed package does: a
    ``*.dist-info`` folder in ``folder`` whose ``entry_points.txt`` names it under
    ``ftsweep.backends``, and ``folder`` on ``sys.path`` (a fresh process needs it on its
    ``PYTHONPATH``)."""
    dist = folder / "ftsweep_instant-1.0.dist-info"
    dist.mkdir(parents=True, exist_ok=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: ftsweep-instant\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        f"[ftsweep.backends]\n{NAME} = {__name__}:InstantBackend\n"
    )
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

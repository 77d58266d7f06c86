"""One trial in flight: a small state machine that owns its ledger record.

::

    PENDING --submit--> SUBMITTED --first running poll--> RUNNING --terminal poll--> FINISHED
       ^  \\__provider busy: submit again later            |  (pruned: cancel requested,
       |                                                   |   retried until it lands)
       +-- re-attach: a dead owner's trial, found or resubmitted by its key

The ledger is the trial's user attributes in the Optuna study (names in
:mod:`orchestrator.attrs`): the request is written *before* the job is submitted, the job id
right after, the owner and a heartbeat while it runs, the prune before its cancel, the outcome
before the study is told. Any process that opens the study can therefore re-attach.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from orchestrator.attrs import TrialAttrs
from orchestrator.backends.base import JobHandle, JobUpdate, TrainingRequest
from orchestrator.engine.curves import Curves

if TYPE_CHECKING:
    import optuna

__all__ = ["Phase", "TrialRun"]


class Phase(StrEnum):
    PENDING = "pending"
    SUBMITTED = "submitted"
    RUNNING = "running"
    FINISHED = "finished"


@dataclass
class TrialRun:
    """A trial of this worker whose job is pending, queued or running."""

    trial: optuna.Trial
    request: TrainingRequest
    phase: Phase = Phase.PENDING
    handle: JobHandle | None = None
    cursor: str | None = None
    curves: Curves = field(default_factory=dict)
    epochs_done: int = 0
    #: epochs whose objective the study already has (reported before a restart too)
    reported: set[int] = field(default_factory=set)
    pruned_at: int | None = None
    update: JobUpdate | None = None
    #: when this trial next needs the loop (poll, resubmit, retry a cancel)
    due: float = 0.0
    interval: float = 1.0
    last_beat: float = 0.0
    poll_failures: int = 0
    cancel_pending: bool = False
    cancel_attempts: int = 0
    cancel_due: float = 0.0
    started_at: float = 0.0
    attrs: dict[str, Any] = field(default_factory=dict)
    wall: Callable[[], float] = time.time

    # -- what listeners see (events.TrialView) ---------------------------------------------
    @property
    def number(self) -> int:
        return int(self.trial.number)

    @property
    def job_id(self) -> str | None:
        return self.handle.job_id if self.handle else None

    def set_attr(self, key: str, value: Any) -> None:
        self.trial.set_user_attr(key, value)
        self.attrs[key] = value

    # -- the ledger --------------------------------------------------------------------------
    def write_intent(
        self, backend: str, worker: str, estimate: float | None, batch_pct: float | None
    ) -> None:
        """Before the job exists: the request, its key and configuration, the owner."""
        t = self
        t.set_attr(TrialAttrs.REQUEST, self.request.to_json())
        t.set_attr(TrialAttrs.KEY, self.request.key)
        t.set_attr(TrialAttrs.CONFIG_HASH, self.request.config_hash())
        t.set_attr(TrialAttrs.BACKEND, backend)
        self.claim(worker)
        if estimate is not None:
            t.set_attr(TrialAttrs.ESTIMATE, estimate)
        if batch_pct is not None:
            t.set_attr(TrialAttrs.BATCH_PCT, batch_pct)

    def claim(self, worker: str) -> None:
        """This worker owns the trial from now on."""
        self.set_attr(TrialAttrs.WORKER, worker)
        self.set_attr(TrialAttrs.HEARTBEAT, self.wall())

    def submitted(self, handle: JobHandle, now: float) -> None:
        self.handle = handle
        self.phase = Phase.SUBMITTED
        self.started_at = now
        if self.attrs.get(TrialAttrs.JOB_ID) != handle.job_id:
            self.set_attr(TrialAttrs.JOB_ID, handle.job_id)

    def beat(self, now: float, every: float) -> None:
        """Refresh the heartbeat when ``every`` seconds have passed since the last one."""
        if now - self.last_beat >= every:
            self.set_attr(TrialAttrs.HEARTBEAT, self.wall())
            self.last_beat = now

    def record_epochs(self) -> None:
        self.set_attr(TrialAttrs.EPOCHS_DONE, self.epochs_done)

    def record_prune(self, epoch: int) -> None:
        """The pruner's decision, written before the cancel is sent."""
        self.pruned_at = epoch
        self.set_attr(TrialAttrs.PRUNED_AT, epoch)
        self.cancel_pending = True

    def record_outcome(self, attrs: Mapping[str, Any]) -> None:
        for key, value in attrs.items():
            self.set_attr(key, value)

"""One trial in flight: a small state machine that owns its ledger record.

::

    PENDING --submit--> SUBMITTED --first running poll--> RUNNING --terminal poll--> FINISHED
       ^  \\__provider busy: submit again later            |  (pruned: cancel requested,
       |                                                   |   retried until it lands)
       +-- re-attach: a dead owner's trial, found or resubmitted by its key

The ledger is the trial's user attributes in the Optuna study (names in
:mod:`orchestrator.core.attrs`): the request is written *before* the job is submitted (re-attaching
needs only its key), the owner and a heartbeat while it runs, the prune before its cancel, the
outcome before the study is told. Any process that opens the study can therefore re-attach.

Each trial event is one storage transaction (:func:`~orchestrator.stores.ledger.write`). What
re-attaching does not need (the job id, the MLflow run id, the epochs done and the objective
at each epoch end) is staged and goes with the trial's next write: when the loop is about to
wait, before a pruner reads the study, or with the outcome. A crash loses at most those
staged values, and a re-attached job is polled from its start, so they come again.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from orchestrator.backends.base import JobHandle, JobUpdate, TrainingRequest
from orchestrator.core.attrs import TrialAttrs
from orchestrator.engine.curves import Curves
from orchestrator.stores.ledger import write

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
    #: written with the trial's next ledger write (:meth:`flush`): one transaction a poll
    staged: dict[str, Any] = field(default_factory=dict)
    staged_values: dict[int, float] = field(default_factory=dict)

    # -- what listeners see (events.TrialView) ---------------------------------------------
    @property
    def number(self) -> int:
        return int(self.trial.number)

    @property
    def job_id(self) -> str | None:
        return self.handle.job_id if self.handle else None

    def set_attr(self, key: str, value: Any) -> None:
        """Record ``key`` in the ledger with the trial's next write (at the latest its
        outcome, or when the loop is about to wait): the MLflow run id, the job id."""
        self.stage({key: value})

    def set_attrs(self, values: Mapping[str, Any]) -> None:
        """Write ``values`` (and whatever is staged) as one ledger transaction."""
        self.stage(values)
        self.flush()

    def stage(self, values: Mapping[str, Any]) -> None:
        """Keep ``values`` for the next write (the end of this poll, or sooner)."""
        self.staged.update(values)
        self.attrs.update(values)

    def report(self, value: float, epoch: int) -> None:
        """The objective at an epoch end, for the pruner now and the study at the next
        write (Optuna's ``Trial.report``, whose value the pruner reads from the trial)."""
        if epoch in self.trial._cached_frozen_trial.intermediate_values:
            return
        self.trial._cached_frozen_trial.intermediate_values[epoch] = float(value)
        self.staged_values[epoch] = float(value)

    def flush(self) -> None:
        """Write what is staged, as one transaction (:func:`~.ledger.write`)."""
        if self.staged or self.staged_values:
            attrs, values = self.staged, self.staged_values
            self.staged, self.staged_values = {}, {}
            write(self.trial, attrs, values)

    # -- the ledger --------------------------------------------------------------------------
    @staticmethod
    def intent(
        request: TrainingRequest,
        backend: str,
        worker: str,
        now: float,
        estimate: float | None,
        batch_pct: float | None,
    ) -> dict[str, Any]:
        """The ledger's record before the job exists: the request, its key and
        configuration, the owner and its heartbeat (written in one transaction)."""
        values: dict[str, Any] = {
            TrialAttrs.REQUEST: request.to_json(),
            TrialAttrs.KEY: request.key,
            TrialAttrs.CONFIG_HASH: request.config_hash(),
            TrialAttrs.BACKEND: backend,
            TrialAttrs.WORKER: worker,
            TrialAttrs.HEARTBEAT: now,
        }
        if estimate is not None:
            values[TrialAttrs.ESTIMATE] = estimate
        if batch_pct is not None:
            values[TrialAttrs.BATCH_PCT] = batch_pct
        return values

    def claim(self, worker: str) -> None:
        """This worker owns the trial from now on."""
        self.set_attrs({TrialAttrs.WORKER: worker, TrialAttrs.HEARTBEAT: self.wall()})

    def submitted(self, handle: JobHandle, now: float) -> None:
        self.handle = handle
        self.phase = Phase.SUBMITTED
        self.started_at = now
        if self.attrs.get(TrialAttrs.JOB_ID) != handle.job_id:
            self.set_attr(TrialAttrs.JOB_ID, handle.job_id)

    def beat(self, now: float, every: float) -> None:
        """Refresh the heartbeat when ``every`` seconds have passed since the last one."""
        if now - self.last_beat >= every:  # written at once, with whatever is staged
            self.set_attrs({TrialAttrs.HEARTBEAT: self.wall()})
            self.last_beat = now

    def record_epochs(self) -> None:
        self.stage({TrialAttrs.EPOCHS_DONE: self.epochs_done})

    def record_prune(self, epoch: int) -> None:
        """The pruner's decision, written before the cancel is sent."""
        self.pruned_at = epoch
        self.set_attrs({TrialAttrs.PRUNED_AT: epoch})
        self.cancel_pending = True

    def record_outcome(self, attrs: Mapping[str, Any]) -> None:
        """The outcome, with whatever this poll staged, in one transaction."""
        self.set_attrs(attrs)

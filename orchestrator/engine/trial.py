"""One trial in flight: a small state machine that owns its ledger record.

::

    PENDING --submit--> SUBMITTED --start_running--> RUNNING
       |  ^                 |                           |
       |  +--requeue        +-------- finish -----------+--> FINISHED
       +-------------------------- finish --------------+

Every phase change goes through a method of :class:`TrialRun`, checked against
:data:`TRANSITIONS`; one the table does not allow raises :class:`IllegalTransition` (an
internal error naming the trial, its phase and the refused event). ``submit``: the job exists
(submitted, or found again by its key on a re-attach); ``requeue``: a busy provider or no free
slot, submit later; ``start_running``: the first poll that says the job runs; ``finish``: the
outcome is recorded and the study told. Polls, prunes and cancels happen only while the job is
SUBMITTED or RUNNING (:data:`WHILE_THE_JOB_EXISTS`).

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
from typing import TYPE_CHECKING, Any, Final

from orchestrator.backends.base import JobHandle, JobUpdate, TrainingRequest
from orchestrator.core.attrs import TrialAttrs
from orchestrator.engine.curves import Curves
from orchestrator.results.front import epoch_values
from orchestrator.stores.ledger import write
from orchestrator.stores.optuna_internals import report_for_pruner

if TYPE_CHECKING:
    import optuna

__all__ = ["TRANSITIONS", "WHILE_THE_JOB_EXISTS", "IllegalTransition", "Phase", "TrialRun"]


class Phase(StrEnum):
    """Where a trial in flight stands (the module's diagram)."""

    PENDING = "pending"
    SUBMITTED = "submitted"
    RUNNING = "running"
    FINISHED = "finished"


#: event -> {the phase it may happen in: the phase after it}; anything else is refused
TRANSITIONS: Final[Mapping[str, Mapping[Phase, Phase]]] = {
    "submit": {Phase.PENDING: Phase.SUBMITTED},
    "requeue": {Phase.PENDING: Phase.PENDING},
    "start_running": {Phase.SUBMITTED: Phase.RUNNING},
    "finish": {
        Phase.PENDING: Phase.FINISHED,
        Phase.SUBMITTED: Phase.FINISHED,
        Phase.RUNNING: Phase.FINISHED,
    },
}
#: the phases in which the trial's job exists: it is polled, pruned and cancelled only then
WHILE_THE_JOB_EXISTS: Final = frozenset({Phase.SUBMITTED, Phase.RUNNING})


class IllegalTransition(RuntimeError):
    """An internal error: the engine asked a trial for an event its phase does not allow."""

    def __init__(self, number: int, phase: Phase, event: str, allowed: frozenset[Phase]) -> None:
        shown = ", ".join(sorted(allowed)) or "no phase"
        super().__init__(
            f"trial {number}: {event!r} is not allowed while {phase} (only while {shown})"
        )
        self.number, self.phase, self.event = number, phase, event


@dataclass
class TrialRun:
    """A trial of this worker whose job is pending, queued or running.

    Its fields are read by the loop and the listeners, and changed only by its methods."""

    trial: optuna.Trial
    request: TrainingRequest
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
    _phase: Phase = field(default=Phase.PENDING, init=False, repr=False)

    @classmethod
    def reattached(
        cls,
        trial: optuna.Trial,
        frozen: optuna.trial.FrozenTrial,
        wall: Callable[[], float],
        now: float,
    ) -> TrialRun:
        """A trial a dead worker left, taken on from its ledger (``frozen``: the trial as the
        study holds it): its request, the epochs the study has values of, a recorded prune
        (whose cancel is sent again)."""
        attrs = frozen.user_attrs
        pruned = attrs.get(TrialAttrs.PRUNED_AT)
        return cls(
            trial,
            TrainingRequest.from_json(attrs[TrialAttrs.REQUEST]),
            attrs=dict(attrs),
            reported=set(frozen.intermediate_values) | set(epoch_values(frozen)),
            pruned_at=int(pruned) if pruned is not None else None,
            cancel_pending=pruned is not None,
            wall=wall,
            last_beat=now,
        )

    # -- the phase ---------------------------------------------------------------------------
    @property
    def phase(self) -> Phase:
        return self._phase

    def _move(self, event: str) -> None:
        """Take ``event``'s transition from the current phase (:data:`TRANSITIONS`)."""
        table = TRANSITIONS[event]
        if self._phase not in table:
            raise IllegalTransition(self.number, self._phase, event, frozenset(table))
        self._phase = table[self._phase]

    def _require(self, event: str, phases: frozenset[Phase]) -> None:
        if self._phase not in phases:
            raise IllegalTransition(self.number, self._phase, event, phases)

    def submitted(self, handle: JobHandle, now: float, interval: float) -> None:
        """PENDING -> SUBMITTED: the job ``handle`` exists (submitted now, or found again on a
        re-attach); it is polled at once, then every ``interval`` seconds or so."""
        self._move("submit")
        self.handle = handle
        self.started_at = now
        if self.attrs.get(TrialAttrs.JOB_ID) != handle.job_id:
            self.set_attr(TrialAttrs.JOB_ID, handle.job_id)
        self.interval, self.due = interval, now

    def requeue(self, due: float) -> None:
        """Stays PENDING (a busy provider, or no free slot): submitted again at ``due``."""
        self._move("requeue")
        self.due = due

    def start_running(self) -> None:
        """SUBMITTED -> RUNNING: the provider says the job runs (:meth:`polled`)."""
        self._move("start_running")

    def finish(self) -> None:
        """-> FINISHED: the outcome is recorded and the study told; nothing more happens."""
        self._move("finish")

    # -- polls ---------------------------------------------------------------------------------
    def poll_failed(self, now: float, lo: float, hi: float) -> int:
        """A poll that failed: polled again after twice the interval (within ``lo``..``hi``
        seconds); returns the failures in a row."""
        self._require("poll", WHILE_THE_JOB_EXISTS)
        self.poll_failures += 1
        self.interval = min(max(self.interval, lo) * 2, hi)
        self.due = now + self.interval
        return self.poll_failures

    def polled(self, update: JobUpdate) -> None:
        """A poll's answer; SUBMITTED -> RUNNING when it says the job runs."""
        self._require("poll", WHILE_THE_JOB_EXISTS)
        self.poll_failures = 0
        self.update, self.cursor = update, update.cursor
        if self._phase is Phase.SUBMITTED and update.status.value == "running":
            self.start_running()

    def next_poll(self, now: float, fresh: bool, lo: float, hi: float) -> None:
        """When to poll again: soon (``lo``) after new points, else backing off to ``hi``;
        no later than a cancel to retry."""
        self._require("poll", WHILE_THE_JOB_EXISTS)
        self.interval = lo if fresh else min(self.interval * 1.5, hi)
        self.due = now + self.interval
        if self.cancel_pending:
            self.due = min(self.due, self.cancel_due)

    def epoch_ended(self, epoch: int) -> None:
        """The job has trained ``epoch`` epochs (recorded with :meth:`record_epochs`)."""
        self._require("poll", WHILE_THE_JOB_EXISTS)
        self.epochs_done = epoch

    # -- cancelling a pruned job -----------------------------------------------------------------
    def cancel_failed(self) -> int:
        """A cancel that failed; returns the tries so far."""
        self._require("cancel", WHILE_THE_JOB_EXISTS)
        self.cancel_attempts += 1
        return self.cancel_attempts

    def retry_cancel(self, at: float) -> None:
        """Try the cancel again at ``at`` (the trial is due by then)."""
        self._require("cancel", WHILE_THE_JOB_EXISTS)
        self.cancel_due = at
        self.due = min(self.due, at)

    def cancel_settled(self) -> None:
        """No more cancel to send: it landed, or was given up."""
        self._require("cancel", WHILE_THE_JOB_EXISTS)
        self.cancel_pending = False

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

    def written(self, values: Mapping[str, Any]) -> None:
        """``values`` are in the ledger already (written by the launch, with the claim)."""
        self.attrs.update(values)

    def report(self, value: float, epoch: int) -> None:
        """The objective at an epoch end, for the pruner now and the study at the next
        write (Optuna's ``Trial.report``, whose value the pruner reads from the trial)."""
        self._require("report", WHILE_THE_JOB_EXISTS)
        self.reported.add(epoch)
        if report_for_pruner(self.trial, epoch, value):
            self.staged_values[epoch] = float(value)

    def report_aside(self, value: float, epoch: int) -> None:
        """The primary objective at an epoch end of a trial in a study of several
        objectives, kept in its ledger (``ftsweep.epoch_values``), not as an Optuna
        intermediate value: Optuna's multi-objective samplers refuse trials with those."""
        self._require("report", WHILE_THE_JOB_EXISTS)
        self.reported.add(epoch)
        found = self.attrs.get(TrialAttrs.EPOCH_VALUES)
        values = dict(found) if isinstance(found, dict) else {}
        values[str(epoch)] = float(value)
        self.stage({TrialAttrs.EPOCH_VALUES: values})

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

    def beat(self, now: float, every: float) -> None:
        """Refresh the heartbeat when ``every`` seconds have passed since the last one."""
        if now - self.last_beat >= every:  # written at once, with whatever is staged
            self.set_attrs({TrialAttrs.HEARTBEAT: self.wall()})
            self.last_beat = now

    def record_epochs(self) -> None:
        self.stage({TrialAttrs.EPOCHS_DONE: self.epochs_done})

    def record_prune(self, epoch: int) -> None:
        """The pruner's decision, written before the cancel is sent."""
        self._require("prune", WHILE_THE_JOB_EXISTS)
        self.pruned_at = epoch
        self.set_attrs({TrialAttrs.PRUNED_AT: epoch})
        self.cancel_pending = True

    def record_outcome(self, attrs: Mapping[str, Any]) -> None:
        """The outcome, with whatever this poll staged, in one transaction (before
        :meth:`finish`)."""
        self._require("record the outcome", frozenset(TRANSITIONS["finish"]))
        self.set_attrs(attrs)

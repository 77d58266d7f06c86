"""What the engine tells the world: typed events, and the listeners that receive them.

The engine schedules; it never writes an MLflow tag or prints a line. Everything else happens
in listeners (the model is Ray Tune's ``LoggerCallback``): the MLflow listener
(:mod:`orchestrator.tracking`) keeps the experiment, runs, tags, artifacts and the model
registry; the console listener (:mod:`orchestrator.cli.console`) prints progress. A listener
implements the hooks it cares about; the others do nothing.

Order of events for one trial::

    TrialStarted -> TrialSubmitted -> (Points | EpochReported)* -> TrialFinished

``TrialStarted`` comes once the trial's request is in the ledger (before its job is
submitted); on a re-attach it comes again with ``reattached=True`` and the job already known.
``TrialFinished`` comes *before* the study is told, so a listener's record is complete before
the trial counts as done; a listener must therefore accept the same ``TrialFinished`` twice
(after a crash between the two) and do nothing the second time.

A listener that raises does not stop the sweep: :class:`Dispatcher` turns the error into a
warning :class:`Note` for the other listeners and goes on.
"""

from __future__ import annotations

import traceback
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol

from orchestrator.backends.base import JobUpdate, MetricPoint, TrainingRequest
from orchestrator.core.errors import StoreUnreachableError

if TYPE_CHECKING:
    import optuna
    import pandas as pd

    from orchestrator.analysis.diagnosis import Advice, Diagnosis
    from orchestrator.plan.fingerprint import Fingerprint
    from orchestrator.plan.sweep import SweepPlan
    from orchestrator.results.table import TrialTable

__all__ = [
    "Dispatcher",
    "EpochReported",
    "Event",
    "Listener",
    "Note",
    "Points",
    "Records",
    "SweepFinished",
    "SweepStarted",
    "TrialFinished",
    "TrialReused",
    "TrialStarted",
    "TrialSubmitted",
    "TrialView",
]


class TrialView(Protocol):
    """What listeners see of a trial in flight: its number, request, job and attributes (as
    they were when this process took the trial on). Read-only: what a listener wants kept on
    the trial (the MLflow listener's run id) it returns from its hook as :data:`Records`, and
    the engine writes it with the trial's next ledger write.
    """

    @property
    def number(self) -> int: ...

    @property
    def job_id(self) -> str | None: ...

    @property
    def request(self) -> TrainingRequest: ...

    @property
    def attrs(self) -> Mapping[str, Any]: ...


@dataclass(frozen=True)
class Event:
    hook: ClassVar[str] = ""


@dataclass(frozen=True)
class SweepStarted(Event):
    """The stores are open and the study exists (``resumed``: it had trials already)."""

    hook: ClassVar[str] = "sweep_started"
    plan: SweepPlan
    study: optuna.Study
    backend: str
    resumed: bool
    #: what the results depend on (data, resolved base model, settings)
    fingerprint: Fingerprint | None = None


@dataclass(frozen=True)
class TrialStarted(Event):
    hook: ClassVar[str] = "trial_started"
    trial: TrialView
    reattached: bool = False
    #: the share of the training examples in one batch (%), when the batch size is searched
    batch_size_pct: float | None = None


@dataclass(frozen=True)
class TrialSubmitted(Event):
    hook: ClassVar[str] = "trial_submitted"
    trial: TrialView
    job_id: str


@dataclass(frozen=True)
class Points(Event):
    """New metric points of a trial's job (on a re-attach: everything the backend has, so a
    listener that already holds some of them skips those)."""

    hook: ClassVar[str] = "points"
    trial: TrialView
    points: tuple[MetricPoint, ...]


@dataclass(frozen=True)
class EpochReported(Event):
    """The objective at an epoch end went to the pruner; ``pruned``: it stopped the trial
    (its cancel follows)."""

    hook: ClassVar[str] = "epoch_reported"
    trial: TrialView
    epoch: int
    step: int
    metric: str
    value: float
    pruned: bool = False


@dataclass(frozen=True)
class TrialFinished(Event):
    """A trial's job has ended and its outcome is known; the study is told right after."""

    hook: ClassVar[str] = "trial_finished"
    trial: TrialView
    state: Literal["COMPLETE", "PRUNED", "FAIL"]
    value: float | None
    diagnosis: Diagnosis
    update: JobUpdate | None
    cost_usd: float | None
    curves: Mapping[str, list[tuple[int, float]]]
    error: str | None = None
    pruned_at: int | None = None
    #: the job finished before a prune's cancel landed
    finished_despite_prune: bool = False


@dataclass(frozen=True)
class TrialReused(Event):
    """A trial repeats a configuration the study already trained: its result is copied."""

    hook: ClassVar[str] = "trial_reused"
    number: int
    twin: int
    state: str
    waiting: bool = False


@dataclass(frozen=True)
class SweepFinished(Event):
    """The loop has stopped (limits reached, budget, target, timeout)."""

    hook: ClassVar[str] = "sweep_finished"
    plan: SweepPlan
    study: optuna.Study
    #: one row per trial (:func:`orchestrator.results.table.trials_table`)
    table: TrialTable
    advice: Advice | None
    best: optuna.trial.FrozenTrial | None
    spent_usd: float
    stop_reason: str | None
    #: did this run start or finish any trial (else a finished sweep was run again)
    changed: bool

    @property
    def frame(self) -> pd.DataFrame:
        """The table as a pandas DataFrame (built when first asked for)."""
        return self.table.frame


@dataclass(frozen=True)
class Note(Event):
    """Something worth telling the user that is not a trial's progress (a busy provider, the
    queue, the budget, a retried cancel, a listener's failure)."""

    hook: ClassVar[str] = "note"
    text: str
    level: Literal["info", "warning"] = "info"
    trial: int | None = None


#: what a listener asks the engine to record (attribute name -> JSON-ready value): on the
#: trial's ledger for a trial's event, on the study for the sweep's. Listeners read the study
#: and the trial in their events; only the engine writes them.
Records = dict[str, Any]


class Listener:
    """Receives engine events; override the hooks you need (each gets its event). A hook
    may return :data:`Records` (the MLflow run it made, say) for the engine to record."""

    #: shown when this listener fails
    name: str = "listener"

    def handle(self, event: Event) -> Records | None:
        method = getattr(self, event.hook, None)
        if method is None:
            return None
        found: Records | None = method(event)
        return found


@dataclass
class Dispatcher:
    """Sends each event to every listener; a listener's error becomes a warning note."""

    listeners: list[Listener] = field(default_factory=list)
    debug: bool = False

    def __call__(self, event: Event) -> Records:
        """Send ``event`` to every listener; what they ask to record, merged."""
        records: Records = {}
        for listener in self.listeners:
            try:
                found = listener.handle(event)
                if found:
                    records.update(found)
            except (KeyboardInterrupt, StoreUnreachableError):
                raise  # a store that no longer answers stops the sweep (trials stay RUNNING)
            except Exception as exc:  # one listener's failure must not end the sweep
                if self.debug:
                    traceback.print_exc()
                if isinstance(event, Note):
                    continue
                why = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                text = f"{listener.name}: {why}"
                self._others(listener, Note(text, "warning", _number(event)))
        return records

    def _others(self, failed: Listener, note: Note) -> None:
        for listener in self.listeners:
            if listener is not failed:
                try:
                    listener.handle(note)
                except Exception:
                    continue


def _number(event: Event) -> int | None:
    trial = getattr(event, "trial", None)
    return getattr(trial, "number", None)

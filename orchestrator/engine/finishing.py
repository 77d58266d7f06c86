"""The sweep loop's first layer: its state, and the end of a trial.

:class:`~orchestrator.engine.loop.SweepLoop` is built in layers, one responsibility a module,
each calling only the layers below it:

- :class:`Concluding` (here): what the loop holds (its trials in flight, budget, stop reason)
  and how a trial ends: its outcome (:mod:`.outcome`), recorded in the ledger, told to the
  listeners, then to the study; a failure that may leave a job running cancels it first.
- :class:`~orchestrator.engine.polling.Polling`: submit, poll, report epochs, prune, cancel.
- :class:`~orchestrator.engine.launching.Launching`: what may start, and starting it.
- :class:`~orchestrator.engine.loop.SweepLoop`: the loop itself, and adopting trials whose
  owner died.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from orchestrator.analysis.diagnosis import Diagnosis, Thresholds
from orchestrator.backends.base import Backend, JobUpdate
from orchestrator.core.attrs import TrialAttrs
from orchestrator.core.errors import (
    ProviderAuthError,
    ProviderRefusedError,
    ProviderUnreachableError,
    StoreUnreachableError,
)
from orchestrator.engine.budget import Budget
from orchestrator.engine.events import Event, Note, Records, TrialFinished
from orchestrator.engine.fidelity import tell_derived
from orchestrator.engine.limits import Limits
from orchestrator.engine.objectives import measure, settle
from orchestrator.engine.outcome import Outcome, conclude, failure_reason
from orchestrator.engine.trial import TrialRun
from orchestrator.plan.sweep import SweepPlan
from orchestrator.stores.ledger import worker_id
from orchestrator.stores.optuna_internals import tell

if TYPE_CHECKING:
    import optuna

__all__ = ["ENVIRONMENT_FAILURES_TO_STOP", "STOP", "Concluding"]

ENVIRONMENT_FAILURES_TO_STOP = 3  # in a row: the provider or the machine is not working
#: errors that stop the sweep at once: every further call would fail the same way (the
#: provider's credentials or connection, a store that no longer answers); trials in flight
#: stay RUNNING with their ledger, so the next run re-attaches (none is charged)
STOP = (ProviderAuthError, ProviderRefusedError, ProviderUnreachableError, StoreUnreachableError)


@dataclass
class Concluding:
    """The loop's state and the end of its trials (the first layer of
    :class:`~orchestrator.engine.loop.SweepLoop`, whose constructor these fields are)."""

    plan: SweepPlan
    backend: Backend
    study: optuna.Study
    limits: Limits
    budget: Budget
    emit: Callable[[Event], Records | None]
    worker: str = field(default_factory=worker_id)
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    wall: Callable[[], float] = time.time
    #: held while counting the trials and asking for the next (see :mod:`.locks`)
    launch_lock: Callable[[], AbstractContextManager[None]] = contextlib.nullcontext
    #: whether ``launch_lock`` excludes every other worker of the study (:func:`.exclusive`)
    lock_exclusive: bool = False

    def __post_init__(self) -> None:
        self.runs: dict[int, TrialRun] = {}
        self.stop_reason: str | None = None
        self.started = self.clock()
        self.changed = False  # did this run start or finish anything
        self.durations: list[float] = []
        self.environment_failures = 0  # in a row
        #: per trial: seconds its job was paused by the provider, and since when it is
        self._paused_s: dict[int, float] = {}
        self._paused_since: dict[int, float] = {}
        self.thresholds = Thresholds(**self.plan.spec.diagnosis.model_dump())

    def in_flight(self) -> list[TrialRun]:
        """Trials of this worker whose job may be running (for an interrupted run's message)."""
        return [r for r in self.runs.values() if r.handle is not None]

    def _note(self, text: str, level: str = "info", trial: int | None = None) -> None:
        self.emit(Note(text, "warning" if level == "warning" else "info", trial))

    def _flush(self) -> None:
        """Write each trial's staged ledger values (its heartbeat, epochs done and reported
        objectives): one transaction a trial. Polls stage them; they are written when the
        loop is about to wait, before a pruner reads the study, and with the trial's
        outcome, so quick polls of one trial share one write. A value lost to a crash
        meanwhile is reported again: a re-attached job is polled from its start."""
        for run in self.runs.values():
            run.flush()

    def _paused(self, run: TrialRun, update: JobUpdate | None) -> None:
        """A job the provider paused (Azure's Developer tier) is said so (not a failure),
        and its paused time is left out of the durations behind the queue's ETA."""
        since = self._paused_since.get(run.number)
        if update is not None and update.paused and since is None:
            self._paused_since[run.number] = self.clock()
            self._note(f"{self.backend.name} paused the job (pre-empted); it resumes by itself",
                       trial=run.number)  # fmt: skip
        elif since is not None and not (update is not None and update.paused):
            del self._paused_since[run.number]
            self._paused_s[run.number] = self._paused_s.get(run.number, 0.0) + self.clock() - since
            if update is not None:
                self._note(f"{self.backend.name} resumed the job", trial=run.number)

    # -- the end of a trial -------------------------------------------------------------------
    def _conclude(self, run: TrialRun, update: JobUpdate | None, error: str | None = None) -> None:
        cost = self._cost(run, update)
        hp = run.request.hyperparameters
        try:
            outcome = conclude(
                curves=run.curves,
                update=update,
                metric=self.plan.spec.objective.metric,
                n_epochs=hp.n_epochs,
                params=hp.as_dict(),
                thresholds=self.thresholds,
                cost_usd=cost,
                pruned_at=run.pruned_at,
                error=error,
            )
            spec = self.plan.spec
            if spec.multi_objective or spec.constraints:
                outcome = self._objectives(run, outcome)
        except Exception as exc:  # concluding this trial failed: it fails, the sweep goes on
            why = f"could not conclude the trial: {failure_reason(exc)}"
            reason = f"{error}; {why}" if error else why
            outcome = Outcome(
                "FAIL", None, Diagnosis("unknown"), cost, reason, {TrialAttrs.ERROR: reason}
            )
        self._record(run, outcome, update)

    def _objectives(self, run: TrialRun, outcome: Outcome) -> Outcome:
        """Every objective and constraint of the trial (:mod:`.objectives`): a completed
        trial missing an objective fails."""
        duration = None
        if run.handle is not None:  # submitted at started_at (a fake clock may start at 0)
            paused = self._paused_s.get(run.number, 0.0)
            duration = round(self.clock() - run.started_at - paused, 3)
        measured = measure(self.plan.spec, run.curves, outcome.cost_usd, duration)
        values, violations, missing = settle(self.plan.spec, measured)
        attrs = {**outcome.attrs, TrialAttrs.OBJECTIVES: measured}
        if duration is not None:
            attrs[TrialAttrs.DURATION] = duration
        if violations:
            attrs[TrialAttrs.CONSTRAINTS] = violations
        if outcome.state != "COMPLETE":
            return replace(outcome, attrs=attrs)
        if missing is not None:
            attrs[TrialAttrs.ERROR] = missing
            return replace(outcome, state="FAIL", value=None, error=missing, attrs=attrs)
        return replace(outcome, attrs=attrs, values=values, constraints=violations)

    def _cost(self, run: TrialRun, update: JobUpdate | None) -> float | None:
        """What the trial is charged: the backend's cost of the finished job (its actual
        cost when it knows it, else its estimate); when that is unknown (no answer, an
        error, or no last update of a job that was submitted) the trial's estimate, so a
        budget always binds. A job never submitted costs nothing."""
        cost = None
        if update is not None:
            try:
                cost = self.backend.job_cost(run.request, update, self.plan.train)
            except Exception as exc:
                self._note(f"cost unknown ({failure_reason(exc)})", "warning", run.number)
        if cost is None and run.handle is not None:
            cost = self._estimate(run)
        return cost

    def _estimate(self, run: TrialRun) -> float | None:
        if TrialAttrs.ESTIMATE in run.attrs:
            return float(run.attrs[TrialAttrs.ESTIMATE])
        try:
            return self.backend.estimate_cost(run.request, self.plan.train)
        except Exception:
            return None

    def _record(self, run: TrialRun, outcome: Outcome, update: JobUpdate | None) -> None:
        """Outcome into the ledger, then the listeners, then the study: in that order. The
        trial is FINISHED once the study is told; a step before that which fails leaves it
        in its phase, so :meth:`_fail` records it again, as a failure."""
        self.runs.pop(run.number, None)
        self.changed = True
        self.budget.release(run.number)
        if outcome.cost_usd is not None:
            self.budget.spend(outcome.cost_usd)
        if run.started_at:
            self._paused(run, None)
            paused = self._paused_s.pop(run.number, 0.0)
            self.durations.append(self.clock() - run.started_at - paused)
        run.record_outcome(outcome.attrs)
        self.emit(
            TrialFinished(
                run,
                outcome.state,
                outcome.value,
                outcome.diagnosis,
                update,
                outcome.cost_usd,
                run.curves,
                outcome.error,
                run.pruned_at,
                outcome.finished_despite_prune,
            )
        )
        for key, violation in outcome.constraints.items():
            run.trial.set_constraint(key, violation)  # read by the sampler when it is told
        told = outcome.values if outcome.values is not None else outcome.value
        self._tell(run.trial, outcome.state, told)
        run.finish()
        if (
            outcome.state == "COMPLETE"
            and update is not None
            and self.plan.spec.sampler.derives_epochs
        ):
            self._derive(run, update)

    def _derive(self, run: TrialRun, update: JobUpdate) -> None:
        """The job's earlier epochs as trials of their own (:mod:`.fidelity`)."""
        try:
            numbers = tell_derived(
                self.study,
                self.plan,
                run.trial,
                run.request,
                run.curves,
                update.checkpoints,
                run.job_id,
                run.attrs,
            )
        except Exception as exc:  # the trial itself is told: only the extra knowledge is lost
            self._note(f"earlier epochs not told: {failure_reason(exc)}", "warning", run.number)
            return
        if numbers:
            listed = ", ".join(f"#{n}" for n in numbers)
            self._note(
                f"earlier epochs told as trial(s) {listed} (derived, not trained)", trial=run.number
            )

    def _fail(self, run: TrialRun, reason: str, environmental: bool = False) -> None:
        """End ``run`` as FAIL; a job that may still run is cancelled first (best effort).

        ``environmental``: it failed for reasons of the provider or the machine, not of its
        configuration; it then does not count toward the limit and is tried again by the
        next ``ftsweep run``."""
        self.runs.pop(run.number, None)
        if environmental:
            run.set_attr(TrialAttrs.ENVIRONMENT_FAILURE, True)
            self.environment_failures += 1
            if self.environment_failures >= ENVIRONMENT_FAILURES_TO_STOP and not self.stop_reason:
                self.stop_reason = (
                    f"{self.environment_failures} trials in a row failed for reasons of "
                    f"{self.backend.name} ({reason}); they do not count, and the next "
                    "`ftsweep run` tries them again"
                )
                self._note(self.stop_reason, "warning")
        job_running = run.handle is not None and not (run.update and run.update.status.terminal)
        if job_running and run.handle is not None:
            try:
                self.backend.cancel(run.handle)
            except Exception as exc:
                self._note(
                    f"job {run.handle.job_id} may still run ({failure_reason(exc)}); "
                    "cancel it there",
                    "warning",
                    run.number,
                )
        try:
            self._conclude(run, run.update, reason)
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # the stores themselves failed: leave it for a re-attach
            self._note(
                f"could not record the failure ({failure_reason(exc)})", "warning", run.number
            )

    def _tell(self, trial: optuna.Trial, state: str, value: float | Sequence[float] | None) -> None:
        """Tell the study (:func:`~orchestrator.stores.optuna_internals.tell`); a trial
        another worker finished first is said so, not raised."""
        import optuna

        try:
            if state == "COMPLETE":
                tell(self.study, trial, value)
            else:
                tell(self.study, trial, state=optuna.trial.TrialState[state])
        except (RuntimeError, ValueError) as exc:  # another worker finished it first
            self._note(f"not told: {exc}", "warning", trial.number)

"""The sweep loop: decides what to launch, poll, prune and conclude. Nothing else.

Single-threaded and event-driven: many jobs can be in flight (``parallel``, capped by the
backend's ``capabilities.max_concurrent_jobs``, which counts the running jobs of every worker
of the study), each a :class:`~.trial.TrialRun` polled with back-off. The trial limit, the
budget and that cap are decided for the whole study under the launch lock (:mod:`.locks`).
Everything the world should know leaves as an event (:mod:`.events`); the loop writes no
MLflow tag and prints nothing. One trial's error stays in that trial (Optuna's rule):
it fails that trial, the loop goes on.

Identical configurations are trained once per study (:mod:`.repeats`). Trials whose owner
died (a dead process on this host, or a heartbeat older than :data:`STALE_AFTER_S` from another
host) are adopted and re-attached to their jobs through the ledger, at the start and every
:data:`ADOPT_EVERY_S` after.
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from orchestrator.analysis.diagnosis import Diagnosis, Thresholds
from orchestrator.backends.base import Backend, JobUpdate, TrainingRequest
from orchestrator.core.attrs import TrialAttrs
from orchestrator.core.errors import (
    BackendError,
    OrchestratorError,
    ProviderAuthError,
    ProviderBusyError,
    ProviderRefusedError,
    ProviderUnreachableError,
    StoreUnreachableError,
    UsageError,
)
from orchestrator.engine.budget import Budget
from orchestrator.engine.curves import add_points
from orchestrator.engine.events import (
    EpochReported,
    Event,
    Note,
    Points,
    TrialFinished,
    TrialStarted,
    TrialSubmitted,
)
from orchestrator.engine.fidelity import tell_derived
from orchestrator.engine.outcome import Outcome, conclude, objective_at
from orchestrator.engine.repeats import Repeats
from orchestrator.engine.trial import Phase, TrialRun
from orchestrator.plan.sweep import SweepPlan
from orchestrator.stores.ledger import owner_alive, worker_id, write

if TYPE_CHECKING:
    import optuna

__all__ = [
    "ADOPT_EVERY_S",
    "HEARTBEAT_EVERY_S",
    "STALE_AFTER_S",
    "Limits",
    "SweepLoop",
    "counted",
]

HEARTBEAT_EVERY_S = 10.0
STALE_AFTER_S = 120.0
ADOPT_EVERY_S = 60.0
CANCEL_ATTEMPTS = 6
POLL_FAILURES_SHOWN = 10  # say so again after this many failed polls in a row
ENVIRONMENT_FAILURES_TO_STOP = 3  # in a row: the provider or the machine is not working
#: errors that stop the sweep at once: every further call would fail the same way (the
#: provider's credentials or connection, a store that no longer answers); trials in flight
#: stay RUNNING with their ledger, so the next run re-attaches (none is charged)
STOP = (ProviderAuthError, ProviderRefusedError, ProviderUnreachableError, StoreUnreachableError)


@dataclass(frozen=True)
class Limits:
    trials: int
    parallel: int
    timeout_s: float | None = None
    target: float | None = None


#: the states of trials that count toward the limit (see :func:`counted`)
COUNTED_STATES = ("COMPLETE", "PRUNED", "FAIL", "RUNNING")


def counted(trials: Sequence[optuna.trial.FrozenTrial], before: int | None = None) -> int:
    """Trials toward the limit (numbered below ``before``, if given): finished or running,
    but not those that never started or failed for reasons of the environment (they are
    tried again), nor earlier epochs derived from another trial's job."""
    return sum(
        1
        for t in trials
        if t.state.name in COUNTED_STATES
        and (before is None or t.number < before)
        and TrialAttrs.ENVIRONMENT_FAILURE not in t.user_attrs
        and TrialAttrs.NOT_STARTED not in t.user_attrs
        and TrialAttrs.DERIVED_FROM not in t.user_attrs
    )


@dataclass
class SweepLoop:
    """Runs one sweep's trials until its limits are reached."""

    plan: SweepPlan
    backend: Backend
    study: optuna.Study
    limits: Limits
    budget: Budget
    emit: Callable[[Event], None]
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
        self.repeats = Repeats(self.study, self.emit, self.worker, self.clock, self.wall)
        self.stop_reason: str | None = None
        self.started = self.clock()
        self.changed = False  # did this run start or finish anything
        self.durations: list[float] = []
        cap = self.backend.capabilities.max_in_flight
        self.capacity = min(self.limits.parallel, cap) if cap else self.limits.parallel
        if cap and cap < self.limits.parallel:
            self._note(f"{self.backend.name} runs at most {cap} job(s) at once: the rest queue")
        self._queued = 0
        self._blocked = False  # the last launch found the provider's cap full
        self.environment_failures = 0  # in a row
        #: per trial: seconds its job was paused by the provider, and since when it is
        self._paused_s: dict[int, float] = {}
        self._paused_since: dict[int, float] = {}
        self._adopted_at = self.clock()
        self.thresholds = Thresholds(**self.plan.spec.diagnosis.model_dump())
        import optuna

        self._prunes = not isinstance(self.study.pruner, optuna.pruners.NopPruner)

    # -- the loop ---------------------------------------------------------------------------
    def run(self) -> None:
        try:
            self._run()
        except BaseException:  # Ctrl-C, a lost provider or store: keep what was staged
            with contextlib.suppress(Exception):
                self._flush()
            raise

    def _run(self) -> None:
        self._adopt()
        while True:
            self._launch()
            self.repeats.settle(self._tell)
            if not self.runs and not self.repeats.waiting:
                if self._can_launch():
                    if self._blocked:  # the study's running jobs fill the provider's cap
                        self._wait_for_slot()
                    continue
                self._adopt()  # before leaving: trials a dead worker left are finished here
                if self.runs or self.repeats.waiting:
                    continue
                break
            self._service()
            if self.clock() - self._adopted_at > ADOPT_EVERY_S:
                self._adopt()
            due = [r.due for r in self.runs.values()]
            if not due and not self.repeats.waiting:
                continue  # the last trial just ended: launch the next at once
            wait = (min(due) if due else self.clock() + 1.0) - self.clock()
            if wait > 0:
                self._flush()  # what the polls staged reaches the study before the loop idles
                self.sleep(min(wait, 5.0))

    def _flush(self) -> None:
        """Write each trial's staged ledger values (its heartbeat, epochs done and reported
        objectives): one transaction a trial. Polls stage them; they are written when the
        loop is about to wait, before a pruner reads the study, and with the trial's
        outcome, so quick polls of one trial share one write. A value lost to a crash
        meanwhile is reported again: a re-attached job is polled from its start."""
        for run in self.runs.values():
            run.flush()

    def in_flight(self) -> list[TrialRun]:
        """Trials of this worker whose job may be running (for an interrupted run's message)."""
        return [r for r in self.runs.values() if r.handle is not None]

    def _note(self, text: str, level: str = "info", trial: int | None = None) -> None:
        self.emit(Note(text, "warning" if level == "warning" else "info", trial))

    # -- what may start ---------------------------------------------------------------------
    def _counted(
        self, before: int | None = None, trials: list[optuna.trial.FrozenTrial] | None = None
    ) -> int:
        """Trials toward the limit (numbered below ``before``, if given): see
        :func:`counted`."""
        if trials is None:
            import optuna

            states = tuple(optuna.trial.TrialState[name] for name in COUNTED_STATES)
            trials = self.study.get_trials(deepcopy=False, states=states)
        return counted(trials, before)

    def _can_launch(self, counting: bool = True) -> bool:
        """Whether another trial may start; without ``counting`` the trial count is left to
        :meth:`_launch_one`, which counts under the launch lock anyway."""
        if self.stop_reason:
            return False
        if (
            self.limits.timeout_s is not None
            and self.clock() - self.started > self.limits.timeout_s
        ):
            self.stop_reason = f"timeout of {self.limits.timeout_s:g} s reached"
            return False
        if self.limits.target is not None and (best := self._best()) is not None:
            maximize = self.plan.spec.objective.direction == "maximize"
            if (best >= self.limits.target) if maximize else (best <= self.limits.target):
                self.stop_reason = f"target {self.limits.target:g} reached ({best:.4g})"
                return False
        if len(self.runs) >= self.capacity:  # first: it needs no look at the study
            return False
        return not counting or self._counted() < self.limits.trials

    def _best(self) -> float | None:
        try:
            return float(self.study.best_value)
        except ValueError:
            return None

    def _launch(self) -> None:
        while self._can_launch(counting=False):
            if not self._launch_one():
                return
        self._queue_note()

    def _queue_note(self) -> None:
        """Say (once per change) how many trials wait for a provider slot, with an ETA."""
        cap = self.backend.capabilities.max_in_flight
        if not cap or len(self.runs) < self.capacity or self.stop_reason:
            return
        waiting = min(self.limits.trials - self._counted(), self.limits.parallel - self.capacity)
        if waiting <= 0 or waiting == self._queued:
            return
        self._queued = waiting
        eta = ""
        if self.durations:
            eta = f"; next start in ~{sum(self.durations) / len(self.durations) / 60:.1f} min"
        self._note(f"{waiting} trial(s) queued: {self.backend.name} allows {cap} at once{eta}")

    def _request(self, trial: optuna.Trial) -> TrainingRequest:
        hp = self.plan.space.hyperparameters(trial.params)
        meta = {"ftsweep_study": self.plan.study_name, "ftsweep_trial": str(trial.number)}
        return self.plan.request(hp, trial=trial.number, metadata=meta)

    def _cheapest(self) -> float | None:
        """The estimate of the cheapest trial the sweep can start (:meth:`SweepPlan.cheapest`)."""
        request = self.plan.request(self.plan.cheapest(), trial=-1)
        return self.backend.estimate_cost(request, self.plan.train)

    def _launch_one(self) -> bool:
        """Decide and ask as one step among all the study's workers (:mod:`.locks`): the
        trial count, the budget (spent + the estimates of every running trial) and the
        provider's job cap (the study's running jobs) are the study's, not this worker's."""
        self._blocked = False
        with self.launch_lock():
            trials = self.study.get_trials(deepcopy=False)
            self._share(trials)
            if self.budget.limit is not None:
                cheapest = self._cheapest()
                if cheapest is not None and not self.budget.allows(cheapest):
                    self._stop_for_budget(cheapest)
                    return False
            if self._counted(trials=trials) >= self.limits.trials:
                return False
            cap = self.backend.capabilities.max_in_flight
            if cap and _running_jobs(trials) >= cap:
                self._blocked = True  # other workers' jobs fill the provider's cap
                return False
            trial = self.study.ask(self.plan.space.distributions())
            # claimed at once: another worker must not take it for one a dead worker left
            claim = {TrialAttrs.WORKER: self.worker, TrialAttrs.HEARTBEAT: self.wall()}
            if self.budget.limit is not None and not self._commit(trial, claim):
                return False
            # decided under the lock, against the trials read under it: another worker's
            # trial of the same configuration has its intent written, so it is seen
            start = self._prepare(trial, trials)
            write(trial, {**claim, **start.intent})  # claim and intent: one transaction
        if not self.lock_exclusive and self._counted(before=trial.number) >= self.limits.trials:
            # a worker on another machine took the last place meanwhile
            trial.set_user_attr(TrialAttrs.NOT_STARTED, True)
            trial.set_user_attr(TrialAttrs.ERROR, "not started: the study reached its limit")
            self._tell(trial, "FAIL", None)
            return False
        return self._start(trial, start)

    def _prepare(
        self, trial: optuna.Trial, trials: list[optuna.trial.FrozenTrial] | None = None
    ) -> _Start:
        """What starting ``trial`` will do (its request, a twin that trains it already, the
        backend's refusal, the budget's), and the ledger's intent when it is to be trained;
        nothing is written. ``trials``: the study as read (else it is read)."""
        request = self._request(trial)
        twin = self.repeats.twin(request.config_hash(), trial.number, trials)
        if twin is not None:
            return _Start(request, twin=twin)
        try:
            self.backend.check(request)
            estimate = self.backend.estimate_cost(request, self.plan.train)
        except Exception as exc:
            return _Start(request, error=_reason(exc))
        if not self.budget.allows(estimate, excluding=trial.number):
            return _Start(request, estimate=estimate, refused=True)
        n = self.plan.train.n_examples
        pct = None
        if self.plan.space["batch_size"].kind != "fixed" and n:
            pct = round(100 * request.hyperparameters.batch_size / n, 4)
        intent = TrialRun.intent(
            request, self.backend.name, self.worker, self.wall(), estimate, pct
        )
        return _Start(request, estimate=estimate, pct=pct, intent=intent)

    def _start(self, trial: optuna.Trial, start: _Start | None = None) -> bool:
        """Start ``trial`` (asked, or adopted before its request was written): as
        :meth:`_prepare` decided, writing the intent unless ``start`` has written it."""
        self.changed = True
        written = start is not None
        start = start or self._prepare(trial)
        request = start.request
        if start.twin is not None:
            self.repeats.reuse(trial, request.config_hash(), start.twin, self._tell)
            return True
        run = TrialRun(trial, request, wall=self.wall, last_beat=self.clock())
        if start.error is not None:
            self._fail(run, start.error)
            return True
        if start.refused:
            self._refuse_for_budget(trial, start.estimate)
            return False
        if written:
            run.attrs.update(start.intent)
        else:
            run.set_attrs(start.intent)  # before the job exists
        if start.estimate is not None:
            self.budget.commit(trial.number, start.estimate)
        self.runs[trial.number] = run
        self.emit(TrialStarted(run, batch_size_pct=start.pct))
        self._submit(run)
        return True

    def _share(self, trials: list[optuna.trial.FrozenTrial]) -> None:
        """The study's spent dollars (every trial's reconciled cost) and committed ones
        (the estimate of every running trial, of any worker, until it finishes)."""
        spent = 0.0
        committed: dict[int, float] = {}
        for t in trials:
            attrs = t.user_attrs
            if TrialAttrs.COST in attrs:
                spent += float(attrs[TrialAttrs.COST])
            elif (
                t.state.name == "RUNNING"
                and TrialAttrs.ESTIMATE in attrs
                and TrialAttrs.SAME_AS not in attrs  # waits for a twin: trains nothing
            ):
                committed[t.number] = float(attrs[TrialAttrs.ESTIMATE])
        self.budget.spent = spent
        self.budget.committed = committed

    def _commit(self, trial: optuna.Trial, claim: dict[str, Any]) -> bool:
        """Under the launch lock: the new trial's estimate, added to its ``claim`` (recorded
        in the study, so every worker counts it); False (and the trial told FAIL, not
        started) when it does not fit."""
        try:
            estimate = self.backend.estimate_cost(self._request(trial), self.plan.train)
        except Exception:
            return True  # the trial fails in _start, with the reason
        if estimate is None:
            return True
        if not self.budget.allows(estimate):
            write(trial, claim)
            self._refuse_for_budget(trial, estimate)
            return False
        claim[TrialAttrs.ESTIMATE] = estimate
        self.budget.commit(trial.number, estimate)
        return True

    def _refuse_for_budget(self, trial: optuna.Trial, estimate: float | None) -> None:
        trial.set_user_attr(TrialAttrs.NOT_STARTED, True)
        trial.set_user_attr(TrialAttrs.ERROR, f"not started: {self.budget.refusal(estimate)}")
        self._tell(trial, "FAIL", None)
        self._stop_for_budget(estimate)

    def _wait_for_slot(self) -> None:
        """Nothing of this worker's runs and the provider's cap is full: wait a poll."""
        if self.clock() - self._adopted_at > ADOPT_EVERY_S:
            self._adopt()
        self.sleep(min(max(self.backend.poll_interval[0], 0.05), 5.0))

    def _stop_for_budget(self, estimate: float | None) -> None:
        self.stop_reason = self.budget.refusal(estimate)
        self._note(f"budget: {self.stop_reason}; no more trials are started", "warning")

    def _submit(self, run: TrialRun) -> None:
        """Submit (idempotently on the key); a busy provider puts the trial back in line."""
        try:
            handle = self.backend.submit(run.request)
        except STOP:
            raise  # the trial keeps its intent and no job: the next run submits it
        except ProviderBusyError as exc:
            wait = exc.retry_after or self.backend.poll_interval[1]
            run.phase, run.due = Phase.PENDING, self.clock() + wait
            self._note(
                f"{self.backend.name} is busy ({exc}); submitting again in {wait:.0f} s",
                trial=run.number,
            )
            return
        except Exception as exc:
            self._fail(run, f"submit failed: {_reason(exc)}", environmental=_environmental(exc))
            return
        self.environment_failures = 0
        run.submitted(handle, self.clock())
        run.interval = self.backend.poll_interval[0]
        run.due = self.clock()
        self.emit(TrialSubmitted(run, handle.job_id))

    # -- adopting trials whose owner died -----------------------------------------------------
    def _adopt(self) -> None:
        import optuna

        self._adopted_at = self.clock()
        running = self.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
        for frozen in running:
            if frozen.number in self.runs or frozen.number in self.repeats.waiting:
                continue
            attrs = frozen.user_attrs
            if TrialAttrs.WORKER not in attrs and _age_s(frozen) < STALE_AFTER_S:
                continue  # just asked by another worker, which has not claimed it yet
            alive = owner_alive(attrs.get(TrialAttrs.WORKER))
            beat = float(attrs.get(TrialAttrs.HEARTBEAT, 0.0))
            if alive or (alive is None and self.wall() - beat < STALE_AFTER_S):
                continue  # another live worker owns it
            trial = optuna.Trial(self.study, frozen._trial_id)
            if TrialAttrs.SAME_AS in attrs:
                self.repeats.adopt(trial, int(attrs[TrialAttrs.SAME_AS]))
                continue
            if TrialAttrs.REQUEST not in attrs:  # asked, but its request was never written
                if set(self.plan.space.distributions()) <= set(frozen.params):
                    self._start(trial)
                else:
                    trial.set_user_attr(TrialAttrs.ERROR, "interrupted before it started")
                    self._tell(trial, "FAIL", None)
                continue
            self._reattach(trial, frozen)

    def _reattach(self, trial: optuna.Trial, frozen: optuna.trial.FrozenTrial) -> None:
        attrs = frozen.user_attrs
        request = TrainingRequest.from_json(attrs[TrialAttrs.REQUEST])
        pruned = attrs.get(TrialAttrs.PRUNED_AT)
        run = TrialRun(
            trial,
            request,
            attrs=dict(attrs),
            reported=set(frozen.intermediate_values),
            pruned_at=int(pruned) if pruned is not None else None,
            cancel_pending=pruned is not None,
            wall=self.wall,
            last_beat=self.clock(),
        )
        self.changed = True
        run.claim(self.worker)
        if TrialAttrs.ESTIMATE in attrs:
            self.budget.commit(frozen.number, float(attrs[TrialAttrs.ESTIMATE]))
        self.runs[frozen.number] = run
        self.emit(
            TrialStarted(run, reattached=True, batch_size_pct=attrs.get(TrialAttrs.BATCH_PCT))
        )
        try:
            handle = self.backend.find(request.key)
        except STOP:
            raise
        except Exception as exc:
            self._fail(run, f"re-attach failed: {_reason(exc)}", _environmental(exc))
            return
        if handle is None:  # the process died before its submit went through
            self._submit(run)
            return
        run.submitted(handle, self.clock())  # polled from the start: every point comes again
        run.interval, run.due = self.backend.poll_interval[0], self.clock()
        self.emit(TrialSubmitted(run, handle.job_id))
        self._note(f"re-attached to job {handle.job_id}", trial=run.number)

    # -- polling ------------------------------------------------------------------------------
    def _service(self) -> None:
        now = self.clock()
        for run in list(self.runs.values()):
            if run.due > now:
                continue
            try:
                self._step(run)
            except (KeyboardInterrupt, *STOP):
                raise
            except Exception as exc:  # one trial's error stays in that trial
                self._fail(run, _reason(exc))

    def _step(self, run: TrialRun) -> None:
        if run.phase is Phase.PENDING:
            if sum(r.phase is not Phase.PENDING for r in self.runs.values()) < self.capacity:
                self._submit(run)
            else:
                run.due = self.clock() + self.backend.poll_interval[0]
            return
        if run.cancel_pending and run.cancel_due <= self.clock():
            self._cancel(run)
        self._poll(run)

    def _poll(self, run: TrialRun) -> None:
        assert run.handle is not None
        lo, hi = self.backend.poll_interval
        try:
            update = self.backend.poll(run.handle, run.cursor)
        except STOP:
            raise
        except BackendError as exc:
            run.poll_failures += 1
            if run.poll_failures % POLL_FAILURES_SHOWN == 1:
                self._note(f"poll failed ({exc}); retrying", "warning", run.number)
            run.interval = min(max(run.interval, lo) * 2, hi)
            run.due = self.clock() + run.interval
            return
        run.poll_failures = 0
        self._paused(run, update)
        run.update, run.cursor = update, update.cursor
        fresh = add_points(run.curves, update.points)
        if fresh:
            self.emit(Points(run, tuple(fresh)))
        if run.phase is Phase.SUBMITTED and update.status.value == "running":
            run.phase = Phase.RUNNING
        run.beat(self.clock(), HEARTBEAT_EVERY_S)
        self._epochs(run, update)
        if update.status.terminal:
            self._conclude(run, update)
            return
        run.interval = lo if fresh else min(run.interval * 1.5, hi)
        run.due = self.clock() + run.interval
        if run.cancel_pending:
            run.due = min(run.due, run.cancel_due)

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

    def _epochs(self, run: TrialRun, update: JobUpdate) -> None:
        """Count the epoch ends; report each new one's objective to the pruner."""
        metric = self.plan.spec.objective.metric
        counted = run.epochs_done
        for end in update.epoch_ends:
            if end.epoch <= run.epochs_done:
                continue
            run.epochs_done = end.epoch
            if run.pruned_at is not None or end.epoch in run.reported:
                continue
            value = objective_at(run.curves, end.step, metric)
            if value is None:
                continue
            run.report(value, end.epoch)  # staged: written with the trial's next write
            run.reported.add(end.epoch)
            if self._prunes:
                self._flush()  # the pruner compares with the other trials' values
            pruned = bool(run.trial.should_prune()) and not update.status.terminal
            if pruned:
                run.record_prune(end.epoch)  # written before the cancel is sent
            self.emit(EpochReported(run, end.epoch, end.step, metric, value, pruned))
            if pruned:
                self._cancel(run)
        if run.epochs_done != counted:
            run.record_epochs()

    def _cancel(self, run: TrialRun) -> None:
        """Cancel a pruned trial's job; a failure is retried with back-off, then given up."""
        assert run.handle is not None
        try:
            self.backend.cancel(run.handle)
        except STOP:
            raise
        except Exception as exc:
            run.cancel_attempts += 1
            if run.cancel_attempts >= CANCEL_ATTEMPTS:
                run.cancel_pending = False
                self._note(
                    f"could not cancel job {run.handle.job_id} after {run.cancel_attempts} "
                    f"tries ({_reason(exc)}): it may still run at {self.backend.name}; "
                    "cancel it there",
                    "warning",
                    run.number,
                )
                return
            delay = min(2.0**run.cancel_attempts, self.backend.poll_interval[1])
            run.cancel_due = self.clock() + delay
            run.due = min(run.due, run.cancel_due)
            self._note(
                f"cancel of job {run.handle.job_id} failed ({_reason(exc)}); "
                f"retrying in {delay:.0f} s",
                "warning",
                run.number,
            )
            return
        run.cancel_pending = False

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
        except Exception as exc:  # concluding this trial failed: it fails, the sweep goes on
            why = f"could not conclude the trial: {_reason(exc)}"
            reason = f"{error}; {why}" if error else why
            outcome = Outcome(
                "FAIL", None, Diagnosis("unknown"), cost, reason, {TrialAttrs.ERROR: reason}
            )
        self._record(run, outcome, update)

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
                self._note(f"cost unknown ({_reason(exc)})", "warning", run.number)
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
        """Outcome into the ledger, then the listeners, then the study: in that order."""
        self.runs.pop(run.number, None)
        self.changed = True
        run.phase = Phase.FINISHED
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
        self._tell(run.trial, outcome.state, outcome.value)
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
            self._note(f"earlier epochs not told: {_reason(exc)}", "warning", run.number)
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
                    f"job {run.handle.job_id} may still run ({_reason(exc)}); cancel it there",
                    "warning",
                    run.number,
                )
        try:
            self._conclude(run, run.update, reason)
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # the stores themselves failed: leave it for a re-attach
            self._note(f"could not record the failure ({_reason(exc)})", "warning", run.number)

    def _tell(self, trial: optuna.Trial, state: str, value: float | None) -> None:
        import optuna

        tell: Callable[..., Any] = self.study.tell
        try:  # what study.tell does, without reading back the trial it returns (unused)
            from optuna.study._tell import _tell_with_warning

            tell = functools.partial(_tell_with_warning, self.study)
        except ImportError:  # an Optuna without it: the public call
            pass
        try:
            if state == "COMPLETE":
                tell(trial, value)
            else:
                tell(trial, state=optuna.trial.TrialState[state])
        except (RuntimeError, ValueError) as exc:  # another worker finished it first
            self._note(f"not told: {exc}", "warning", trial.number)


@dataclass(frozen=True)
class _Start:
    """How a trial starts (:meth:`SweepLoop._prepare`): trained (its ``intent`` for the
    ledger), reusing a ``twin``, failed by the backend's ``error``, or ``refused`` by the
    budget."""

    request: TrainingRequest
    twin: optuna.trial.FrozenTrial | None = None
    error: str | None = None
    refused: bool = False
    estimate: float | None = None
    pct: float | None = None
    intent: dict[str, Any] = field(default_factory=dict)


def _running_jobs(trials: list[optuna.trial.FrozenTrial]) -> int:
    """The study's trials whose job may be at the provider: running, and neither waiting
    for a running twin nor refused before it started."""
    return sum(
        1
        for t in trials
        if t.state.name == "RUNNING"
        and TrialAttrs.SAME_AS not in t.user_attrs
        and TrialAttrs.NOT_STARTED not in t.user_attrs
    )


def _age_s(trial: optuna.trial.FrozenTrial) -> float:
    """Seconds since the trial was asked (Optuna's own clock: naive local time)."""
    import datetime

    started = trial.datetime_start
    return (datetime.datetime.now() - started).total_seconds() if started else float("inf")


def _environmental(exc: BaseException) -> bool:
    """A provider or machine failure (worth another try), not a bad configuration."""
    return isinstance(exc, BackendError) and not isinstance(exc, UsageError)


def _reason(exc: BaseException) -> str:
    """A one-line reason: a known error's message, else ``internal error: Type: message``."""
    text = str(exc).splitlines()[0] if str(exc) else ""
    if isinstance(exc, OrchestratorError):
        return text or type(exc).__name__
    return f"internal error: {type(exc).__name__}: {text}"

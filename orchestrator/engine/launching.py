"""The sweep loop's third layer: what may start, and starting it.

A trial starts when the loop has a free place, no stop (timeout, target, budget) and the
study's trial count (:func:`~.limits.counted`) is under the limit. The decision and the ask
are one step among all the study's workers, under the launch lock (:mod:`.locks`): the trial
count, the budget (spent + the estimates of every running trial) and the provider's job cap
(the study's running jobs) are the study's, not this worker's. A trial then reuses a twin's
result (:mod:`.repeats`), fails (the backend refuses its request), is refused by the budget,
or has its intent written and its job submitted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from orchestrator.backends.base import TrainingRequest
from orchestrator.core.attrs import TrialAttrs
from orchestrator.engine.events import TrialStarted
from orchestrator.engine.limits import COUNTED_STATES, counted, running_jobs
from orchestrator.engine.outcome import failure_reason
from orchestrator.engine.polling import Polling
from orchestrator.engine.repeats import Repeats
from orchestrator.engine.trial import TrialRun
from orchestrator.results.front import primary_value
from orchestrator.results.table import best_trial
from orchestrator.stores.ledger import write
from orchestrator.stores.optuna_internals import Params, ask

if TYPE_CHECKING:
    import optuna

__all__ = ["Launching"]


class Launching(Polling):
    """Decides what starts and starts it (the third layer of
    :class:`~orchestrator.engine.loop.SweepLoop`)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.repeats = Repeats(self.study, self.emit, self.worker, self.clock, self.wall)
        self._queued = 0
        self._blocked = False  # the last launch found the provider's cap full

    def _counted(
        self, before: int | None = None, trials: list[optuna.trial.FrozenTrial] | None = None
    ) -> int:
        """Trials toward the limit (numbered below ``before``, if given): see
        :func:`~.limits.counted`."""
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
        """The best (feasible) primary objective so far."""
        if len(self.study.directions) > 1:
            best = best_trial(self.study)
            return primary_value(best) if best is not None else None
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
        beyond = self.limits.parallel - self.capacity  # `parallel` the provider's cap holds back
        if beyond <= 0:
            return  # nothing can wait for it: the study is not read (this runs every poll)
        waiting = min(self.limits.trials - self._counted(), beyond)
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
            if cap and running_jobs(trials) >= cap:
                self._blocked = True  # other workers' jobs fill the provider's cap
                return False
            # its parameters are written with its claim (one transaction, not one each)
            trial, params = ask(self.study, self.plan.space.distributions())
            # claimed at once: another worker must not take it for one a dead worker left
            claim = {TrialAttrs.WORKER: self.worker, TrialAttrs.HEARTBEAT: self.wall()}
            if self.budget.limit is not None and not self._commit(trial, claim, params):
                return False
            # decided under the lock, against the trials read under it: another worker's
            # trial of the same configuration has its intent written, so it is seen
            start = self._prepare(trial, trials)
            write(trial, {**claim, **start.intent}, params=params)  # one transaction
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
            return _Start(request, error=failure_reason(exc))
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
            run.written(start.intent)
        else:
            run.set_attrs(start.intent)  # before the job exists
        if start.estimate is not None:
            self.budget.commit(trial.number, start.estimate)
        self.runs[trial.number] = run
        run.stage(self.emit(TrialStarted(run, batch_size_pct=start.pct)) or {})
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

    def _commit(self, trial: optuna.Trial, claim: dict[str, Any], params: Params) -> bool:
        """Under the launch lock: the new trial's estimate, added to its ``claim`` (recorded
        in the study, so every worker counts it); False (and the trial told FAIL, not
        started, its ``params`` written with its claim) when it does not fit."""
        try:
            estimate = self.backend.estimate_cost(self._request(trial), self.plan.train)
        except Exception:
            return True  # the trial fails in _start, with the reason
        if estimate is None:
            return True
        if not self.budget.allows(estimate):
            write(trial, claim, params=params)
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

    def _stop_for_budget(self, estimate: float | None) -> None:
        self.stop_reason = self.budget.refusal(estimate)
        self._note(f"budget: {self.stop_reason}; no more trials are started", "warning")


@dataclass(frozen=True)
class _Start:
    """How a trial starts (:meth:`Launching._prepare`): trained (its ``intent`` for the
    ledger), reusing a ``twin``, failed by the backend's ``error``, or ``refused`` by the
    budget."""

    request: TrainingRequest
    twin: optuna.trial.FrozenTrial | None = None
    error: str | None = None
    refused: bool = False
    estimate: float | None = None
    pct: float | None = None
    intent: dict[str, Any] = field(default_factory=dict)

"""The sweep loop: Optuna ask/tell around fine-tuning jobs, single-threaded and event-driven.

Many jobs can be in flight (``parallel``, capped by the backend's ``max_concurrent_jobs``); each
is polled with backoff. New metric points go to MLflow in batches; at every epoch end the
objective so far is reported to the pruner, and a pruned trial's job is cancelled. A finished
job is diagnosed, its cost reconciled and its value told to the study. Identical resolved
configurations are never trained twice in a study: a repeat reuses the earlier result (or waits
for the running one). On start, trials left RUNNING by a dead process are re-attached to their
jobs through the ledger (:mod:`.ledger`) instead of being trained again.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from orchestrator.backends.base import (
    Backend,
    JobUpdate,
    MetricPoint,
    TrainingRequest,
)
from orchestrator.engine.budget import Budget
from orchestrator.engine.ledger import (
    A,
    owner_alive,
    request_from_attrs,
    request_to_attrs,
    worker_id,
)
from orchestrator.engine.outcome import Outcomes
from orchestrator.engine.slot import Slot, at, short, state
from orchestrator.errors import BackendError, OrchestratorError, ProviderBusyError
from orchestrator.plan import SweepPlan
from orchestrator.tracking import Tracker

if TYPE_CHECKING:
    import optuna

__all__ = ["Limits", "SweepLoop"]

HEARTBEAT_EVERY_S = 10.0
STALE_AFTER_S = 120.0


@dataclass(frozen=True)
class Limits:
    trials: int
    parallel: int
    timeout_s: float | None = None
    target: float | None = None


class SweepLoop:
    """Runs one sweep's trials until its limits are reached."""

    def __init__(
        self,
        plan: SweepPlan,
        backend: Backend,
        study: optuna.Study,
        tracker: Tracker,
        parent_run: str,
        limits: Limits,
        budget: Budget,
        *,
        say: Callable[[str], None] = lambda _: None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.plan, self.backend, self.study, self.tracker = plan, backend, study, tracker
        self.parent_run, self.limits, self.budget = parent_run, limits, budget
        self.say, self.clock, self.sleep = say, clock, sleep
        self.worker = worker_id()
        self.slots: dict[int, Slot] = {}
        #: trials whose submit the provider refused for now: (trial, request, run, retry at)
        self.pending: dict[int, tuple[optuna.Trial, TrainingRequest, str, float]] = {}
        self.followers: dict[int, int] = {}  # trial number -> the trial it repeats
        self.started = clock()
        self.stop_reason: str | None = None
        cap = backend.max_concurrent_jobs
        self.capacity = min(limits.parallel, cap) if cap else limits.parallel
        if cap and cap < limits.parallel:
            say(f"{backend.name} runs at most {cap} jobs at once: the other trials queue")
        self.outcomes = Outcomes(plan, study, tracker, budget, say)
        self._queued = 0
        self._durations: list[float] = []
        self._started_at: dict[int, float] = {}

    # -- the loop ---------------------------------------------------------------------------
    def run(self) -> None:
        self._reattach()
        while True:
            self._retry_pending()
            self._launch()
            self._settle_followers()
            if not self.slots and not self.followers and not self.pending:
                if self._can_launch():
                    continue
                break
            self._poll_due()
            due = [s.next_poll for s in self.slots.values()]
            due += [p[3] for p in self.pending.values()]
            wait = (
                min(due) if due else self.clock() + self.backend.poll_interval[0]
            ) - self.clock()
            if wait > 0:
                self.sleep(min(wait, 5.0))

    def _counts(self) -> int:
        import optuna

        states = (
            optuna.trial.TrialState.COMPLETE,
            optuna.trial.TrialState.PRUNED,
            optuna.trial.TrialState.FAIL,
            optuna.trial.TrialState.RUNNING,
        )
        return len(self.study.get_trials(deepcopy=False, states=states))

    def _can_launch(self) -> bool:
        if self.stop_reason:
            return False
        if (
            self.limits.timeout_s is not None
            and self.clock() - self.started > self.limits.timeout_s
        ):
            self.stop_reason = f"timeout of {self.limits.timeout_s:g} s reached"
            return False
        best = self._best_value() if self.limits.target is not None else None
        if self.limits.target is not None and best is not None:
            hit = best <= self.limits.target
            if self.plan.spec.objective.direction == "maximize":
                hit = best >= self.limits.target
            if hit:
                self.stop_reason = f"target {self.limits.target:g} reached ({best:.4g})"
                return False
        if self._counts() >= self.limits.trials:
            return False
        return len(self.slots) + len(self.pending) < self.capacity

    def _best_value(self) -> float | None:
        try:
            return float(self.study.best_value)
        except ValueError:
            return None

    # -- launching --------------------------------------------------------------------------
    def _launch(self) -> None:
        while self._can_launch():
            if not self._launch_one():
                return
        self._queue_note()

    def _queue_note(self) -> None:
        """Say (once per change) how many trials wait for a provider slot, with an ETA."""
        cap = self.backend.max_concurrent_jobs
        if not cap or len(self.slots) < self.capacity or self.stop_reason:
            return
        waiting = min(self.limits.trials - self._counts(), self.limits.parallel - self.capacity)
        if waiting <= 0 or waiting == self._queued:
            return
        self._queued = waiting
        done = [d for d in self._durations if d > 0]
        eta = ""
        if done:
            per_trial = sum(done) / len(done)
            eta = f"; ETA of the next start ~{per_trial / 60:.1f} min"
        self.say(f"{waiting} trial(s) queued: {self.backend.name} allows {cap} job(s) at once{eta}")

    def _cheapest(self) -> float | None:
        """The estimate of the cheapest trial the space allows (fewest epochs)."""
        space = self.plan.space
        dim = space["n_epochs"]
        fewest = dim.value if dim.kind == "fixed" else min(dim.choices or (dim.low,))
        low = {
            d.name: (d.low if d.low is not None else min(d.choices or (d.value,)))
            for d in space.dimensions
            if d.kind != "fixed"
        }
        hp = space.hyperparameters({**low, "n_epochs": fewest})
        request = TrainingRequest.make(
            study=self.plan.spec.name,
            trial=-1,
            model=self.plan.spec.backend.model,
            hyperparameters=hp,
            train_file=self.plan.spec.data.train,
            valid_file=self.plan.spec.data.valid,
            seed=self.plan.spec.seed,
        )
        return self.backend.estimate_cost(request)

    def _launch_one(self) -> bool:
        plan, spec = self.plan, self.plan.spec
        cheapest = self._cheapest() if self.budget.limit is not None else None
        if cheapest is not None and not self.budget.allows(cheapest):
            self.stop_reason = self.budget.refusal(cheapest)
            self.say(f"budget: {self.stop_reason}; no more trials are started")
            return False
        trial = self.study.ask(plan.space.distributions())
        if trial.number >= self.limits.trials:  # another worker took the last slot meanwhile
            trial.set_user_attr(A.ERROR, "not started: the study reached its trial limit")
            self.study.tell(trial, state=state("FAIL"))
            return False
        hp = plan.space.hyperparameters(trial.params)
        request = TrainingRequest.make(
            study=spec.name,
            trial=trial.number,
            model=spec.backend.model,
            hyperparameters=hp,
            train_file=spec.data.train,
            valid_file=spec.data.valid,
            seed=spec.seed,
            metadata={"ftsweep_study": spec.name, "ftsweep_trial": str(trial.number)},
        )
        config = self._config_key(request)
        twin = self._twin(config, trial.number)
        if twin is not None:
            return self._repeat(trial, twin)
        try:
            self.backend.check(request)
        except OrchestratorError as exc:
            self._fail(trial, str(exc))
            return True
        estimate = self.backend.estimate_cost(request)
        if not self.budget.allows(estimate):
            self.stop_reason = self.budget.refusal(estimate)
            trial.set_user_attr(A.ERROR, f"not started: {self.stop_reason}")
            self.study.tell(trial, state=state("FAIL"))
            self.say(f"budget: {self.stop_reason}; no more trials are started")
            return False
        # write-ahead: the trial knows its request before the job exists
        request_to_attrs(trial, request, self.backend.name)
        trial.set_user_attr(A.CONFIG, config)
        trial.set_user_attr(A.WORKER, self.worker)
        trial.set_user_attr(A.HEARTBEAT, time.time())
        if estimate is not None:
            trial.set_user_attr(A.ESTIMATE, estimate)
            self.budget.commit(trial.number, estimate)
        dim = plan.space["batch_size"]
        if plan.train.n_examples:
            trial.set_user_attr(A.BATCH_PCT, round(100 * hp.batch_size / plan.train.n_examples, 4))
        run_id = self.tracker.child_run(
            self.parent_run,
            f"trial-{trial.number}",
            {
                "ftsweep.trial": str(trial.number),
                "ftsweep.state": "RUNNING",
                "ftsweep.backend": self.backend.name,
            },
        )
        trial.set_user_attr(A.RUN, run_id)
        params: dict[str, Any] = {**hp.as_dict(), "model": spec.backend.model, "seed": spec.seed}
        if dim.kind != "fixed" and plan.train.n_examples:
            params["batch_size_pct"] = trial.user_attrs.get(A.BATCH_PCT)
        self.tracker.log(run_id, params=params)
        self._submit(trial, request, run_id)
        return True

    def _submit(self, trial: optuna.Trial, request: TrainingRequest, run_id: str) -> None:
        """Submit (idempotently); a busy provider puts the trial back in line, not FAIL."""
        self.pending.pop(trial.number, None)
        try:
            handle = self.backend.submit(request)
        except ProviderBusyError as exc:
            wait = exc.retry_after or self.backend.poll_interval[1]
            self.pending[trial.number] = (trial, request, run_id, self.clock() + wait)
            self.say(
                f"trial {trial.number}: {self.backend.name} is busy ({exc}); "
                f"submitting again in {wait:.0f} s"
            )
            return
        except OrchestratorError as exc:
            self._fail(trial, f"submit failed: {exc}", run_id)
            self.budget.release(trial.number)
            return
        trial.set_user_attr(A.JOB, handle.job_id)
        self._started_at[trial.number] = self.clock()
        self.tracker.log(run_id, tags={"ftsweep.job_id": handle.job_id})
        self.slots[trial.number] = Slot(
            trial,
            request,
            handle,
            run_id,
            interval=self.backend.poll_interval[0],
            next_poll=self.clock(),
            last_beat=self.clock(),
        )
        hp = request.hyperparameters.as_dict()
        self.say(
            f"trial {trial.number} started ({self.backend.name} job {handle.job_id}): "
            + ", ".join(f"{k}={short(v)}" for k, v in hp.items())
        )

    def _retry_pending(self) -> None:
        now = self.clock()
        for trial, request, run_id, due in list(self.pending.values()):
            if due <= now and len(self.slots) < self.capacity:
                self._submit(trial, request, run_id)

    def _config_key(self, request: TrainingRequest) -> str:
        """What makes two trials the same training: the request and the backend's options."""
        import hashlib
        import json

        options = json.dumps(self.plan.spec.backend.options, sort_keys=True, default=str)
        return hashlib.sha256(f"{request.config_hash()}|{options}".encode()).hexdigest()[:16]

    def _twin(self, config_hash: str, number: int) -> optuna.trial.FrozenTrial | None:
        for t in self.study.get_trials(deepcopy=False):
            if t.number != number and t.user_attrs.get(A.CONFIG) == config_hash:
                return t
        return None

    def _repeat(self, trial: optuna.Trial, twin: optuna.trial.FrozenTrial) -> bool:
        """A configuration the study has already trained (or is training): reuse its result."""
        trial.set_user_attr(A.CONFIG, twin.user_attrs.get(A.CONFIG))
        trial.set_user_attr(A.REUSED, twin.number)
        state = twin.state.name
        if state == "RUNNING":
            trial.set_user_attr(A.SAME_AS, twin.number)
            self.followers[trial.number] = twin.number
            self.say(f"trial {trial.number} repeats trial {twin.number}'s configuration: waiting")
            return True
        self._copy_outcome(trial.number, twin)
        self.say(f"trial {trial.number} repeats trial {twin.number}: result reused, not retrained")
        return True

    def _copy_outcome(self, number: int, twin: optuna.trial.FrozenTrial) -> None:
        storage, study_id = self.study._storage, self.study._study_id
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, number)
        for key in (A.DIAGNOSIS, A.RECOMMENDATION, A.BEST_EPOCH):
            if key in twin.user_attrs:
                storage.set_trial_user_attr(trial_id, key, twin.user_attrs[key])
        if twin.state.name == "COMPLETE":
            self.study.tell(number, twin.value)
        elif twin.state.name == "PRUNED":
            self.study.tell(number, state=state("PRUNED"))
        else:
            self.study.tell(number, state=state("FAIL"))

    def _settle_followers(self) -> None:
        for number, leader in list(self.followers.items()):
            twin = self.study.get_trials(deepcopy=False)[leader]
            if twin.state.name != "RUNNING":
                self._copy_outcome(number, twin)
                del self.followers[number]

    # -- re-attach --------------------------------------------------------------------------
    def _reattach(self) -> None:
        import optuna

        running = self.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
        for frozen in running:
            attrs = frozen.user_attrs
            alive = owner_alive(attrs.get(A.WORKER))
            beat = float(attrs.get(A.HEARTBEAT, 0.0))
            if alive or (alive is None and time.time() - beat < STALE_AFTER_S):
                continue  # another live worker owns it
            trial = optuna.Trial(self.study, frozen._trial_id)
            if A.SAME_AS in attrs:
                self.followers[frozen.number] = int(attrs[A.SAME_AS])
                continue
            if A.REQUEST not in attrs:
                self.study.tell(frozen.number, state=state("FAIL"))
                continue
            request = request_from_attrs(attrs)
            run_id = attrs.get(A.RUN) or self.tracker.child_run(
                self.parent_run, f"trial-{frozen.number}", {"ftsweep.trial": str(frozen.number)}
            )
            trial.set_user_attr(A.WORKER, self.worker)
            handle = self.backend.find(request.key)
            if handle is None:  # the process died before its submit went through
                trial.set_user_attr(A.RUN, run_id)
                self._submit(trial, request, run_id)
                continue
            trial.set_user_attr(A.JOB, handle.job_id)
            trial.set_user_attr(A.RUN, run_id)
            slot = Slot(
                trial,
                request,
                handle,
                run_id,
                cursor=attrs.get(A.CURSOR),
                epochs=int(attrs.get(A.EPOCHS, 0)),
                interval=self.backend.poll_interval[0],
                next_poll=self.clock(),
                last_beat=self.clock(),
            )
            # points logged after the last saved cursor must not be logged twice
            from orchestrator.backends.base import METRIC_NAMES

            slot.curves = self.tracker.history(run_id, METRIC_NAMES)
            slot.skip_until = {k: v[-1][0] for k, v in slot.curves.items() if v}
            if A.ESTIMATE in attrs:
                self.budget.commit(frozen.number, float(attrs[A.ESTIMATE]))
            self.slots[frozen.number] = slot
            self.say(f"trial {frozen.number}: re-attached to job {handle.job_id}")

    # -- polling ----------------------------------------------------------------------------
    def _poll_due(self) -> None:
        now = self.clock()
        for slot in list(self.slots.values()):
            if slot.next_poll <= now:
                self._poll(slot)

    def _poll(self, slot: Slot) -> None:
        try:
            update = self.backend.poll(slot.handle, slot.cursor)
        except BackendError as exc:
            self.say(f"trial {slot.number}: poll failed ({exc}); retrying")
            slot.interval = min(slot.interval * 2, self.backend.poll_interval[1])
            slot.next_poll = self.clock() + slot.interval
            return
        slot.update = update
        fresh = [p for p in update.points if p.step > slot.skip_until.get(p.name, -1)]
        if fresh:
            self.tracker.log_points(slot.run_id, fresh)
            for p in fresh:
                slot.curves.setdefault(p.name, []).append((p.step, p.value))
        if update.cursor != slot.cursor:  # a storage write only when there is news
            slot.cursor = update.cursor
            slot.trial.set_user_attr(A.CURSOR, update.cursor)
        if self.clock() - slot.last_beat > HEARTBEAT_EVERY_S:
            slot.trial.set_user_attr(A.HEARTBEAT, time.time())
            slot.last_beat = self.clock()
        if self._report_epochs(slot, fresh):
            return
        if update.status.terminal:
            self._finish(slot, update)
            return
        lo, hi = self.backend.poll_interval
        slot.interval = lo if fresh else min(slot.interval * 1.5, hi)
        slot.next_poll = self.clock() + slot.interval

    def _report_epochs(self, slot: Slot, fresh: list[MetricPoint]) -> bool:
        """Report the objective at each new epoch end; cancel when pruned (then True)."""
        metric = self.plan.spec.objective.metric
        for p in fresh:
            if p.name != "full_valid_loss":
                continue
            slot.epochs += 1
            slot.trial.set_user_attr(A.EPOCHS, slot.epochs)
            value = at(slot.curves, p.step, *self.outcomes.objective_names())
            if value is None or slot.pruned:
                continue
            slot.trial.report(value, slot.epochs)
            self.say(f"trial {slot.number} epoch {slot.epochs}: {metric}={value:.4f}")
            if slot.trial.should_prune():
                slot.pruned = True
                self.backend.cancel(slot.handle)
                self.say(f"trial {slot.number} pruned at epoch {slot.epochs}: job cancelled")
                slot.next_poll = self.clock()
                return True
        return False

    # -- finishing --------------------------------------------------------------------------
    def _finish(self, slot: Slot, update: JobUpdate) -> None:
        del self.slots[slot.number]
        if slot.number in self._started_at:
            self._durations.append(self.clock() - self._started_at.pop(slot.number))
        self.budget.release(slot.number)
        self.outcomes.record(slot, update)

    def _fail(self, trial: optuna.Trial, reason: str, run_id: str | None = None) -> None:
        trial.set_user_attr(A.ERROR, reason)
        self.study.tell(trial, state=state("FAIL"))
        if run_id:
            self.tracker.log(run_id, tags={"ftsweep.state": "FAIL", "ftsweep.error": reason})
            self.tracker.finish(run_id, "FAILED")
        self.say(f"trial {trial.number} failed: {reason}")

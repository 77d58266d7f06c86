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

The loop is built in layers, one responsibility a module (:mod:`.finishing`): the end of a
trial (:class:`~.finishing.Concluding`), submitting and polling (:class:`~.polling.Polling`),
what may start (:class:`~.launching.Launching`), and here the loop itself and adoption.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

from orchestrator.core.attrs import TrialAttrs
from orchestrator.engine.events import TrialStarted, TrialSubmitted
from orchestrator.engine.finishing import STOP
from orchestrator.engine.launching import Launching
from orchestrator.engine.limits import Limits, counted
from orchestrator.engine.outcome import environmental, failure_reason
from orchestrator.engine.polling import HEARTBEAT_EVERY_S
from orchestrator.engine.trial import TrialRun
from orchestrator.stores.ledger import owner_alive, write
from orchestrator.stores.optuna_internals import trial_id

if TYPE_CHECKING:
    import optuna

__all__ = [
    "ADOPT_EVERY_S",
    "HEARTBEAT_EVERY_S",
    "STALE_AFTER_S",
    "STOP",
    "Limits",
    "SweepLoop",
    "counted",
]

STALE_AFTER_S = 120.0
ADOPT_EVERY_S = 60.0


class SweepLoop(Launching):
    """Runs one sweep's trials until its limits are reached."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self._adopted_at = self.clock()

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

    def _wait_for_slot(self) -> None:
        """Nothing of this worker's runs and the provider's cap is full: wait a poll."""
        if self.clock() - self._adopted_at > ADOPT_EVERY_S:
            self._adopt()
        self.sleep(min(max(self.backend.poll_interval[0], 0.05), 5.0))

    # -- adopting trials whose owner died -----------------------------------------------------
    def _adopt(self) -> None:
        import optuna

        self._adopted_at = self.clock()
        running = self.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
        for frozen in running:
            if frozen.number in self.runs or frozen.number in self.repeats.waiting:
                continue
            attrs = frozen.user_attrs
            if (
                TrialAttrs.WORKER not in attrs
                and _age_s(frozen) < STALE_AFTER_S
                and not self._claim_orphan(frozen)
            ):
                continue  # just asked by another worker, which has not claimed it yet
            alive = owner_alive(attrs.get(TrialAttrs.WORKER))
            beat = float(attrs.get(TrialAttrs.HEARTBEAT, 0.0))
            if alive or (alive is None and self.wall() - beat < STALE_AFTER_S):
                continue  # another live worker owns it
            trial = optuna.Trial(self.study, trial_id(frozen))
            if TrialAttrs.SAME_AS in attrs:
                self.repeats.adopt(trial, int(attrs[TrialAttrs.SAME_AS]))
                continue
            if TrialAttrs.REQUEST not in attrs:  # asked, but its request was never written
                if set(self.plan.space.distributions()) <= set(frozen.params):
                    self._start(trial)
                else:  # no job, no cost: it does not count toward the limit
                    trial.set_user_attr(TrialAttrs.NOT_STARTED, True)
                    trial.set_user_attr(TrialAttrs.ERROR, "interrupted before it started")
                    self._tell(trial, "FAIL", None)
                continue
            self._reattach(trial, frozen)

    def _claim_orphan(self, frozen: optuna.trial.FrozenTrial) -> bool:
        """Claim ``frozen``, asked but unclaimed, if a worker died between its ask and its
        claim: every worker asks and claims in one step under the launch lock, so where that
        lock excludes every worker (:func:`~.locks.exclusive`), a trial still unclaimed while
        this worker holds it will never be claimed; it is claimed here under the lock, so no
        other worker adopts it too. Elsewhere (False) it waits until it is
        :data:`STALE_AFTER_S` old."""
        if not self.lock_exclusive:
            return False
        import optuna

        with self.launch_lock():
            running = self.study.get_trials(
                deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)
            )
            now = next((t for t in running if t.number == frozen.number), None)
            if now is None or TrialAttrs.WORKER in now.user_attrs:
                return False
            trial = optuna.Trial(self.study, trial_id(now))
            write(trial, {TrialAttrs.WORKER: self.worker, TrialAttrs.HEARTBEAT: self.wall()})
        return True

    def _reattach(self, trial: optuna.Trial, frozen: optuna.trial.FrozenTrial) -> None:
        attrs = frozen.user_attrs
        run = TrialRun.reattached(trial, frozen, self.wall, self.clock())
        self.changed = True
        run.claim(self.worker)
        if TrialAttrs.ESTIMATE in attrs:
            self.budget.commit(frozen.number, float(attrs[TrialAttrs.ESTIMATE]))
        self.runs[frozen.number] = run
        pct = attrs.get(TrialAttrs.BATCH_PCT)
        run.stage(self.emit(TrialStarted(run, reattached=True, batch_size_pct=pct)) or {})
        try:
            handle = self.backend.find(run.request.key)
        except STOP:
            raise
        except Exception as exc:
            self._fail(run, f"re-attach failed: {failure_reason(exc)}", environmental(exc))
            return
        if handle is None:  # the process died before its submit went through
            self._submit(run)
            return
        # polled from the start: every point comes again
        run.submitted(handle, self.clock(), self.backend.poll_interval[0])
        self.emit(TrialSubmitted(run, handle.job_id))
        self._note(f"re-attached to job {handle.job_id}", trial=run.number)


def _age_s(trial: optuna.trial.FrozenTrial) -> float:
    """Seconds since the trial was asked (Optuna's own clock: naive local time)."""
    import datetime

    started = trial.datetime_start
    return (datetime.datetime.now() - started).total_seconds() if started else float("inf")

"""The sweep loop's second layer: submitting a trial's job and servicing it until it ends.

Each due :class:`~.trial.TrialRun`: submit it (again, after a busy provider), retry a cancel,
or poll it; a poll hands the new points to the listeners, reports each new epoch end's
objective to the pruner (a pruned job is cancelled, the cancel retried with back-off) and
concludes the trial when the job has ended (:class:`~.finishing.Concluding`).
"""

from __future__ import annotations

from orchestrator.backends.base import JobUpdate
from orchestrator.core.attrs import TrialAttrs
from orchestrator.core.errors import BackendError, ProviderBusyError
from orchestrator.engine.curves import add_points
from orchestrator.engine.events import EpochReported, Points, TrialSubmitted
from orchestrator.engine.finishing import STOP, Concluding
from orchestrator.engine.objectives import projected, prune_several
from orchestrator.engine.outcome import environmental, failure_reason, objective_at
from orchestrator.engine.trial import Phase, TrialRun

__all__ = ["CANCEL_ATTEMPTS", "HEARTBEAT_EVERY_S", "POLL_FAILURES_SHOWN", "Polling"]

HEARTBEAT_EVERY_S = 10.0
CANCEL_ATTEMPTS = 6
POLL_FAILURES_SHOWN = 10  # say so again after this many failed polls in a row


class Polling(Concluding):
    """Submits trials' jobs and services them (the second layer of
    :class:`~orchestrator.engine.loop.SweepLoop`)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        cap = self.backend.capabilities.max_in_flight
        #: how many of this worker's jobs may be at the provider at once (the rest queue)
        self.capacity = min(self.limits.parallel, cap) if cap else self.limits.parallel
        if cap and cap < self.limits.parallel:
            self._note(f"{self.backend.name} runs at most {cap} job(s) at once: the rest queue")
        import optuna

        self._prunes = not isinstance(self.study.pruner, optuna.pruners.NopPruner)

    def _submit(self, run: TrialRun) -> None:
        """Submit (idempotently on the key); a busy provider puts the trial back in line."""
        try:
            handle = self.backend.submit(run.request)
        except STOP:
            raise  # the trial keeps its intent and no job: the next run submits it
        except ProviderBusyError as exc:
            wait = exc.retry_after or self.backend.poll_interval[1]
            run.requeue(self.clock() + wait)
            self._note(
                f"{self.backend.name} is busy ({exc}); submitting again in {wait:.0f} s",
                trial=run.number,
            )
            return
        except Exception as exc:
            self._fail(
                run, f"submit failed: {failure_reason(exc)}", environmental=environmental(exc)
            )
            return
        self.environment_failures = 0
        run.submitted(handle, self.clock(), self.backend.poll_interval[0])
        self.emit(TrialSubmitted(run, handle.job_id))

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
                self._fail(run, failure_reason(exc))

    def _step(self, run: TrialRun) -> None:
        if run.phase is Phase.PENDING:
            if sum(r.phase is not Phase.PENDING for r in self.runs.values()) < self.capacity:
                self._submit(run)
            else:
                run.requeue(self.clock() + self.backend.poll_interval[0])
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
            failures = run.poll_failed(self.clock(), lo, hi)
            if failures % POLL_FAILURES_SHOWN == 1:
                self._note(f"poll failed ({exc}); retrying", "warning", run.number)
            return
        self._paused(run, update)
        run.polled(update)
        fresh = add_points(run.curves, update.points)
        if fresh:
            self.emit(Points(run, tuple(fresh)))
        run.beat(self.clock(), HEARTBEAT_EVERY_S)
        self._epochs(run, update)
        if update.status.terminal:
            self._conclude(run, update)
            return
        run.next_poll(self.clock(), bool(fresh), lo, hi)

    def _epochs(self, run: TrialRun, update: JobUpdate) -> None:
        """Count the epoch ends; report each new one's objective to the pruner."""
        metric = self.plan.spec.objective.metric
        counted = run.epochs_done
        for end in update.epoch_ends:
            if end.epoch <= run.epochs_done:
                continue
            run.epoch_ended(end.epoch)
            if run.pruned_at is not None or end.epoch in run.reported:
                continue
            value = objective_at(run.curves, end.step, metric)
            if value is None:
                continue
            if self.plan.spec.multi_objective:
                run.report_aside(value, end.epoch)
            else:
                run.report(value, end.epoch)  # staged: written with the trial's next write
            if self._prunes:
                self._flush()  # the pruner compares with the other trials' values
            pruned = self._should_prune(run, end.epoch, end.step, value)
            pruned = pruned and not update.status.terminal
            if pruned:
                run.record_prune(end.epoch)  # written before the cancel is sent
            self.emit(EpochReported(run, end.epoch, end.step, metric, value, pruned))
            if pruned:
                self._cancel(run)
        if run.epochs_done != counted:
            run.record_epochs()

    def _should_prune(self, run: TrialRun, epoch: int, step: int, value: float) -> bool:
        """The pruner's verdict; with several objectives the engine's own rule
        (:func:`~.objectives.prune_several`), which keeps a trial that could land on the
        front."""
        if not self._prunes:
            return False
        spec = self.plan.spec
        if not spec.multi_objective:
            return bool(run.trial.should_prune())
        hp = run.request.hyperparameters
        estimate = run.attrs.get(TrialAttrs.ESTIMATE)
        elapsed = self.clock() - run.started_at if run.handle is not None else None
        mine = projected(
            spec,
            run.curves,
            step,
            epoch,
            hp.n_epochs,
            float(estimate) if isinstance(estimate, int | float) else None,
            elapsed,
        )
        others = [mine.get(o.metric) for o in spec.objective_list[1:]]
        verdict = prune_several(
            self.study,
            self.study.pruner,
            run.number,
            epoch,
            value,
            others,
            [o.direction for o in spec.objective_list],
        )
        if verdict.pruner_says and not verdict.prune:
            shown = ", ".join(
                f"{o.metric}={v:.4g}"
                for o, v in zip(spec.objective_list[1:], others, strict=True)
                if v is not None
            )
            beaten = ", ".join(f"#{n}" for n in verdict.beaten_by) or "none"
            self._note(
                f"epoch {epoch}: the pruner would stop it, kept: it could still land on the "
                f"Pareto front (projected {shown}; better on the primary: {beaten})",
                trial=run.number,
            )
        return verdict.prune

    def _cancel(self, run: TrialRun) -> None:
        """Cancel a pruned trial's job; a failure is retried with back-off, then given up."""
        assert run.handle is not None
        try:
            self.backend.cancel(run.handle)
        except STOP:
            raise
        except Exception as exc:
            attempts = run.cancel_failed()
            if attempts >= CANCEL_ATTEMPTS:
                run.cancel_settled()
                self._note(
                    f"could not cancel job {run.handle.job_id} after {attempts} "
                    f"tries ({failure_reason(exc)}): it may still run at {self.backend.name}; "
                    "cancel it there",
                    "warning",
                    run.number,
                )
                return
            delay = min(2.0**attempts, self.backend.poll_interval[1])
            run.retry_cancel(self.clock() + delay)
            self._note(
                f"cancel of job {run.handle.job_id} failed ({failure_reason(exc)}); "
                f"retrying in {delay:.0f} s",
                "warning",
                run.number,
            )
            return
        run.cancel_settled()

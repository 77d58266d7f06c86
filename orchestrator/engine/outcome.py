"""The end of a trial: diagnosis, reconciled cost, checkpoints, the study told, MLflow updated."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from orchestrator.backends.base import JobStatus, JobUpdate, MetricPoint
from orchestrator.costs import training_cost, training_price
from orchestrator.diagnosis import Diagnosis, Thresholds, diagnose
from orchestrator.engine.budget import Budget
from orchestrator.engine.ledger import A
from orchestrator.engine.slot import Curves, Slot, latest, state
from orchestrator.plan import SweepPlan
from orchestrator.tracking import Tracker

if TYPE_CHECKING:
    import optuna

__all__ = ["Outcomes"]


class Outcomes:
    """Concludes finished trials of one sweep."""

    def __init__(
        self,
        plan: SweepPlan,
        study: optuna.Study,
        tracker: Tracker,
        budget: Budget,
        say: Callable[[str], None],
    ) -> None:
        self.plan, self.study, self.tracker, self.budget, self.say = (
            plan,
            study,
            tracker,
            budget,
            say,
        )
        self.price = training_price(plan.spec.backend.model, plan.spec.prices)

    def record(self, slot: Slot, update: JobUpdate) -> None:
        """Diagnose, reconcile the cost, tell the study, and log the trial's end."""
        trial, spec = slot.trial, self.plan.spec
        hp = slot.request.hyperparameters
        thresholds = Thresholds(**self.plan.spec.diagnosis.model_dump())
        diag = diagnose(slot.curves, hp.n_epochs, hp.as_dict(), thresholds)
        cost = self._cost(update)
        attrs: dict[str, Any] = {
            A.DIAGNOSIS: diag.label,
            A.RECOMMENDATION: diag.recommendation,
            A.JOB_STATUS: update.status.value,
            A.STEPS: max((s for c in slot.curves.values() for s, _ in c), default=0),
        }
        if diag.best_epoch is not None:
            attrs[A.BEST_EPOCH] = diag.best_epoch
        if cost is not None:
            attrs[A.COST] = cost
            self.budget.spend(cost)
        if update.trained_tokens is not None:
            attrs[A.TOKENS] = update.trained_tokens
        if update.fine_tuned_model:
            attrs[A.MODEL] = update.fine_tuned_model
        if update.error:
            attrs[A.ERROR] = update.error
        attrs.update(self._checkpoints(slot, update, diag))
        for k, v in attrs.items():
            trial.set_user_attr(k, v)
        value = self.objective(slot.curves)
        if slot.pruned and update.status is not JobStatus.SUCCEEDED:
            state_name, shown = "PRUNED", f"pruned (job {update.status.value})"
            self.study.tell(trial, state=state("PRUNED"))
        elif update.status is JobStatus.SUCCEEDED and value is not None:
            state_name, shown = "COMPLETE", f"{spec.objective.metric}={value:.4f}"
            self.study.tell(trial, value)
        else:
            reason = update.error or (
                f"job {update.status.value}"
                if update.status is not JobStatus.SUCCEEDED
                else f"no {spec.objective.metric} reported (is there validation data?)"
            )
            trial.set_user_attr(A.ERROR, reason)
            state_name, shown = "FAIL", f"failed: {reason}"
            self.study.tell(trial, state=state("FAIL"))
        self._log_finish(slot, state_name, diag, cost, update)
        self.say(f"trial {slot.number} {shown} — {diag.label}: {diag.recommendation}")

    def _checkpoints(self, slot: Slot, update: JobUpdate, diag: Diagnosis) -> dict[str, Any]:
        """Earlier epochs' checkpoints: what n_epochs=2 or 3 gave inside an n_epochs=4 job.

        Recorded on the trial (``ftsweep.checkpoints``: epoch -> step, model, metrics) and in
        MLflow as ``checkpoint.<metric>`` series indexed by epoch; when the best epoch has a
        checkpoint, its model is the trial's ``ftsweep.best_checkpoint``.
        """
        if not update.checkpoints:
            return {}
        by_epoch = {
            str(c.epoch): {"step": c.step, "model": c.model_id, **dict(c.metrics)}
            for c in update.checkpoints
        }
        points = [
            MetricPoint(c.epoch, f"checkpoint.{name}", float(value))
            for c in update.checkpoints
            for name, value in c.metrics.items()
        ]
        if points:
            self.tracker.log_points(slot.run_id, points)
        out: dict[str, Any] = {A.CHECKPOINTS: by_epoch}
        if diag.best_epoch is not None and str(diag.best_epoch) in by_epoch:
            out[A.BEST_CHECKPOINT] = by_epoch[str(diag.best_epoch)]["model"]
        return out

    def objective_names(self) -> tuple[str, ...]:
        """The objective metric, and what stands in for it: the default full_valid_loss falls
        back to valid_loss (a backend without full-validation passes)."""
        metric = self.plan.spec.objective.metric
        return (metric, "valid_loss") if metric == "full_valid_loss" else (metric,)

    def objective(self, curves: Curves) -> float | None:
        return latest(curves, *self.objective_names())

    def _cost(self, update: JobUpdate) -> float | None:
        if update.trained_tokens is None or self.price is None:
            return None
        return training_cost(update.trained_tokens, 1, self.price)

    def _log_finish(
        self, slot: Slot, state: str, diag: Diagnosis, cost: float | None, update: JobUpdate
    ) -> None:
        tags: dict[str, Any] = {
            "ftsweep.state": state,
            "ftsweep.diagnosis": diag.label,
            "ftsweep.recommendation": diag.recommendation,
            "ftsweep.job_status": update.status.value,
        }
        if update.fine_tuned_model:
            tags["ftsweep.fine_tuned_model"] = update.fine_tuned_model
        if update.error:
            tags["ftsweep.error"] = update.error[:4000]
        metrics: dict[str, float] = {f"diagnosis.{k}": v for k, v in diag.evidence.items()}
        if cost is not None:
            metrics["cost_usd"] = cost
        value = self.objective(slot.curves)
        if value is not None and state == "COMPLETE":
            metrics["objective"] = value
        self.tracker.log(slot.run_id, metrics=metrics, tags=tags)
        if slot.curves:
            self.tracker.log_curve_png(slot.run_id, slot.curves, f"trial {slot.number} ({state})")
        status = {"COMPLETE": "FINISHED", "PRUNED": "KILLED"}.get(state, "FAILED")
        self.tracker.finish(slot.run_id, status)

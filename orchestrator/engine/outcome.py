"""The end of a trial, computed: its state, value, diagnosis and the attributes to record.

Pure functions of the trial's curves and its job's last update: nothing here writes to a
store, so the engine can record the outcome (ledger), tell the listeners and then the study,
in that order.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from orchestrator.analysis.diagnosis import Diagnosis, Thresholds, diagnose
from orchestrator.backends.base import THROUGHPUT_METRICS, JobStatus, JobUpdate
from orchestrator.core.attrs import TrialAttrs
from orchestrator.core.errors import BackendError, OrchestratorError, UsageError
from orchestrator.engine.curves import Curves, at, latest

__all__ = [
    "Outcome",
    "conclude",
    "environmental",
    "failure_reason",
    "objective_at",
    "objective_names",
    "objective_value",
]

State = Literal["COMPLETE", "PRUNED", "FAIL"]


@dataclass(frozen=True)
class Outcome:
    state: State
    value: float | None
    diagnosis: Diagnosis
    cost_usd: float | None
    error: str | None
    attrs: dict[str, Any] = field(default_factory=dict)
    finished_despite_prune: bool = False
    #: with several objectives: the values told to the study (the primary first)
    values: tuple[float, ...] | None = None
    #: the constraints' violations set on the trial before it is told (<= 0: kept)
    constraints: dict[str, float] = field(default_factory=dict)


def objective_names(metric: str) -> tuple[str, ...]:
    """The objective and what stands in for it: the default ``full_valid_loss`` falls back to
    ``valid_loss`` (a backend without full-validation passes)."""
    return (metric, "valid_loss") if metric == "full_valid_loss" else (metric,)


def objective_value(curves: Curves, metric: str) -> float | None:
    """The objective at the end of the curves."""
    return latest(curves, *objective_names(metric))


def objective_at(curves: Curves, step: int, metric: str) -> float | None:
    """The objective at (or just before) ``step``: what the pruner sees at an epoch end."""
    return at(curves, step, *objective_names(metric))


def _pruned_diagnosis(
    curves: Curves, n_epochs: int, params: Mapping[str, Any], epoch: int, thresholds: Thresholds
) -> Diagnosis:
    """A pruned trial stopped early: only divergence can be read from its curve."""
    return diagnose(curves, n_epochs, dict(params), thresholds, pruned_at_epoch=epoch)


def conclude(
    *,
    curves: Curves,
    update: JobUpdate | None,
    metric: str,
    n_epochs: int,
    params: Mapping[str, Any],
    thresholds: Thresholds,
    cost_usd: float | None,
    pruned_at: int | None,
    error: str | None = None,
) -> Outcome:
    """The outcome of a trial whose job ended with ``update`` (None: it never ran, ``error``
    says why)."""
    value = objective_value(curves, metric)
    if pruned_at is not None and (update is None or update.status is not JobStatus.SUCCEEDED):
        diag = _pruned_diagnosis(curves, n_epochs, params, pruned_at, thresholds)
    else:
        diag = diagnose(curves, n_epochs, dict(params), thresholds)
    attrs: dict[str, Any] = {
        TrialAttrs.DIAGNOSIS: diag.label,
        TrialAttrs.RECOMMENDATION: diag.recommendation,
        TrialAttrs.STEPS: max((s for c in curves.values() for s, _ in c), default=0),
    }
    if diag.best_epoch is not None:
        attrs[TrialAttrs.BEST_EPOCH] = diag.best_epoch
    if cost_usd is not None:
        attrs[TrialAttrs.COST] = cost_usd
    speed = {name: latest(curves, name) for name in THROUGHPUT_METRICS}
    if any(v is not None for v in speed.values()):
        attrs[TrialAttrs.THROUGHPUT] = {k: v for k, v in speed.items() if v is not None}
    state: State
    despite = False
    if update is None:
        state, error = "FAIL", error or "the job never ran"
    else:
        attrs[TrialAttrs.JOB_STATUS] = update.status.value
        if update.trained_tokens is not None:
            attrs[TrialAttrs.TRAINED_TOKENS] = update.trained_tokens
        if update.fine_tuned_model:
            attrs[TrialAttrs.FINE_TUNED_MODEL] = update.fine_tuned_model
        attrs.update(_checkpoints(update, diag))
        if error is not None:
            state = "FAIL"
        elif pruned_at is not None and update.status is not JobStatus.SUCCEEDED:
            state = "PRUNED"
        elif update.status is JobStatus.SUCCEEDED and value is not None:
            state, despite = "COMPLETE", pruned_at is not None
        else:
            state = "FAIL"
            error = update.error or (
                f"job {update.status.value}"
                if update.status is not JobStatus.SUCCEEDED
                else f"no {metric} reported (is there validation data?)"
            )
    if error is not None:
        attrs[TrialAttrs.ERROR] = error[:4000]
    return Outcome(
        state, value if state == "COMPLETE" else None, diag, cost_usd, error, attrs, despite
    )


def _checkpoints(update: JobUpdate, diag: Diagnosis) -> dict[str, Any]:
    """Earlier epochs' checkpoints: what n_epochs=2 or 3 gave inside an n_epochs=4 job
    (``ftsweep.checkpoints``: epoch -> step, model, metrics); when the best epoch has one, its
    model is the trial's ``ftsweep.best_checkpoint``."""
    if not update.checkpoints:
        return {}
    by_epoch = {
        str(c.epoch): {"step": c.step, "model": c.model_id, **dict(c.metrics)}
        for c in update.checkpoints
    }
    out: dict[str, Any] = {TrialAttrs.CHECKPOINTS: by_epoch}
    if diag.best_epoch is not None and str(diag.best_epoch) in by_epoch:
        out[TrialAttrs.BEST_CHECKPOINT] = by_epoch[str(diag.best_epoch)]["model"]
    return out


def environmental(exc: BaseException) -> bool:
    """A provider or machine failure (worth another try), not a bad configuration."""
    return isinstance(exc, BackendError) and not isinstance(exc, UsageError)


def failure_reason(exc: BaseException) -> str:
    """A one-line reason: a known error's message, else ``internal error: Type: message``."""
    text = str(exc).splitlines()[0] if str(exc) else ""
    if isinstance(exc, OrchestratorError):
        return text or type(exc).__name__
    return f"internal error: {type(exc).__name__}: {text}"

"""Advice for the next sweep, from the trials of one: what ``run`` prints at its end and the
HTML report shows (:func:`orchestrator.analysis.diagnosis.advise` on a whole study)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from orchestrator.analysis.diagnosis import Advice, Thresholds, TrialCurve, advise

if TYPE_CHECKING:
    import optuna
    import pandas as pd

    from orchestrator.plan.sweep import SweepPlan

__all__ = ["sweep_advice"]


def sweep_advice(
    plan: SweepPlan, study: optuna.Study, frame: pd.DataFrame, best: Any
) -> Advice | None:
    """The next sweep's advice from a sweep's trials (None before any completed): the
    diagnoses of its finished trials (``frame``, one row per trial), its top three and the
    completed trials' curves, against the plan's space and thresholds."""
    if best is None:
        return None
    # a pruned trial stopped early: its curve says nothing about over- or under-fitting
    rows = frame.to_dict(orient="records") if len(frame) else []
    labels = [str(r["diagnosis"]) for r in rows if r.get("diagnosis") and r["state"] != "PRUNED"]
    sign = 1.0 if plan.spec.objective.direction == "minimize" else -1.0
    done = [t for t in study.get_trials(deepcopy=False) if t.value is not None]
    top = [t.params for t in sorted(done, key=lambda t: sign * float(t.value or 0.0))[:3]]
    # completed trials only: a pruned one was already stopped for being worse at an epoch
    curves = [
        TrialCurve(t.number, t.params, t.intermediate_values)
        for t in study.get_trials(deepcopy=False)
        if t.intermediate_values and t.state.name == "COMPLETE"
    ]
    return advise(
        plan.space,
        {**plan.space.fixed(), **best.params},
        labels,
        top,
        trials=curves,
        best_trial=best.number,
        minimize=sign > 0,
        thresholds=Thresholds(**plan.spec.diagnosis.model_dump()),
    )

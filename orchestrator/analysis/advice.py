"""Advice for the next sweep, from the trials of one: what ``run`` prints at its end and the
HTML report shows (:func:`orchestrator.analysis.diagnosis.advise` on a whole study)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from orchestrator.analysis.diagnosis import Advice, Thresholds, TrialCurve, advise
from orchestrator.core.attrs import TrialAttrs

if TYPE_CHECKING:
    import optuna

    from orchestrator.plan.sweep import SweepPlan

__all__ = ["sweep_advice"]


def sweep_advice(
    plan: SweepPlan,
    study: optuna.Study,
    rows: Sequence[Mapping[Any, Any]],
    best: Any,
) -> Advice | None:
    """The next sweep's advice from a sweep's trials (None before any completed): the
    diagnoses of its finished trials (``rows``, one per trial: :attr:`~orchestrator.results.
    table.TrialTable.rows`), its top three and the completed trials' curves, against the
    plan's space and thresholds."""
    if best is None:
        return None
    # a pruned trial stopped early: its curve says nothing about over- or under-fitting
    labels = [str(r["diagnosis"]) for r in rows if r.get("diagnosis") and r["state"] != "PRUNED"]
    sign = 1.0 if plan.spec.objective.direction == "minimize" else -1.0
    # values[0]: the (primary) objective, in a study of one objective or several
    done = [t for t in study.get_trials(deepcopy=False) if t.values]
    top = [t.params for t in sorted(done, key=lambda t: sign * float(t.values[0]))[:3]]
    # completed trials only: a pruned one was already stopped for being worse at an epoch
    curves = [
        TrialCurve(t.number, t.params, steps)
        for t in study.get_trials(deepcopy=False)
        if (steps := _epoch_values(t)) and t.state.name == "COMPLETE"
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


def _epoch_values(t: optuna.trial.FrozenTrial) -> dict[int, float]:
    """The objective at each epoch end (several objectives: kept in the trial's ledger)."""
    if t.intermediate_values:
        return dict(t.intermediate_values)
    found = t.user_attrs.get(TrialAttrs.EPOCH_VALUES)
    return {int(k): float(v) for k, v in found.items()} if isinstance(found, dict) else {}

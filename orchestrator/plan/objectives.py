"""Several objectives and constraints, checked before a run (exit 2, naming the field).

A sweep names one ``objective`` or several ``objectives`` (the first is the *primary*: the
pruner and ``best`` rank by it) and ``constraints`` on any metric. A metric is either one the
backend's jobs report at epoch ends (:meth:`~orchestrator.backends.base.Backend.metric_names`)
or one the engine measures of the whole trial (:data:`TRIAL_METRICS`): ``cost_usd``, the
dollars the trial is charged (only on a priced backend), and ``duration_s``, its job's wall
time (the local trainer's cost).

Constraints reach the sampler through Optuna's public ``Trial.set_constraint`` (Optuna 5 reads
them from every trial; the sampler's ``constraints_func`` is deprecated there), so TPE and the
others treat an infeasible trial as a worse one.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from orchestrator.backends.base import GENERATION_METRICS
from orchestrator.core.errors import SpecError

if TYPE_CHECKING:
    from orchestrator.config import SweepSpec

__all__ = [
    "SINGLE_OBJECTIVE_PRUNERS",
    "TRIAL_METRICS",
    "check_objectives",
    "constraint_values",
    "describe_search",
    "directions",
]

#: metrics of a whole trial that the engine measures (no backend reports them)
TRIAL_METRICS = {
    "cost_usd": "the dollars the trial is charged (reconciled, else estimated)",
    "duration_s": "the job's wall time in seconds, paused time left out",
}
#: pruners whose rule the engine applies itself in a sweep of several objectives (Optuna's
#: own cannot prune one); successive halving and hyperband keep state per rung that Optuna
#: writes only for its own single-objective studies
SINGLE_OBJECTIVE_PRUNERS = ("successive_halving", "hyperband")


def describe_search(spec: SweepSpec) -> str | None:
    """One line on what a sweep of several objectives (or with constraints) searches with;
    None for one objective without constraints."""
    if not spec.multi_objective and not spec.constraints:
        return None
    goals = ", ".join(f"{o.direction} {o.metric}" for o in spec.objective_list)
    sampler: str = spec.sampler.name
    if sampler == "auto":
        sampler = "auto: a scrambled Sobol start, then TPE" + (
            " (multi-objective)" if spec.multi_objective else ""
        )
    line = f"objectives: {goals}; sampler {sampler}"
    if spec.constraints:
        limits = ", ".join(
            f"{m} <= {c.max:g}" if c.max is not None else f"{m} >= {c.min:g}"
            for m, c in spec.constraints.items()
        )
        line += f"; constraints: {limits}"
    if spec.multi_objective and spec.pruner.name != "none":
        line += f"; pruner {spec.pruner.name} on {spec.objective.metric}, keeping the front"
    return line


def directions(spec: SweepSpec) -> list[str]:
    """The Optuna study's directions, one per objective, the primary first."""
    return [o.direction for o in spec.objective_list]


def _known(metric: str, known: frozenset[str], priced: bool, backend: str) -> str | None:
    """Why ``metric`` cannot be measured, or None when it can."""
    if metric in known:
        return None
    if metric == "cost_usd" and not priced:
        return "'cost_usd' needs a priced backend; this one charges nothing (use duration_s)"
    if metric in TRIAL_METRICS:
        return None
    hint = ""
    if metric in GENERATION_METRICS:
        hint = " (the local trainer reports it with backend option eval_generations: N)"
    return (
        f"{metric!r} is not reported by backend {backend!r}{hint}; "
        f"it reports: {', '.join(sorted(known))} (and of a whole trial: {', '.join(TRIAL_METRICS)})"
    )


def check_objectives(
    shown: str, spec: SweepSpec, known: frozenset[str], backend: str, priced: bool
) -> None:
    """Raise :class:`~orchestrator.core.errors.SpecError` (exit 2) naming the field of an
    objective or constraint whose metric the backend ``backend`` cannot give (``known``: the
    metrics its jobs report; ``priced``: whether it charges), or a pruner that cannot
    prune a sweep of several objectives."""
    if spec.objectives is None:
        fields = [("objective.metric", spec.objective.metric)]
    else:
        fields = [(f"objectives.{i}.metric", o.metric) for i, o in enumerate(spec.objectives)]
    for field, metric in fields:
        why: str | None = None
        if field == "objective.metric" and metric in TRIAL_METRICS:
            why = f"{metric!r} is a whole trial's; name it under objectives, after a metric"
        else:
            why = _known(metric, known, priced, backend)
        if why is not None:
            raise SpecError(shown, field, why)
    for metric in spec.constraints:
        why = _known(metric, known, priced, backend)
        if why is not None:
            raise SpecError(shown, f"constraints.{metric}", why)
    primary = spec.objective.metric
    if spec.objectives is not None and primary in TRIAL_METRICS:
        raise SpecError(
            shown,
            "objectives.0.metric",
            f"the primary objective is measured at epoch ends; put {primary!r} second",
        )
    if spec.multi_objective and spec.pruner.name in SINGLE_OBJECTIVE_PRUNERS:
        raise SpecError(
            shown,
            "pruner.name",
            f"{spec.pruner.name} cannot prune a sweep of several objectives; "
            "use median, percentile or threshold",
        )
    if spec.multi_objective and spec.sampler.name in ("cmaes", "grid"):
        raise SpecError(
            shown,
            "sampler.name",
            f"{spec.sampler.name} optimises one objective; use auto, tpe, random, qmc or gp",
        )


def constraint_values(spec: SweepSpec, values: Mapping[str, float | None]) -> dict[str, float]:
    """Each constraint's violation (<= 0: inside its limit) from the trial's measured
    ``values`` by metric; a metric not measured violates its constraint (by 1.0, so an
    unmeasured trial is never feasible)."""
    out = {}
    for metric, limit in spec.constraints.items():
        value = values.get(metric)
        out[metric] = 1.0 if value is None else limit.violation(float(value))
    return out

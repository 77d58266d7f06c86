"""Epochs as a free fidelity: the earlier epochs of a finished job, told as trials of their own.

A job trained for ``n_epochs=4`` has also trained ``n_epochs=1, 2, 3``: the model at the end
of epoch ``k`` stands for what an ``n_epochs=k`` job gives (exactly so on the simulator; on a
provider whose learning rate decays over the whole job an approximation, since a longer job
has decayed less by epoch ``k``; see ``docs/search.md``). When a trial
completes, :func:`tell_derived` adds one COMPLETE trial per earlier epoch ``k`` that the space
allows, with the parent's other parameters and ``n_epochs=k``, so the sampler learns from them
at no cost. A derived trial

- has the objective *the parent's objective used* (the same metric name, ``full_valid_loss``
  or its ``valid_loss`` stand-in), taken at the step where epoch ``k`` ended, and only when
  that metric has a point exactly there; an epoch without one derives nothing, and a backend
  that reports no epoch ends derives nothing;
- is marked ``ftsweep.derived_from`` (the parent's number) and ``ftsweep.derived_job`` (its
  job); its model is the parent's checkpoint at that epoch when the backend kept one
  (``ftsweep.derived_model``, also its ``ftsweep.fine_tuned_model``);
- carries the configuration hash an ``n_epochs=k`` request would have, so the engine's
  repeats (:mod:`.repeats`) take its result instead of training it again;
- is never RUNNING (it is created complete), never counts toward ``trials``, costs nothing
  (no ``ftsweep.cost_usd``), and has no MLflow run of its own: its values are the parent
  run's per-epoch metrics, and it records the parent's run id (``ftsweep.mlflow_run_id``);
- in a sweep of several objectives (or with constraints) has every objective at that epoch:
  a metric at the same step, and ``cost_usd``/``duration_s`` as the parent's share for
  ``k`` of its epochs (what an ``n_epochs=k`` job costs; not charged); an epoch missing one
  derives nothing.

An epoch whose configuration the study already has (trained, or derived before) is not
derived again.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from orchestrator.backends.base import Checkpoint, MetricPoint, TrainingRequest, epoch_ends_of
from orchestrator.core.attrs import TrialAttrs
from orchestrator.engine.curves import Curves
from orchestrator.engine.outcome import objective_names

if TYPE_CHECKING:
    import optuna

    from orchestrator.plan.sweep import SweepPlan

__all__ = ["Derived", "derive", "epoch_end_steps", "tell_derived"]


@dataclass(frozen=True)
class Derived:
    """What epoch ``epoch`` of a parent trial's job gave."""

    epoch: int
    step: int
    metric: str
    value: float
    model: str | None


def epoch_end_steps(curves: Curves, checkpoints: tuple[Checkpoint, ...] = ()) -> dict[int, int]:
    """Epoch -> the step it ended at: from the ``epoch`` metric by the contract's one rule
    (:func:`~orchestrator.backends.base.epoch_ends_of`, whole or fractional values), else
    from the checkpoints; empty when the backend reports neither."""
    points = [MetricPoint(step, "epoch", value) for step, value in curves.get("epoch", ())]
    ends = {end.epoch: end.step for end in epoch_ends_of(points)}
    for c in checkpoints:
        ends.setdefault(c.epoch, c.step)
    return ends


def derive(
    curves: Curves,
    checkpoints: tuple[Checkpoint, ...],
    metric: str,
    n_epochs: int,
    allowed: set[int],
) -> list[Derived]:
    """The earlier epochs of a job trained for ``n_epochs`` whose objective is known.

    The metric is the one the trial's own objective came from (the first of
    :func:`~.outcome.objective_names` with a value); its value must sit exactly at the
    epoch's last step. Only epochs in ``allowed`` (the space's epoch counts) are derived.
    """
    used = next((name for name in objective_names(metric) if curves.get(name)), None)
    if used is None:
        return []
    values = dict(curves[used])
    models = {c.epoch: c.model_id for c in checkpoints if c.model_id}
    out = []
    for epoch, step in sorted(epoch_end_steps(curves, checkpoints).items()):
        if epoch >= n_epochs or epoch not in allowed or step not in values:
            continue
        out.append(Derived(epoch, step, used, float(values[step]), models.get(epoch)))
    return out


def _allowed_epochs(plan: SweepPlan) -> set[int]:
    dim = plan.space["n_epochs"]
    if dim.kind == "choice":
        return {int(c) for c in dim.choices}
    if dim.kind == "int":
        lo, hi = dim.bounds()
        return set(range(int(lo), int(hi) + 1))
    return set()  # fixed: there is no other epoch count to tell


def tell_derived(
    study: optuna.Study,
    plan: SweepPlan,
    parent: optuna.Trial,
    request: TrainingRequest,
    curves: Curves,
    checkpoints: tuple[Checkpoint, ...],
    job_id: str | None,
    attrs: Mapping[str, Any],
) -> list[int]:
    """Add the derived trials of the completed trial ``parent`` (whose job ran ``request``);
    returns their numbers. ``attrs`` are the parent's recorded user attributes."""
    import optuna

    allowed = _allowed_epochs(plan)
    hp = request.hyperparameters
    found = derive(curves, checkpoints, plan.spec.objective.metric, hp.n_epochs, allowed)
    if not found:
        return []
    distributions = plan.space.distributions()
    params = {name: parent.params[name] for name in distributions if name in parent.params}
    if set(params) != set(distributions):
        return []
    known = {
        t.user_attrs.get(TrialAttrs.CONFIG_HASH)
        for t in study.get_trials(deepcopy=False)
        if TrialAttrs.ENVIRONMENT_FAILURE not in t.user_attrs
    }
    numbers = []
    for d in found:
        hp_k = plan.space.hyperparameters({**params, "n_epochs": d.epoch})
        config_hash = plan.request(hp_k, trial=parent.number).config_hash()
        if config_hash in known:
            continue
        user_attrs: dict[str, Any] = {
            TrialAttrs.DERIVED_FROM: parent.number,
            TrialAttrs.CONFIG_HASH: config_hash,
            TrialAttrs.BACKEND: attrs.get(TrialAttrs.BACKEND),
            TrialAttrs.STEPS: d.step,
            TrialAttrs.JOB_STATUS: "succeeded",
        }
        if job_id:
            user_attrs[TrialAttrs.DERIVED_JOB] = job_id
        if d.model:
            user_attrs[TrialAttrs.DERIVED_MODEL] = d.model
            user_attrs[TrialAttrs.FINE_TUNED_MODEL] = d.model
        if attrs.get(TrialAttrs.MLFLOW_RUN):
            user_attrs[TrialAttrs.MLFLOW_RUN] = attrs[TrialAttrs.MLFLOW_RUN]
        told = _objectives(plan, curves, d, hp.n_epochs, attrs)
        if told is None:
            continue
        values, violations, measured = told
        if measured:
            user_attrs[TrialAttrs.OBJECTIVES] = measured
        trial = optuna.trial.create_trial(
            params={**params, "n_epochs": d.epoch},
            distributions=distributions,
            values=values,
            user_attrs={k: v for k, v in user_attrs.items() if v is not None},
            constraints=violations or None,
        )
        study.add_trial(trial)
        known.add(config_hash)
        numbers.append(study.get_trials(deepcopy=False)[-1].number)
    return numbers


def _share(attrs: Mapping[str, Any], key: str, share: float) -> float | None:
    found = attrs.get(key)
    return float(found) * share if isinstance(found, int | float) else None


def _objectives(
    plan: SweepPlan, curves: Curves, d: Derived, n_epochs: int, attrs: Mapping[str, Any]
) -> tuple[list[float], dict[str, float], dict[str, float | None]] | None:
    """``(values, constraint violations, measured metrics)`` of the derived trial ``d``
    (one value and nothing else in a sweep of one objective without constraints); None when
    an objective is unknown at that epoch."""
    from orchestrator.engine.objectives import measure, settle

    spec = plan.spec
    if not spec.multi_objective and not spec.constraints:
        return [d.value], {}, {}
    share = d.epoch / n_epochs
    cost = _share(attrs, TrialAttrs.COST, share)
    duration = _share(attrs, TrialAttrs.DURATION, share)
    measured = measure(spec, curves, cost, duration, d.step)
    measured[spec.objective.metric] = d.value
    values, violations, missing = settle(spec, measured)
    if values is None or missing is not None:
        return None
    return list(values), violations, measured

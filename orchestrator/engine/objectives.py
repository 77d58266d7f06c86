"""Several objectives in the engine: what a trial is told, and pruning that keeps the front.

A sweep of several objectives (``objectives:`` in the sweep file) is an Optuna study with
``directions``: a finished trial is told one value per objective (:func:`measure`,
:func:`settle`), and its constraints are set on it first (``Trial.set_constraint``), so the
sampler sees them when it is told.

Optuna cannot prune such a study (``Trial.should_prune`` refuses; optuna#3450). The engine
applies the rule itself, at each epoch end (:func:`prune_several`, documented with its
measured effect in ``docs/search.md``):

1. **the configured pruner's rule on the primary objective.** The pruner (median, percentile
   or threshold, with the sweep file's options) is asked about the trial in a single-objective
   copy of the study made for the question: the completed trials with their primary value
   and their values at each epoch end, and this trial with its own. Its verdict is what the
   same pruner says in a single-objective sweep of the primary objective.
2. **never prune a trial that could still land on the front.** The trials that beat it are
   the completed ones whose primary at this epoch is better. If on some other objective the
   trial's *projected* value is strictly better than each of theirs (for each of them, on
   one objective at least), none of them dominates it yet: it is kept. Projections: the
   trial's estimated cost for ``cost_usd`` (what the whole job is charged), its elapsed time
   scaled to all its epochs for ``duration_s``, and the metric's latest value otherwise.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from orchestrator.engine.curves import Curves
from orchestrator.engine.outcome import objective_at, objective_value
from orchestrator.results.front import epoch_values

if TYPE_CHECKING:
    import optuna

    from orchestrator.config import SweepSpec

__all__ = ["Verdict", "measure", "metrics_of", "projected", "prune_several", "settle"]


def metrics_of(spec: SweepSpec) -> list[str]:
    """Every metric the sweep's objectives and constraints name (objectives first)."""
    names = [o.metric for o in spec.objective_list]
    return names + [m for m in spec.constraints if m not in names]


def measure(
    spec: SweepSpec,
    curves: Curves,
    cost_usd: float | None,
    duration_s: float | None,
    step: int | None = None,
) -> dict[str, float | None]:
    """Each metric of :func:`metrics_of` for a finished trial (at its end, or at ``step``):
    from its curves, or the engine's own ``cost_usd`` and ``duration_s``."""
    out: dict[str, float | None] = {}
    for metric in metrics_of(spec):
        if metric == "cost_usd":
            out[metric] = cost_usd
        elif metric == "duration_s":
            out[metric] = duration_s
        elif step is None:
            out[metric] = objective_value(curves, metric)
        else:
            out[metric] = objective_at(curves, step, metric)
    return out


def settle(
    spec: SweepSpec, measured: Mapping[str, float | None]
) -> tuple[tuple[float, ...] | None, dict[str, float], str | None]:
    """``(values to tell, constraint violations, why it cannot complete)`` of a trial
    whose metrics are ``measured``: values None and a reason when an objective is unknown."""
    from orchestrator.plan.objectives import constraint_values

    values: list[float] = []
    missing = []
    for o in spec.objective_list:
        v = measured.get(o.metric)
        if v is None:
            missing.append(o.metric)
        else:
            values.append(float(v))
    violations = constraint_values(spec, measured)
    if missing:
        return None, violations, f"no {', '.join(missing)} measured (an objective)"
    return tuple(values), violations, None


def projected(
    spec: SweepSpec,
    curves: Curves,
    step: int,
    epoch: int,
    n_epochs: int,
    estimate_usd: float | None,
    elapsed_s: float | None,
) -> dict[str, float | None]:
    """What a running trial's metrics are projected to be when its job completes."""
    duration = None
    if elapsed_s is not None and epoch > 0:
        duration = elapsed_s * n_epochs / epoch
    return measure(spec, curves, estimate_usd, duration, step)


@dataclass(frozen=True)
class Verdict:
    """The engine's decision at one epoch end: prune or not, and whether the pruner's
    rule alone would have (so a trial kept for the front is said so)."""

    prune: bool
    pruner_says: bool
    beaten_by: tuple[int, ...] = ()


def _better(a: float, b: float, direction: str) -> bool:
    return a > b if direction == "maximize" else a < b


def _pruner_says(
    trials: Sequence[optuna.trial.FrozenTrial],
    direction: optuna.study.StudyDirection,
    pruner: optuna.pruners.BasePruner,
    steps: Mapping[int, float],
) -> bool:
    """What ``pruner`` says of a trial reporting ``steps`` in a single-objective study of
    the primary objective made of the other ``trials`` that finished."""
    import optuna

    sampler = optuna.samplers.RandomSampler(seed=0)  # asks for no parameter: never samples
    copy = optuna.create_study(direction=direction, pruner=pruner, sampler=sampler)
    done = optuna.trial.TrialState.COMPLETE
    copy.add_trials(
        [
            optuna.trial.create_trial(
                state=t.state,
                value=float(t.values[0]) if t.state == done else None,
                intermediate_values=epoch_values(t),
            )
            for t in trials
            if (t.state == done and t.values) or t.state == optuna.trial.TrialState.PRUNED
        ]
    )
    trial = copy.ask()
    for step, v in sorted(steps.items()):
        trial.report(v, step)
    return bool(trial.should_prune())


def prune_several(
    study: optuna.Study,
    pruner: optuna.pruners.BasePruner,
    number: int,
    epoch: int,
    value: float,
    mine: Sequence[float | None],
    directions: Sequence[str],
) -> Verdict:
    """Whether to prune trial ``number`` at ``epoch`` (where its primary objective is
    ``value``) in a study of several objectives (the module's rule); ``mine``: its
    projected values of the other objectives (None: unknown)."""
    import optuna

    trials = study.get_trials(deepcopy=False)
    own = next((t for t in trials if t.number == number), None)
    steps = {**(epoch_values(own) if own is not None else {}), epoch: value}
    others = [t for t in trials if t.number != number]
    if not _pruner_says(others, study.directions[0], pruner, steps):
        return Verdict(False, False)
    beaten_by = [
        t
        for t in others
        if t.state == optuna.trial.TrialState.COMPLETE
        and t.values
        and epoch in (found := epoch_values(t))
        and _better(found[epoch], value, directions[0])
    ]
    rest = list(zip(mine, directions[1:], strict=True))

    def escapes(t: optuna.trial.FrozenTrial) -> bool:
        theirs = t.values[1:]
        return any(
            m is not None and _better(m, float(v), d)
            for (m, d), v in zip(rest, theirs, strict=True)
        )

    keep = all(escapes(t) for t in beaten_by)
    return Verdict(not keep, True, tuple(t.number for t in beaten_by))

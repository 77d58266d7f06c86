"""Imported history as a starting point: the warm start of a sweep's first run, and the
summary ``ftsweep history`` shows.

A new study of a sweep (its first ``run``), in a store holding ``NAME.imported`` with a
completed trial, starts with the imported best: among the jobs on the sweep's training file
if any, else among all of them, the batch size rescaled by new/old examples (as ``retune``
rescales it, so it keeps its share of the data), every value clamped into the sweep's space.
The engine enqueues it first (before the sweep file's ``enqueue`` entries), with
``ftsweep.warm_start = NAME.imported#N``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from orchestrator.core.attrs import StudyAttrs, TrialAttrs
from orchestrator.core.errors import SweepNotStartedError

if TYPE_CHECKING:
    import optuna

    from orchestrator.config import SweepSpec
    from orchestrator.plan.space import Dimension, SearchSpace
    from orchestrator.plan.sweep import SweepPlan

__all__ = [
    "ImportedSummary",
    "imported_best",
    "imported_study_name",
    "imported_summary",
    "imported_warm_start",
    "load_imported",
    "warm_config",
]

SUFFIX = ".imported"


def imported_study_name(sweep: str) -> str:
    """The study ``ftsweep import`` writes for sweep ``sweep``."""
    return f"{sweep}{SUFFIX}"


def load_imported(spec: SweepSpec) -> optuna.Study | None:
    """The sweep's imported study, read-only; None when there is none."""
    from orchestrator.core.urls import masked_url
    from orchestrator.stores.read import load_study, optuna_url

    url = optuna_url(spec)
    name = imported_study_name(spec.name)
    try:
        return load_study(name, url, masked_url(url), SweepNotStartedError(name, url, name))
    except SweepNotStartedError:
        return None


def imported_best(study: optuna.Study) -> optuna.trial.FrozenTrial | None:
    """The best completed imported trial: on the sweep's own training file if any is."""
    done = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
    same = [t for t in done if t.user_attrs.get(TrialAttrs.IMPORTED_SAME_DATA)]
    pool = same or done
    if not pool:
        return None
    sign = 1.0 if study.direction.name == "MINIMIZE" else -1.0
    return min(pool, key=lambda t: sign * float(t.value or 0.0))


def _clamp(dim: Dimension, value: float) -> float:
    if dim.kind == "choice":
        return min(dim.choices, key=lambda c: abs(float(c) - float(value)))  # type: ignore[no-any-return]
    lo, hi = float(dim.low or 0.0), float(dim.high if dim.high is not None else value)
    x = min(max(float(value), lo), hi)
    return round(x) if dim.kind == "int" else x


def warm_config(trial: optuna.trial.FrozenTrial, space: SearchSpace) -> dict[str, Any]:
    """``trial``'s hyper-parameters as ``space`` takes them: the batch size rescaled by
    ``space.n_examples`` / the trial's examples (when known), each value clamped."""
    hp = dict(trial.params)
    n_old = trial.user_attrs.get(TrialAttrs.IMPORTED_EXAMPLES)
    if "batch_size" in hp and isinstance(n_old, int) and n_old > 0:
        hp["batch_size"] = max(1, round(float(hp["batch_size"]) * space.n_examples / n_old))
    config: dict[str, Any] = {}
    for dim in space.dimensions:
        if dim.kind == "fixed" or dim.name not in hp:
            continue
        config[dim.name] = _clamp(dim, hp[dim.name])
    return config


def imported_warm_start(plan: SweepPlan) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """The first trial of a new study of ``plan``: the imported best as its space takes it,
    with ``ftsweep.warm_start`` naming it; [] without an imported study (the engine's
    ``warm_start``, wired in by :func:`orchestrator.workflows.sweep.run_sweep`)."""
    imported = load_imported(plan.spec)
    best = imported_best(imported) if imported is not None else None
    if imported is None or best is None:
        return []
    config = warm_config(best, plan.space)
    origin = f"{imported.study_name}#{best.number}"
    return [(config, {TrialAttrs.WARM_START: origin})] if config else []


@dataclass(frozen=True)
class ImportedSummary:
    """What ``ftsweep history`` shows of the imported study."""

    study_name: str
    provider: str
    jobs: int
    completed: int
    best_value: float | None
    best_job: str | None
    model: str | None
    first: float | None


def imported_summary(spec: SweepSpec) -> ImportedSummary | None:
    """The imported study in brief; None when the sweep has none."""
    study = load_imported(spec)
    if study is None:
        return None
    trials = study.get_trials(deepcopy=False)
    done = [t for t in trials if t.state.name == "COMPLETE"]
    sign = 1.0 if study.direction.name == "MINIMIZE" else -1.0
    best = min(done, key=lambda t: sign * float(t.value or 0.0)) if done else None
    starts = [t.datetime_start.timestamp() for t in trials if t.datetime_start]
    return ImportedSummary(
        study.study_name,
        str(study.user_attrs.get(StudyAttrs.IMPORTED_FROM, "")),
        len(trials),
        len(done),
        float(best.value) if best is not None and best.value is not None else None,
        str(best.user_attrs.get(TrialAttrs.IMPORTED)) if best is not None else None,
        str(best.user_attrs.get(TrialAttrs.FINE_TUNED_MODEL) or "") or None if best else None,
        min(starts) if starts else None,
    )

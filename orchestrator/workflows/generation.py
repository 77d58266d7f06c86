"""The next generation of a retuned sweep: what the last one recorded, compared with now, and
the plan of the one after it.

:func:`fingerprint_of` reads what a generation's results depended on
(:class:`~orchestrator.plan.fingerprint.Fingerprint`), :func:`nothing_to_do` compares it with
the current one. :func:`next_plan` plans generation ``N``: the previous generation's space
moved where that sweep's advice says (a parameter whose best values sat at an edge), its best
configurations first (:func:`warm_start_configs`, the batch size rescaled to keep its share of
the new number of examples).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from orchestrator.config import SpaceSpec, SweepSpec
from orchestrator.config.models import (
    MAX_SAMPLER_SEED,
    BatchSizeParam,
    FloatParam,
    IntParam,
)
from orchestrator.core.attrs import StudyAttrs, TrialAttrs
from orchestrator.core.errors import OrchestratorError
from orchestrator.plan.fingerprint import Fingerprint, changes
from orchestrator.plan.sweep import Generation, SweepPlan, replan
from orchestrator.stores.read import GenerationInfo

if TYPE_CHECKING:
    import optuna

__all__ = [
    "WARM_START",
    "fingerprint_of",
    "load_generation",
    "next_plan",
    "nothing_to_do",
    "warm_start_configs",
]

#: how many of the previous generation's best configurations start the next (at most half
#: of its trials)
WARM_START = 3


def nothing_to_do(found: Sequence[GenerationInfo], current: Fingerprint) -> bool:
    """Whether the latest generation produced a model on what ``current`` describes."""
    head = found[-1] if found else None
    return head is not None and head.succeeded and not changes(fingerprint_of(head), current)


def fingerprint_of(info: GenerationInfo) -> Fingerprint | None:
    """What the generation's results depended on, as its study recorded it (None: not
    recorded, or unreadable)."""
    if not info.fingerprint:
        return None
    try:
        return Fingerprint.from_json(info.fingerprint)
    except (ValueError, KeyError, TypeError):
        return None


def next_plan(
    plan: SweepPlan,
    source: str,
    base: GenerationInfo | None,
    name: str,
    number: int,
    diffs: tuple[str, ...],
    overrides_trials: int | None = None,
) -> SweepPlan:
    """The plan of generation ``number``: the space moved by the previous sweep's advice,
    its best configurations first."""
    spec = plan.spec
    file_space = spec.space.model_dump(mode="json", exclude_none=True)
    space_spec = spec.space
    warm: list[tuple[dict[str, Any], str]] = []
    if base is not None:
        space_spec = _moved_space(plan, base, file_space)
    derived = spec.model_copy(update={"space": space_spec})
    if spec.sampler.seed is not None:  # a seeded sampler would replay the last generation's
        seed = (spec.sampler.seed + 7919 * (number - 1)) % MAX_SAMPLER_SEED
        derived = derived.model_copy(
            update={"sampler": spec.sampler.model_copy(update={"seed": seed})}
        )
    if space_spec is not spec.space and spec.enqueue:  # keep the entries the moved space holds
        from orchestrator.plan.space import resolve_space

        space = resolve_space(space_spec, plan.train.n_examples, plan.backend, source)
        kept = [e for e in spec.enqueue if all(space[k].contains(v) for k, v in e.items())]
        derived = derived.model_copy(update={"enqueue": kept})
    moved = replan(plan, derived, source)
    if base is not None:  # at most half the trials: the rest search around them
        trials = overrides_trials or spec.trials
        warm = warm_start_configs(base, moved, spec, min(WARM_START, max(1, trials // 2)))
    generation = Generation(
        number, name, base.study_name if base else None, diffs, file_space,
        tuple((config, {TrialAttrs.WARM_START: origin}) for config, origin in warm),
    )  # fmt: skip
    return replace(moved, generation=generation)


def load_generation(info: GenerationInfo, spec: SweepSpec) -> optuna.Study:
    """The generation's study, read-only."""
    from orchestrator.core.errors import SweepNotStartedError
    from orchestrator.core.urls import masked_url
    from orchestrator.stores.read import load_study, optuna_url

    url = optuna_url(spec)
    shown = masked_url(url)
    return load_study(
        info.study_name, url, shown, SweepNotStartedError(info.study_name, shown, info.study_name)
    )


def _base_space(base: GenerationInfo, file_space: Mapping[str, Any], spec: SweepSpec) -> SpaceSpec:
    """The space to move: the previous generation's, unless the sweep file's space changed
    since (then the user's edit wins)."""
    ran = base.attrs.get(StudyAttrs.SPACE)
    was_file = base.attrs.get(StudyAttrs.FILE_SPACE)
    if isinstance(ran, dict) and was_file == dict(file_space):
        try:
            return SpaceSpec.model_validate(ran, strict=False)
        except ValueError:
            pass
    return spec.space


def _moved_space(plan: SweepPlan, base: GenerationInfo, file_space: Mapping[str, Any]) -> SpaceSpec:
    """The base space with each parameter whose best values sat at an edge moved past it
    (:func:`orchestrator.analysis.diagnosis.advise`), within what the backend accepts."""
    from orchestrator.analysis.diagnosis import advise
    from orchestrator.plan.space import resolve_space

    space_spec = _base_space(base, file_space, plan.spec)
    was = fingerprint_of(base)
    n_old = was.train.n_examples if was else plan.train.n_examples
    try:
        old_space = resolve_space(space_spec, n_old, plan.backend, "previous generation")
    except OrchestratorError:
        return space_spec
    study = load_generation(base, plan.spec)
    done = [t for t in study.get_trials(deepcopy=False) if t.values]  # values[0]: the primary
    if not done:
        return space_spec
    sign = 1.0 if study.directions[0].name == "MINIMIZE" else -1.0
    ranked = sorted(done, key=lambda t: sign * float(t.values[0]))
    fixed = old_space.fixed()
    best = {**fixed, **ranked[0].params}
    labels = [
        str(t.user_attrs[TrialAttrs.DIAGNOSIS])
        for t in done
        if TrialAttrs.DIAGNOSIS in t.user_attrs
    ]
    advice = advise(old_space, best, labels, [t.params for t in ranked[:3]])
    caps = plan.backend.capabilities.parameters
    updates: dict[str, Any] = {}
    for param, (low, high) in advice.next_ranges.items():
        accepted = caps.get(param)
        if accepted is not None:
            if accepted.low is not None:
                low = max(low, accepted.low) if not accepted.low_exclusive else low
            if accepted.high is not None:
                high = min(high, accepted.high)
        if not low < high:
            continue
        current = getattr(space_spec, param)
        if param == "batch_size":
            low_pct = min(100.0, max(1e-6, low / n_old * 100))
            high_pct = min(100.0, max(low_pct, high / n_old * 100))
            updates[param] = BatchSizeParam(
                low_pct=round(low_pct, 6), high_pct=round(high_pct, 6), log=current.log
            )
        elif param == "n_epochs":
            updates[param] = IntParam(low=int(low), high=int(high), log=current.log)
        else:
            log = bool(getattr(current, "log", True))
            updates[param] = FloatParam(low=float(low), high=float(high), log=log)
    return space_spec.model_copy(update=updates) if updates else space_spec


def warm_start_configs(
    base: GenerationInfo, plan: SweepPlan, spec: SweepSpec, k: int = WARM_START
) -> list[tuple[dict[str, Any], str]]:
    """The ``k`` best configurations of ``base``, as the new space takes them: the batch size
    rescaled by new/old examples (so it keeps its share of the data), every value clamped into
    the new space; with ``"STUDY#TRIAL"`` they came from."""
    from orchestrator.results.table import trial_hyperparameters

    study = load_generation(base, spec)
    done = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
    sign = 1.0 if study.directions[0].name == "MINIMIZE" else -1.0
    ranked = sorted(done, key=lambda t: sign * float(t.values[0] if t.values else 0.0))
    was = fingerprint_of(base)
    n_old = was.train.n_examples if was else None
    n_new = plan.train.n_examples
    found: list[tuple[dict[str, Any], str]] = []
    seen: set[str] = set()
    for trial in ranked:
        if len(found) >= k:
            break
        hp = trial_hyperparameters(trial)
        if "batch_size" in hp and n_old:
            hp["batch_size"] = max(1, round(float(hp["batch_size"]) * n_new / n_old))
        config: dict[str, Any] = {}
        for dim in plan.space.dimensions:
            if dim.kind == "fixed":
                continue
            value = hp.get(dim.name)
            if value is None:
                value = _middle(dim)
            config[dim.name] = _clamp(dim, value)
        key = json.dumps(config, sort_keys=True)
        if key in seen:
            continue
        seen.add(key)
        found.append((config, f"{base.study_name}#{trial.number}"))
    return found


def _middle(dim: Any) -> float:
    if dim.kind == "choice":
        return float(dim.choices[len(dim.choices) // 2])
    lo, hi = float(dim.low), float(dim.high)
    mid = math.sqrt(lo * hi) if dim.log and lo > 0 else (lo + hi) / 2
    return round(mid) if dim.kind == "int" else mid


def _clamp(dim: Any, value: float) -> float:
    if dim.kind == "choice":
        return min(dim.choices, key=lambda c: abs(float(c) - float(value)))  # type: ignore[no-any-return]
    lo, hi = float(dim.low), float(dim.high)
    x = min(max(float(value), lo), hi)
    return round(x) if dim.kind == "int" else x

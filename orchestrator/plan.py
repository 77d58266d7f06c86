"""A sweep before it runs: the spec, its data, its backend, its space, and what it will cost.

Used by ``ftsweep space``, ``ftsweep estimate`` and, later, ``ftsweep run``: every problem that
can be found without training (a bad sweep file, invalid data, a parameter the backend does not
take) is found here, with exit code 2, before anything is uploaded or started.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

from orchestrator.backends.base import Backend
from orchestrator.config import SweepSpec, load_spec
from orchestrator.costs import training_cost, training_price
from orchestrator.data.checks import check_file
from orchestrator.data.findings import DatasetStats, Severity
from orchestrator.errors import DataError, SpecError, UnknownBackendError
from orchestrator.space import SearchSpace, resolve_space

__all__ = ["Estimate", "SweepPlan", "estimate_sweep", "plan_sweep"]


@dataclass(frozen=True)
class SweepPlan:
    spec: SweepSpec
    backend: type[Backend]
    train: DatasetStats
    valid: DatasetStats | None
    space: SearchSpace


def _checked(spec_path: str, field: str, path: Path, model: str, tokens: bool) -> DatasetStats:
    if not path.is_file():
        raise SpecError(spec_path, field, f"no such file: {path}")
    stats, log, _ = check_file(path, model, count_tokens=tokens)
    errors = [f for f in log.findings() if f.severity is Severity.ERROR]
    if errors:
        total = sum(f.count for f in errors)
        more = f" ({total - 1} more errors: run `ftsweep validate {path}`)" if total > 1 else ""
        first = errors[0]
        raise DataError(str(path), first.message + more, first.lines[0] if first.lines else None)
    return stats


def plan_sweep(path: str | os.PathLike[str], *, count_tokens: bool = False) -> SweepPlan:
    """Load the sweep file, check its data, resolve its backend and space."""
    from orchestrator.backends import registry

    shown = str(path)
    spec = load_spec(path)
    try:
        backend = registry.load(spec.backend.name)
    except UnknownBackendError as exc:
        raise SpecError(shown, "backend.name", str(exc)) from None
    model = spec.backend.model
    train = _checked(shown, "data.train", spec.data.train, model, count_tokens)
    valid = None
    if spec.data.valid is not None:
        valid = _checked(shown, "data.valid", spec.data.valid, model, count_tokens)
    metric = spec.objective.metric
    known = backend.metric_names(backend.parse_options(spec.backend.options))
    if metric not in known:
        hint = ""
        if metric in ("full_valid_exact_match", "full_valid_label_accuracy"):
            hint = " (the local trainer reports it with backend option eval_generations: N)"
        raise SpecError(
            shown,
            "objective.metric",
            f"{metric!r} is not reported by backend {backend.name!r}{hint}; "
            f"it reports: {', '.join(sorted(known))}",
        )
    space = resolve_space(spec.space, train.n_examples, backend, shown)
    return SweepPlan(spec, backend, train, valid, space)


@dataclass(frozen=True)
class Estimate:
    """Projected size and cost of a sweep. Costs are None where the backend is free or the
    model has no known price; token counts are None where no tokenizer is known."""

    model: str
    trials: int
    tokens_per_epoch: int | None
    price_per_million: float | None
    epochs: tuple[int, int]
    steps_per_trial: tuple[int, int]
    cost_per_trial: tuple[float, float] | None
    cost_sweep: tuple[float, float] | None
    budget_usd: float | None
    trials_within_budget: int | None


def _range(space: SearchSpace, name: str) -> tuple[int, int]:
    d = space[name]
    if d.kind == "fixed":
        return int(d.value), int(d.value)
    if d.kind == "choice":
        return int(min(d.choices)), int(max(d.choices))
    assert d.low is not None and d.high is not None
    return int(d.low), int(d.high)


def estimate_sweep(plan: SweepPlan) -> Estimate:
    """Tokens, steps and cost range per trial and for the whole sweep."""
    spec, n = plan.spec, plan.train.n_examples
    e_lo, e_hi = _range(plan.space, "n_epochs")
    b_lo, b_hi = _range(plan.space, "batch_size")
    steps = (e_lo * math.ceil(n / b_hi), e_hi * math.ceil(n / b_lo))
    tokens = plan.train.billed_tokens if plan.train.tokens is not None else None
    price = None
    if plan.backend.name != "local":
        price = training_price(spec.backend.model, spec.prices)
    per_trial = sweep = None
    within = None
    if price is not None and tokens is not None:
        per_trial = (training_cost(tokens, e_lo, price), training_cost(tokens, e_hi, price))
        sweep = (round(per_trial[0] * spec.trials, 4), round(per_trial[1] * spec.trials, 4))
        if spec.budget_usd is not None and per_trial[1] > 0:
            within = min(spec.trials, int(spec.budget_usd // per_trial[1]))
    return Estimate(
        model=spec.backend.model,
        trials=spec.trials,
        tokens_per_epoch=tokens,
        price_per_million=price,
        epochs=(e_lo, e_hi),
        steps_per_trial=steps,
        cost_per_trial=per_trial,
        cost_sweep=sweep,
        budget_usd=spec.budget_usd,
        trials_within_budget=within,
    )

"""A sweep's cost in each training tier the backend offers (``ftsweep estimate``).

A tier is a dimension of cost, not of quality: the same trials, priced per tier. The backend
says which tiers its model trains in (:meth:`AzureOpenAIBackend.tiers_for`) and which option
picks one (``training_type``); each is estimated with that option set, by the caller's
``estimate`` (``orchestrator.plan.sweep.estimate_sweep``: the plan is a layer above backends, so it
is passed in, not imported).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

__all__ = ["TierEstimate", "estimate_tiers"]


@dataclass(frozen=True)
class TierEstimate:
    """The sweep's estimate in one tier; ``chosen``: the tier the sweep file picks."""

    tier: str
    chosen: bool
    #: an ``orchestrator.plan.sweep.Estimate``
    estimate: Any


def estimate_tiers(plan: Any, estimate: Callable[[Any], Any]) -> list[TierEstimate]:
    """One ``estimate(plan)`` per tier the plan's model trains in (a ``SweepPlan`` with the
    tier option set), or [] for a backend without tiers."""
    tiers_for = getattr(plan.backend, "tiers_for", None)
    option = getattr(plan.backend, "tier_option", None)
    if tiers_for is None or option is None:
        return []
    chosen = getattr(plan.options, option)
    found = []
    for tier in tiers_for(plan.spec.backend.model):
        options = plan.options.model_copy(update={option: tier})
        found.append(TierEstimate(tier, tier == chosen, estimate(replace(plan, options=options))))
    return found

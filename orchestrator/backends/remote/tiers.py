"""A sweep's cost in each training tier the backend offers (``ftsweep estimate``).

A tier is a dimension of cost, not of quality: the same trials, priced per tier. The backend
says which tiers its model trains in (:meth:`AzureOpenAIBackend.tiers_for`) and which option
picks one (``training_type``); each is estimated with that option set, by the backend's own
:func:`~orchestrator.plan.estimate_sweep`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from orchestrator.plan import Estimate, SweepPlan

__all__ = ["TierEstimate", "estimate_tiers"]


@dataclass(frozen=True)
class TierEstimate:
    """The sweep's estimate in one tier; ``chosen``: the tier the sweep file picks."""

    tier: str
    chosen: bool
    estimate: Estimate


def estimate_tiers(plan: SweepPlan) -> list[TierEstimate]:
    """One estimate per tier the plan's model trains in (empty for a backend without tiers)."""
    from orchestrator.plan import estimate_sweep

    tiers_for = getattr(plan.backend, "tiers_for", None)
    option = getattr(plan.backend, "tier_option", None)
    if tiers_for is None or option is None:
        return []
    chosen = getattr(plan.options, option)
    found = []
    for tier in tiers_for(plan.spec.backend.model):
        options = plan.options.model_copy(update={option: tier})
        found.append(
            TierEstimate(tier, tier == chosen, estimate_sweep(replace(plan, options=options)))
        )
    return found

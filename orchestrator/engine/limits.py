"""A sweep's limits, and which of the study's trials count toward them.

One home for what counts toward ``trials``: the loop's launch decision, the no-op check of a
finished sweep run again and the retry of environment failures all ask :func:`counted`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from orchestrator.core.attrs import TrialAttrs

if TYPE_CHECKING:
    import optuna

__all__ = ["COUNTED_STATES", "Limits", "counted", "running_jobs"]


@dataclass(frozen=True)
class Limits:
    """When a sweep stops starting trials: ``trials`` counted (:func:`counted`), at most
    ``parallel`` at once, after ``timeout_s`` seconds, or once the best value reaches
    ``target``."""

    trials: int
    parallel: int
    timeout_s: float | None = None
    target: float | None = None


#: the states of trials that count toward the limit (see :func:`counted`): every state but
#: WAITING (enqueued, not asked yet)
COUNTED_STATES = ("COMPLETE", "PRUNED", "FAIL", "RUNNING")


def counted(trials: Sequence[optuna.trial.FrozenTrial], before: int | None = None) -> int:
    """Trials toward the limit (numbered below ``before``, if given): finished or running,
    but not those that never started or failed for reasons of the environment (they are
    tried again), nor earlier epochs derived from another trial's job."""
    return sum(
        1
        for t in trials
        if t.state.name in COUNTED_STATES
        and (before is None or t.number < before)
        and TrialAttrs.ENVIRONMENT_FAILURE not in t.user_attrs
        and TrialAttrs.NOT_STARTED not in t.user_attrs
        and TrialAttrs.DERIVED_FROM not in t.user_attrs
    )


def running_jobs(trials: Sequence[optuna.trial.FrozenTrial]) -> int:
    """The study's trials whose job may be at the provider: running, and neither waiting
    for a running twin nor refused before it started."""
    return sum(
        1
        for t in trials
        if t.state.name == "RUNNING"
        and TrialAttrs.SAME_AS not in t.user_attrs
        and TrialAttrs.NOT_STARTED not in t.user_attrs
    )

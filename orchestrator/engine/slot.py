"""One trial in flight, and small helpers over its metric curves."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from orchestrator.backends.base import JobHandle, JobUpdate, TrainingRequest

if TYPE_CHECKING:
    import optuna

__all__ = ["Curves", "Slot", "at", "latest", "short", "state"]

Curves = dict[str, list[tuple[int, float]]]


@dataclass
class Slot:
    """A trial whose job runs: its request, job, MLflow run, poll cursor and curves so far."""

    trial: optuna.Trial
    request: TrainingRequest
    handle: JobHandle
    run_id: str
    cursor: str | None = None
    curves: Curves = field(default_factory=dict)
    skip_until: dict[str, int] = field(default_factory=dict)
    epochs: int = 0
    interval: float = 1.0
    next_poll: float = 0.0
    last_beat: float = 0.0
    pruned: bool = False
    update: JobUpdate | None = None

    @property
    def number(self) -> int:
        return int(self.trial.number)


def state(name: str) -> Any:
    import optuna

    return optuna.trial.TrialState[name]


def latest(curves: Curves, *names: str) -> float | None:
    for name in names:
        if curves.get(name):
            return curves[name][-1][1]
    return None


def at(curves: Curves, step: int, *names: str) -> float | None:
    """The last value at or before ``step`` of the first metric that has one."""
    for name in names:
        before = [v for s, v in curves.get(name, ()) if s <= step]
        if before:
            return before[-1]
    return None


def short(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)

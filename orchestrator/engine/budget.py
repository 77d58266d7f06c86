"""The dollar budget: spent + committed (in-flight estimates) never exceeds the limit.

Several workers share one study's budget: under the launch lock the loop refreshes ``spent``
and ``committed`` from the study (every trial's cost, every running trial's estimate)."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["Budget"]


@dataclass
class Budget:
    """``limit`` None means no budget. ``spent`` counts finished trials (reconciled costs)."""

    limit: float | None = None
    spent: float = 0.0
    committed: dict[int, float] = field(default_factory=dict)

    @property
    def in_flight(self) -> float:
        return sum(self.committed.values())

    def allows(self, estimate: float | None, excluding: int | None = None) -> bool:
        """Would ``estimate`` fit? ``excluding``: a trial whose estimate is committed
        already and is the one asked about."""
        if self.limit is None or estimate is None:
            return True
        mine = self.committed.get(excluding, 0.0) if excluding is not None else 0.0
        return self.spent + self.in_flight - mine + estimate <= self.limit + 1e-9

    def refusal(self, estimate: float | None) -> str:
        total = self.spent + self.in_flight + (estimate or 0.0)
        return (
            f"the next trial (est. ${estimate or 0:.2f}) would bring spent ${self.spent:.2f} + "
            f"committed ${self.in_flight:.2f} to ${total:.2f}, "
            f"over the ${self.limit or 0:.2f} budget"
        )

    def commit(self, trial: int, estimate: float) -> None:
        self.committed[trial] = estimate

    def release(self, trial: int) -> None:
        self.committed.pop(trial, None)

    def spend(self, cost: float) -> None:
        self.spent += cost

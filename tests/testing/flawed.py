"""Backends that break one rule of the contract each, to show that the shipped suite catches
it: the instant backend (:mod:`orchestrator.testing.instant`) with one method changed, as a
third party's mistake would change it. Registered by entry point (:func:`install`)."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path
from typing import ClassVar

from orchestrator.backends.base import EpochEnd, JobHandle, JobUpdate, TrainingRequest
from orchestrator.data.findings import DatasetStats
from orchestrator.testing.instant import InstantBackend


class NoEpochEnds(InstantBackend):
    """Reports no epoch ends (its jobs are never pruned)."""

    name: ClassVar[str] = "no-epoch-ends"

    def poll(self, handle: JobHandle, cursor: str | None = None) -> JobUpdate:
        return replace(super().poll(handle, cursor), epoch_ends=())


class EpochNumbersAsSteps(InstantBackend):
    """Says an epoch ends at the step numbered like the epoch, not at its last step."""

    name: ClassVar[str] = "epoch-numbers-as-steps"

    def poll(self, handle: JobHandle, cursor: str | None = None) -> JobUpdate:
        update = super().poll(handle, cursor)
        ends = tuple(EpochEnd(e.epoch, e.epoch) for e in update.epoch_ends)
        return replace(update, epoch_ends=ends)


class EndsAtTheEnd(InstantBackend):
    """Says every epoch ended at the job's last step, once it has ended."""

    name: ClassVar[str] = "ends-at-the-end"

    def poll(self, handle: JobHandle, cursor: str | None = None) -> JobUpdate:
        update = super().poll(handle, cursor)
        last = update.total_steps or 0
        ends = tuple(EpochEnd(e.epoch, last) for e in update.epoch_ends)
        return replace(update, epoch_ends=ends)


class EndsLostOnReattach(InstantBackend):
    """Reports no epoch ends to a poll with None of an ended job (a re-attach)."""

    name: ClassVar[str] = "ends-lost-on-reattach"

    def poll(self, handle: JobHandle, cursor: str | None = None) -> JobUpdate:
        update = super().poll(handle, cursor)
        lost = cursor is None and update.status.terminal
        return replace(update, epoch_ends=()) if lost else update


class CostOnlyWithACursor(InstantBackend):
    """Reports the job's cost only to a poll with a cursor: a re-attach never sees it."""

    name: ClassVar[str] = "cost-only-with-a-cursor"

    def poll(self, handle: JobHandle, cursor: str | None = None) -> JobUpdate:
        update = super().poll(handle, cursor)
        return update if cursor is not None else replace(update, cost_usd=None)


class NoCost(InstantBackend):
    """Priced, estimates its jobs, but finds no cost for a finished one."""

    name: ClassVar[str] = "no-cost"

    def poll(self, handle: JobHandle, cursor: str | None = None) -> JobUpdate:
        return replace(super().poll(handle, cursor), cost_usd=None)

    def job_cost(
        self, request: TrainingRequest, update: JobUpdate, train: DatasetStats
    ) -> float | None:
        return update.cost_usd


class CostOnlyEstimated(InstantBackend):
    """Priced, but reports no ``cost_usd`` and keeps the default ``job_cost``: every
    finished job is charged its estimate, never what it cost."""

    name: ClassVar[str] = "cost-only-estimated"

    def poll(self, handle: JobHandle, cursor: str | None = None) -> JobUpdate:
        return replace(super().poll(handle, cursor), cost_usd=None)


FLAWED = (
    NoEpochEnds,
    EpochNumbersAsSteps,
    EndsAtTheEnd,
    EndsLostOnReattach,
    CostOnlyWithACursor,
    NoCost,
    CostOnlyEstimated,
)


def install(folder: Path) -> None:
    """Register every flawed backend as an installed distribution's entry points."""
    dist = folder / "ftsweep_flawed-1.0.dist-info"
    dist.mkdir(parents=True, exist_ok=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: ftsweep-flawed\nVersion: 1.0\n")
    lines = [f"{cls.name} = {__name__}:{cls.__name__}" for cls in FLAWED]
    (dist / "entry_points.txt").write_text("[ftsweep.backends]\n" + "\n".join(lines) + "\n")
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

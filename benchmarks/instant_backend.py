"""An instant third-party backend for the overhead benchmarks, registered by entry point.

:func:`install` copies this module into a temporary folder as ``ftsweep_bench_instant`` beside
a real ``*.dist-info`` whose ``entry_points.txt`` names it under ``ftsweep.backends``, and puts
the folder on ``sys.path``: ftsweep discovers it exactly as it would an installed package.

Each poll moves a job by one epoch; a job reports :data:`STEPS` ``train_loss`` points in all
(spread over its epochs) and a ``full_valid_loss`` at each epoch end, from a closed-form
surface. It costs nothing to run, so what a sweep spends is the orchestration alone.
"""

from __future__ import annotations

import math
import shutil
import sys
from pathlib import Path
from typing import ClassVar

from orchestrator.backends.base import (
    DEFAULT_CAPABILITIES,
    Backend,
    Capabilities,
    EpochEnd,
    JobHandle,
    JobStatus,
    JobUpdate,
    MetricPoint,
    TrainingRequest,
)

NAME = "bench-instant"
MODULE = "ftsweep_bench_instant"
#: step metrics per trial (``train_loss``), whatever its number of epochs
STEPS = 100

_JOBS: dict[str, tuple[TrainingRequest, list[int]]] = {}  # key -> (request, [epochs done])


def valid_loss(lr: float, batch_size: int, epoch: int) -> float:
    """Best near a multiplier of 0.1; more epochs help a little."""
    return 1.0 + (math.log10(lr) + 1.0) ** 2 + 1.0 / epoch + 0.001 * batch_size


def points_of(
    n_epochs: int, lr: float, batch_size: int, epoch: int
) -> tuple[list[MetricPoint], int]:
    """The points of one epoch (``train_loss`` steps, ``full_valid_loss`` at its end) and
    its last step."""
    per = STEPS // n_epochs
    first = (epoch - 1) * per + 1
    last = STEPS if epoch == n_epochs else epoch * per
    v = valid_loss(lr, batch_size, epoch)
    pts = [
        MetricPoint(s, "train_loss", v - 0.1 + 0.05 * math.sin(s)) for s in range(first, last + 1)
    ]
    pts.append(MetricPoint(last, "full_valid_loss", v))
    return pts, last


class InstantBenchBackend(Backend):
    """Jobs that finish one epoch per poll, at no cost."""

    name: ClassVar[str] = NAME
    capabilities: ClassVar[Capabilities] = DEFAULT_CAPABILITIES
    poll_interval: tuple[float, float] = (0.0, 0.0)

    def submit(self, request: TrainingRequest) -> JobHandle:
        _JOBS.setdefault(request.key, (request, [0]))
        return JobHandle(self.name, request.key, request.key)

    def find(self, key: str) -> JobHandle | None:
        return JobHandle(self.name, key, key) if key in _JOBS else None

    def poll(self, handle: JobHandle, cursor: str | None = None) -> JobUpdate:
        request, done = _JOBS[handle.job_id]
        hp = request.hyperparameters
        n = hp.n_epochs
        if done[0] < n:
            done[0] += 1
        start = int(cursor or 0)
        pts: list[MetricPoint] = []
        ends: list[EpochEnd] = []
        for epoch in range(start + 1, done[0] + 1):
            new, last = points_of(n, hp.learning_rate_multiplier, hp.batch_size, epoch)
            pts += new
            ends.append(EpochEnd(epoch, last))
        status = JobStatus.SUCCEEDED if done[0] >= n else JobStatus.RUNNING
        return JobUpdate(
            status=status,
            points=tuple(pts),
            cursor=str(done[0]),
            total_steps=STEPS,
            epoch_ends=tuple(ends),
            fine_tuned_model=f"instant:{handle.job_id[:12]}" if status.terminal else None,
        )

    def cancel(self, handle: JobHandle) -> None:
        request, done = _JOBS[handle.job_id]
        done[0] = request.hyperparameters.n_epochs


def install(folder: Path) -> None:
    """Register :class:`InstantBenchBackend` as an installed distribution's entry point."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(__file__, folder / f"{MODULE}.py")
    dist = folder / "ftsweep_bench_instant-1.0.dist-info"
    dist.mkdir(exist_ok=True)
    (dist / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: ftsweep-bench-instant\nVersion: 1.0\n"
    )
    (dist / "entry_points.txt").write_text(
        f"[ftsweep.backends]\n{NAME} = {MODULE}:InstantBenchBackend\n"
    )
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

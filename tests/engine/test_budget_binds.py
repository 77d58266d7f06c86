"""A budget binds for a backend that estimates its jobs' cost and reports neither a cost nor
trained tokens: every finished job is charged (its actual cost if known, else its estimate).

The backend is written as a third party would (only the public contract) and registered by
entry point from a real ``*.dist-info`` folder; the stores are real (SQLite, MLflow).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
import yaml

from orchestrator.backends.base import (
    DEFAULT_CAPABILITIES,
    Backend,
    BackendOptions,
    Capabilities,
    EpochEnd,
    JobHandle,
    JobStatus,
    JobUpdate,
    MetricPoint,
    TrainingRequest,
)
from orchestrator.data.findings import DatasetStats
from orchestrator.testing.instant import FakeClock
from orchestrator.workflows.sweep import Overrides, SweepResult, run_sweep
from tests.helpers import chat_rows, write_jsonl
from tests.reliability.stores import seed_mlflow

JOBS: dict[str, list[Any]] = {}  # key -> [request, epochs done]


class EstimatingOptions(BackendOptions):
    usd_per_job: float = 0.40
    poll_fails: bool = False  # every poll raises (the provider's answer cannot be read)
    cost_fails: bool = False  # job_cost raises (a bug in the backend)


class EstimatingBackend(Backend):
    """Prices a job before it runs; its updates carry no cost and no trained tokens."""

    name: ClassVar[str] = "estimating"
    capabilities: ClassVar[Capabilities] = Capabilities(
        parameters=DEFAULT_CAPABILITIES.parameters, priced=True
    )
    Options: ClassVar[type[BackendOptions]] = EstimatingOptions
    poll_interval: tuple[float, float] = (1.0, 1.0)

    @property
    def opts(self) -> EstimatingOptions:
        assert isinstance(self.options, EstimatingOptions)
        return self.options

    def estimate_cost(self, request: TrainingRequest, train: DatasetStats) -> float | None:
        return self.opts.usd_per_job

    def job_cost(
        self, request: TrainingRequest, update: JobUpdate, train: DatasetStats
    ) -> float | None:
        if self.opts.cost_fails:
            raise KeyError("usd")
        return super().job_cost(request, update, train)

    def submit(self, request: TrainingRequest) -> JobHandle:
        JOBS.setdefault(request.key, [request, 0])
        return JobHandle(self.name, request.key, request.key)

    def find(self, key: str) -> JobHandle | None:
        return JobHandle(self.name, key, key) if key in JOBS else None

    def poll(self, handle: JobHandle, cursor: str | None = None) -> JobUpdate:
        if self.opts.poll_fails:
            raise ValueError("the provider's answer could not be parsed")
        job = JOBS[handle.job_id]
        request: TrainingRequest = job[0]
        n = request.hyperparameters.n_epochs
        job[1] = min(job[1] + 1, n)
        points, ends = [], []
        for epoch in range(int(cursor or 0) + 1, job[1] + 1):
            points.append(MetricPoint(epoch, "train_loss", 2.0 / epoch))
            points.append(MetricPoint(epoch, "full_valid_loss", 2.5 / epoch))
            ends.append(EpochEnd(epoch, epoch))
        status = JobStatus.SUCCEEDED if job[1] >= n else JobStatus.RUNNING
        return JobUpdate(
            status=status, points=tuple(points), cursor=str(job[1]), epoch_ends=tuple(ends)
        )

    def cancel(self, handle: JobHandle) -> None:
        JOBS[handle.job_id][1] = JOBS[handle.job_id][0].hyperparameters.n_epochs


@pytest.fixture
def estimating(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    site = tmp_path / "site"
    dist = site / "estimating_backend-1.0.dist-info"
    dist.mkdir(parents=True)
    meta = "Metadata-Version: 2.1\nName: estimating-backend\nVersion: 1.0\n"
    (dist / "METADATA").write_text(meta)
    (dist / "entry_points.txt").write_text(
        f"[ftsweep.backends]\nestimating = {__name__}:EstimatingBackend\n"
    )
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("FTSWEEP_RUNS_DIR", str(tmp_path / "mlruns"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("FTSWEEP_OPTUNA_STORAGE", raising=False)
    JOBS.clear()
    seed_mlflow(tmp_path / "mlruns")
    yield tmp_path


def _sweep(folder: Path, **options: Any) -> SweepResult:
    data = folder / "data"
    data.mkdir(exist_ok=True)
    spec = {
        "name": "est",
        "data": {
            "train": str(write_jsonl(data / "train.jsonl", chat_rows(20))),
            "valid": str(write_jsonl(data / "valid.jsonl", chat_rows(5, start=50))),
        },
        "backend": {"name": "estimating", "model": "m", "options": options},
        "space": {
            "n_epochs": 2,
            "batch_size": 2,
            "learning_rate_multiplier": {"low": 0.02, "high": 0.2, "log": True},
        },
        "trials": 6,
        "parallel": 1,
        "sampler": {"name": "random", "seed": 1},
    }
    path = folder / "est.yaml"
    path.write_text(yaml.safe_dump(spec))
    clock = FakeClock()
    return run_sweep(
        path,
        Overrides(budget_usd=1.0),
        clock=clock.clock,
        sleep=clock.sleep,
        wall=clock.wall,
    )


def _charged(result: SweepResult) -> list[float | None]:
    return [t.user_attrs.get("ftsweep.cost_usd") for t in result.study.trials]


@pytest.mark.parametrize(
    "options",
    [{}, {"cost_fails": True}, {"poll_fails": True}],
    ids=["no-cost-no-tokens", "job-cost-raises", "no-update-at-all"],
)
def test_a_1_dollar_budget_stops_0_40_dollar_jobs_after_two(
    estimating: Path, options: dict[str, Any]
) -> None:
    result = _sweep(estimating, **options)
    assert len(JOBS) == 2  # the third would bring $0.80 to $1.20
    charged = _charged(result)
    assert charged[:2] == [0.40, 0.40]
    assert sum(c or 0.0 for c in charged) <= 1.0 + 1e-9
    assert result.stop_reason is not None and "over the $1.00 budget" in result.stop_reason
    assert result.stop_reason.startswith("the next trial (est. $0.40) would bring spent $0.80")


def test_a_resumed_sweep_counts_what_was_charged(estimating: Path) -> None:
    """A second run of the same sweep starts nothing: the budget is spent already."""
    _sweep(estimating)
    again = _sweep(estimating)
    assert len(JOBS) == 2
    assert again.stop_reason is not None and "spent $0.80" in again.stop_reason

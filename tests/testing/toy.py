"""``toy``: a third-party backend written against the contract alone (``backends/base.py``).

Its "provider" is a folder: a job is ``jobs/<id>.json`` (its key, total steps, start time and
the step it was cancelled at) and it trains on the wall clock, ``steps_per_second`` steps a
second; ``keys/<sha>`` maps a request's key to its job, so any process finds it again. A file
``busy`` in the folder makes the provider refuse new jobs. Registered under
``ftsweep.backends`` by a dist-info folder the tests put on ``sys.path`` (as ``pip install``
would), never by ftsweep's own ``pyproject.toml``.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
import uuid
from pathlib import Path
from typing import Any, ClassVar

from orchestrator.backends.base import (
    Backend,
    BackendOptions,
    Capabilities,
    JobHandle,
    JobStatus,
    JobUpdate,
    MetricPoint,
    Range,
    TrainingRequest,
    epoch_ends_of,
)
from orchestrator.core.errors import BackendError, ProviderBusyError
from orchestrator.data.findings import DatasetStats


class ToyOptions(BackendOptions):
    steps_per_second: float = 40.0
    usd_per_example_epoch: float = 0.001


class ToyBackend(Backend):
    name = "toy"
    capabilities: ClassVar[Capabilities] = Capabilities(
        parameters={
            "n_epochs": Range(1, 1000),
            "batch_size": Range(1, 64),
            "learning_rate_multiplier": Range(0, 10, low_exclusive=True),
        },
        metrics=frozenset({"train_loss", "epoch"}),
        priced=True,
    )
    Options: ClassVar[type[BackendOptions]] = ToyOptions

    @property
    def _folder(self) -> Path:
        if self.workdir is None:
            raise BackendError("the toy backend needs a workdir")
        return self.workdir

    @property
    def _opts(self) -> ToyOptions:
        assert isinstance(self.options, ToyOptions)
        return self.options

    def _index(self, key: str) -> Path:
        return self._folder / "keys" / hashlib.sha256(key.encode()).hexdigest()

    def _job(self, job_id: str) -> dict[str, Any]:
        path = self._folder / "jobs" / f"{job_id}.json"
        try:
            data: dict[str, Any] = json.loads(path.read_text())
        except FileNotFoundError:
            raise BackendError(f"toy: no job {job_id}") from None
        return data

    def _write(self, path: Path, text: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(text)
        tmp.replace(path)

    def estimate_cost(self, request: TrainingRequest, train: DatasetStats) -> float | None:
        epochs = request.hyperparameters.n_epochs
        return train.n_examples * epochs * self._opts.usd_per_example_epoch

    def submit(self, request: TrainingRequest) -> JobHandle:
        found = self.find(request.key)
        if found is not None:
            return found
        if (self._folder / "busy").exists():
            raise ProviderBusyError("toy: the provider takes no new jobs for now", 60.0)
        n_examples = sum(1 for line in request.train_file.open() if line.strip())
        hp = request.hyperparameters
        per_epoch = math.ceil(n_examples / hp.batch_size)
        job_id = f"toy-{uuid.uuid4().hex[:12]}"
        job = {
            "key": request.key,
            "per_epoch": per_epoch,
            "total": per_epoch * hp.n_epochs,
            "started": time.time(),
            "cancelled_at": None,
        }
        self._write(self._folder / "jobs" / f"{job_id}.json", json.dumps(job))
        self._write(self._index(request.key), job_id)
        return JobHandle(self.name, job_id, request.key)

    def find(self, key: str) -> JobHandle | None:
        try:
            job_id = self._index(key).read_text().strip()
        except FileNotFoundError:
            return None
        return JobHandle(self.name, job_id, key)

    def _done(self, job: dict[str, Any]) -> int:
        if job["cancelled_at"] is not None:
            return int(job["cancelled_at"])
        elapsed = time.time() - float(job["started"])
        return min(int(job["total"]), int(elapsed * self._opts.steps_per_second))

    def poll(self, handle: JobHandle, cursor: str | None = None) -> JobUpdate:
        job = self._job(handle.job_id)
        done, after = self._done(job), int(cursor or 0)
        points = []
        for step in range(after + 1, done + 1):
            points.append(MetricPoint(step, "train_loss", 2.0 / math.sqrt(step)))
            points.append(MetricPoint(step, "epoch", step / job["per_epoch"]))
        if job["cancelled_at"] is not None:
            status = JobStatus.CANCELLED
        elif done >= job["total"]:
            status = JobStatus.SUCCEEDED
        else:
            status = JobStatus.RUNNING if done else JobStatus.QUEUED
        return JobUpdate(
            status,
            tuple(points),
            cursor=str(max(done, after)),
            total_steps=int(job["total"]),
            epoch_ends=epoch_ends_of(points),
        )

    def cancel(self, handle: JobHandle) -> None:
        job = self._job(handle.job_id)
        if self._done(job) >= job["total"] or job["cancelled_at"] is not None:
            return
        job["cancelled_at"] = self._done(job)
        self._write(self._folder / "jobs" / f"{handle.job_id}.json", json.dumps(job))

"""Sweeps on the tiny local model, each in its own stores folder."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from orchestrator.backends.local.jobfiles import JobFolder
from orchestrator.backends.local.tasks import write_task


@pytest.fixture
def runs_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The embedded stores (Optuna, MLflow, job folders) of one test; workers left running
    at the end are killed."""
    root = tmp_path / "mlruns"
    monkeypatch.setenv("FTSWEEP_RUNS_DIR", str(root))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("FTSWEEP_OPTUNA_STORAGE", raising=False)
    yield root
    for pid_file in root.glob("backends/local/jobs/*/pid"):
        record = JobFolder(pid_file.parent).read_pid()
        if record is not None and record.alive():
            os.killpg(record.pid, signal.SIGKILL)


SweepFactory = Callable[..., Path]


@pytest.fixture
def make_sweep(tmp_path: Path, tiny_model: Path, runs_dir: Path) -> SweepFactory:
    """Write a data set of ``task`` and a sweep file on the tiny model; returns its path."""

    def make(
        name: str = "tiny",
        task: str = "reverse",
        n_train: int = 48,
        n_valid: int = 12,
        **fields: object,
    ) -> Path:
        train, valid = write_task(task, tmp_path / "data", n_train=n_train, n_valid=n_valid)
        spec: dict[str, object] = {
            "name": name,
            "data": {"train": str(train), "valid": str(valid)},
            "backend": {"name": "local", "model": "tiny", "options": {"torch_threads": 1}},
            "space": {
                "n_epochs": {"low": 2, "high": 3},
                "batch_size": {"low": 4, "high": 12},
                "learning_rate_multiplier": {"low": 0.5, "high": 3, "log": True},
                "prompt_loss_weight": 0.1,
            },
            "trials": 3,
            "sampler": {"name": "random", "seed": 1},
        }
        spec.update(fields)
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(spec))
        return path

    return make

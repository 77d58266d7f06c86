"""Fixtures for the Azure tests: an in-process apisim, an MLflow store, a sweep file."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml

from orchestrator import apisim
from orchestrator.apisim.server import SimServer
from orchestrator.backends.local.tasks import write_task
from tests.apisim.fixtures import azure_env
from tests.reliability.stores import seed_mlflow

SPEED = 600.0  # simulated seconds per second


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[Callable[..., SimServer]]:
    """Start an apisim (optionally with faults); closed after the test."""
    servers: list[SimServer] = []

    def start(faults: dict[str, Any] | None = None, speed: float = SPEED) -> SimServer:
        server = apisim.start(
            state=tmp_path / f"apisim-{len(servers)}",
            speed=speed,
            faults=apisim.Faults.from_dict(faults) if faults else None,
        )
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


@pytest.fixture
def remote_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    root = tmp_path / "mlruns"
    monkeypatch.setenv("FTSWEEP_RUNS_DIR", str(root))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    for var in ("AZURE_OPENAI_SURFACE", "OPENAI_API_VERSION", "AZURE_OPENAI_AD_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    seed_mlflow(root)
    yield root


def azure_spec(
    tmp_path: Path,
    server: SimServer,
    monkeypatch: pytest.MonkeyPatch,
    *,
    surface: str = "v1",
    options: dict[str, Any] | None = None,
    model: str = "gpt-4.1-mini",
    **fields: Any,
) -> Path:
    """An azure sweep file on ``server`` (its variables set), 40/12 chat examples."""
    for var, value in azure_env(server, surface).items():
        monkeypatch.setenv(var, value)
    train, valid = write_task("tickets", tmp_path / "data", n_train=40, n_valid=12, fmt="chat")
    spec: dict[str, Any] = {
        "name": "azure-test",
        "data": {"train": str(train), "valid": str(valid)},
        "backend": {
            "name": "azure",
            "model": model,
            "options": {"poll_interval": [0.05, 0.3], **(options or {})},
        },
        "trials": 3,
        "parallel": 2,
        "sampler": {"name": "random", "seed": 0},
    }
    spec.update(fields)
    path = tmp_path / "azure.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def study(root: Path, name: str = "azure-test") -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{root / 'optuna.db'}")

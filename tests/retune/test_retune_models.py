"""Retuning on a provider's model list (apisim through the real SDK): a newly listed snapshot
of an aliased model starts a new generation on it; a base model already shut down is refused
with the date and the replacement."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from orchestrator import apisim
from orchestrator.apisim.server import SimServer
from orchestrator.backends.local.tasks import write_task
from orchestrator.core.errors import SpecError
from orchestrator.workflows.retune import retune
from tests.apisim.fixtures import azure_env, openai_env
from tests.reliability.stores import seed_mlflow

TODAY = dt.date(2026, 12, 1)  # before OpenAI's stop on 2027-01-06, whenever the suite runs


@pytest.fixture
def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[SimServer]:
    root = tmp_path / "mlruns"
    monkeypatch.setenv("FTSWEEP_RUNS_DIR", str(root))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("FTSWEEP_OPTUNA_STORAGE", raising=False)
    seed_mlflow(root)
    with apisim.start(state=tmp_path / "apisim", speed=600.0) as sim:
        sim.sim.today = lambda: TODAY  # type: ignore[method-assign]
        yield sim


def _spec(tmp_path: Path, server: SimServer, monkeypatch: pytest.MonkeyPatch, backend: str,
          model: str) -> Path:  # fmt: skip
    env = openai_env(server) if backend == "openai" else azure_env(server)
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    train, valid = write_task("tickets", tmp_path / "data", n_train=40, n_valid=12, fmt="chat")
    spec: dict[str, Any] = {
        "name": f"nightly-{backend}",
        "data": {"train": str(train), "valid": str(valid)},
        "backend": {"name": backend, "model": model, "options": {"poll_interval": [0.05, 0.3]}},
        "trials": 2,
        "parallel": 2,
        "sampler": {"name": "random", "seed": 0},
    }
    path = tmp_path / "nightly.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def _trained(server: SimServer) -> list[str]:
    """The base model of each job the provider has, in the order they were created."""
    return [j.model for j in sorted(server.sim.jobs.values(), key=lambda j: j.nth)]


@pytest.mark.parametrize("backend", ["openai", "azure"])
def test_a_new_snapshot_of_the_aliased_model_starts_a_generation(
    tmp_path: Path, server: SimServer, monkeypatch: pytest.MonkeyPatch, backend: str
) -> None:
    spec = _spec(tmp_path, server, monkeypatch, backend, "gpt-4o-mini@latest")
    first = retune(spec, today=TODAY)
    assert first.action == "first" and first.completed
    assert set(_trained(server)) == {"gpt-4o-mini-2024-07-18"}
    same = retune(spec, today=TODAY)
    assert same.action == "unchanged", same.message
    assert len(_trained(server)) == 2

    api = "openai" if backend == "openai" else "azure"
    server.sim.add_model("gpt-4o-mini-2026-11-20", created=1_795_000_000, api=api)
    newer = retune(spec, today=TODAY)
    assert newer.action == "started", newer.message
    assert newer.changes == (
        "base model: gpt-4o-mini-2024-07-18 -> gpt-4o-mini-2026-11-20 (gpt-4o-mini@latest)",
    )
    # the warm start (the previous best) and what the sampler proposes: all on the new model
    assert _trained(server)[2:] and set(_trained(server)[2:]) == {"gpt-4o-mini-2026-11-20"}
    assert newer.sweep is not None
    assert newer.sweep.study.user_attrs["ftsweep.previous_study"] == f"nightly-{backend}"


def test_a_base_model_already_shut_down_is_refused(
    tmp_path: Path, server: SimServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = _spec(tmp_path, server, monkeypatch, "openai", "gpt-4.1-nano-2025-04-14")
    with pytest.raises(SpecError) as refused:
        retune(spec, today=TODAY)
    text = str(refused.value)
    assert "gpt-4.1-nano-2025-04-14 was shut down on 2026-10-23" in text
    assert "put gpt-4.1-mini-2025-04-14 in backend.model" in text
    assert _trained(server) == []
    assert not (tmp_path / "mlruns" / "optuna.db").exists()


def test_openai_takes_no_jobs_after_its_stop(
    tmp_path: Path, server: SimServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = _spec(tmp_path, server, monkeypatch, "openai", "gpt-4.1-mini-2025-04-14")
    with pytest.raises(SpecError, match="OpenAI takes no new fine-tuning jobs since 2027-01-06"):
        retune(spec, today=dt.date(2027, 1, 7))

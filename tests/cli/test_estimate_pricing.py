"""``ftsweep estimate`` shows a price as the backend charges it: per 1M tokens when its
estimate grows with the billed tokens, per job when it does not."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from orchestrator.testing import instant
from tests.conftest import Result
from tests.helpers import chat_rows, write_jsonl

Cli = Callable[..., Result]
SPACE = {
    "n_epochs": {"low": 2, "high": 4},
    "batch_size": 2,
    "learning_rate_multiplier": {"low": 0.05, "high": 0.2, "log": True},
}


@pytest.fixture
def stores(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The embedded stores' folder (estimate must leave it absent); instant registered."""
    instant.install(tmp_path / "site")
    monkeypatch.setenv("FTSWEEP_RUNS_DIR", str(tmp_path / "mlruns"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("FTSWEEP_OPTUNA_STORAGE", raising=False)
    return tmp_path / "mlruns"


def _spec(tmp_path: Path, backend: dict[str, Any], **fields: Any) -> Path:
    spec = {
        "name": "pricing",
        "data": {"train": str(write_jsonl(tmp_path / "train.jsonl", chat_rows(40)))},
        "backend": backend,
        "space": SPACE,
        "trials": 5,
        "sampler": {"name": "random", "seed": 0},
        **fields,
    }
    path = tmp_path / "pricing.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def _row(out: str, name: str) -> str:
    rows = [line for line in out.splitlines() if line.split("  ", 1)[0].strip() == name]
    assert len(rows) == 1, out
    return rows[0].split("  ", 1)[1].strip()


def test_a_price_per_job_is_shown_per_job(cli: Cli, tmp_path: Path, stores: Path) -> None:
    options = {"price_per_epoch": 0.2}  # a job's price grows with its epochs, not its tokens
    spec = _spec(tmp_path, {"name": "instant", "model": "m", "options": options})
    r = cli("estimate", spec)
    assert r.code == 0, r.err
    assert _row(r.out, "price") == "$0.40 – $0.80 per job"
    assert _row(r.out, "cost per trial") == "$0.40 – $0.80"
    assert "per 1M tokens" not in r.out
    est = json.loads(cli("estimate", spec, "--json").out)
    assert (est["price_basis"], est["price_per_million"]) == ("job", None)
    assert est["cost_per_trial"] == [0.4, 0.8]
    assert not stores.exists()


def test_a_price_per_token_is_shown_per_1m_tokens(
    cli: Cli, tmp_path: Path, stores: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-never-used")  # estimate reaches nobody
    spec = _spec(tmp_path, {"name": "openai", "model": "gpt-4o-mini"}, prices={"gpt-4o-mini": 10.0})
    r = cli("estimate", spec)
    assert r.code == 0, r.err
    assert _row(r.out, "price") == "$10.00 per 1M tokens"
    est = json.loads(cli("estimate", spec, "--json").out)
    assert (est["price_basis"], est["price_per_million"]) == ("tokens", 10.0)
    assert not stores.exists()


def test_a_free_backend_shows_no_price(cli: Cli, tmp_path: Path, stores: Path) -> None:
    r = cli("estimate", _spec(tmp_path, {"name": "instant", "model": "m"}))
    assert r.code == 0, r.err
    assert _row(r.out, "price") == "-"
    assert _row(r.out, "cost per trial") == "-"

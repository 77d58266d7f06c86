"""Each provider refusal reaches the user as one line naming the cause and the fix, with the
right exit code, no traceback, and nothing half-done (no job created, no key shown)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from orchestrator import apisim
from orchestrator.backends.base import Hyperparameters, TrainingRequest
from orchestrator.backends.remote.azure import AzureOpenAIBackend
from orchestrator.core.errors import ProviderAuthError
from tests.apisim.fixtures import AZURE_KEY, openai_env, request_log
from tests.azure.conftest import azure_spec
from tests.helpers import chat_rows, write_jsonl

MISLEADING = "The specified base model does not support fine-tuning."


def _one_line(err: str) -> str:
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    return lines[0]


def _no_job(server: Any) -> None:
    assert server.sim.jobs == {}
    assert all(e["status"] >= 400 for e in request_log(server, "jobs.create"))


def test_an_organisation_no_longer_allowed_to_fine_tune(
    cli, tmp_path: Path, sim, remote_runs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    message = (
        "This organization is not allowed to create fine-tuning jobs any more: "
        "self-serve fine-tuning is winding down."
    )
    fault = {"op": "jobs.create", "status": 403, "message": message, "times": 0}
    server = sim({"requests": [fault]})
    spec = azure_spec(tmp_path, server, monkeypatch)
    for var, value in openai_env(server).items():
        monkeypatch.setenv(var, value)
    data = yaml.safe_load(spec.read_text())
    data["backend"] = {"name": "openai", "model": "gpt-4o-mini", "options": {}}
    spec.write_text(yaml.safe_dump(data))
    r = cli("run", spec)
    assert r.code == 1
    line = _one_line(r.err)
    assert "does not allow fine-tuning for this account" in line and "check" in line
    _no_job(server)


def test_a_model_the_region_does_not_fine_tune(
    cli, tmp_path: Path, sim, remote_runs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = sim()
    server.sim.add_model("gpt-4.1-mini-2025-04-14", fine_tunable=False, api="azure")
    spec = azure_spec(tmp_path, server, monkeypatch, model="gpt-4.1-mini-2025-04-14")
    r = cli("run", spec)
    assert r.code == 1
    line = _one_line(r.err)
    assert "refused to fine-tune gpt-4.1-mini-2025-04-14" in line
    assert "region" in line and "fix:" in line and "training_type" in line
    _no_job(server)


def test_a_model_outside_its_tiers_or_unknown_is_refused_before_anything_runs(
    cli, tmp_path: Path, sim, remote_runs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = sim()
    spec = azure_spec(
        tmp_path, server, monkeypatch, model="gpt-oss-20b", options={"training_type": "standard"}
    )
    r = cli("run", spec)
    assert r.code == 2
    line = _one_line(r.err)
    # issue 24: the open-weight models train on Global and Data zone (no longer Developer)
    assert "backend.model" in line and "Global and Data zone" in line
    assert "backend.options.training_type" in line
    unknown = azure_spec(tmp_path, server, monkeypatch, model="gpt-5-turbo")
    r = cli("estimate", unknown)
    assert r.code == 2
    line = _one_line(r.err)
    assert "gpt-5-turbo" in line and "gpt-4.1-mini" in line and "Ministral-3B" in line
    assert "backend.options.prices" in line
    assert request_log(server) == []  # nothing reached the provider
    priced = azure_spec(
        tmp_path, server, monkeypatch, model="gpt-5-turbo", options={"prices": {"gpt-5-turbo": 7}}
    )
    r = cli("estimate", priced)
    assert r.code == 0, r.err
    assert "$7.00 per 1M tokens" in r.out


def test_a_missing_training_type_gets_azures_misleading_message_explained(
    cli, tmp_path: Path, sim, remote_runs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An Azure API that did not take the trainingType answers as if the model could not be
    fine-tuned: the message says what that usually means and what to change."""
    fault = {"op": "jobs.create", "api": "azure", "status": 400, "message": MISLEADING, "times": 0}
    server = sim({"requests": [fault]})
    spec = azure_spec(tmp_path, server, monkeypatch, surface="dated")
    r = cli("run", spec)
    assert r.code == 1
    line = _one_line(r.err)
    assert MISLEADING in line and "trainingType" in line and "v1 surface" in line
    _no_job(server)


def test_the_resources_job_quota_used_up(
    cli, tmp_path: Path, sim, remote_runs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = sim({"azure_quota": {"total": 0}})
    r = cli("run", azure_spec(tmp_path, server, monkeypatch))
    assert r.code == 1
    line = _one_line(r.err)
    assert "quota is used up" in line and "delete finished jobs" in line
    _no_job(server)


def test_an_expired_key_does_not_refresh(
    cli, tmp_path: Path, sim, remote_runs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = sim()
    spec = azure_spec(tmp_path, server, monkeypatch)
    monkeypatch.setenv("AZURE_OPENAI_API_KEY", "expired-" + AZURE_KEY)
    r = cli("run", spec)
    assert r.code == 1
    line = _one_line(r.err)
    assert "rejected the credentials" in line and "a key does not refresh" in line
    assert AZURE_KEY not in r.err
    assert request_log(server, "files.create") == []
    _no_job(server)


def test_entra_without_azure_identity_names_the_extra(
    cli, tmp_path: Path, sim, remote_runs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    try:  # azure-identity is an optional extra, not installed here
        import azure.identity  # noqa: F401

        pytest.skip("azure-identity is installed")
    except ImportError:
        pass
    server = sim()
    spec = azure_spec(tmp_path, server, monkeypatch, options={"auth": "entra"})
    r = cli("run", spec)
    assert r.code == 1
    line = _one_line(r.err)
    assert "azure-identity" in line and "pip install 'ftsweep[azure]'" in line
    assert request_log(server) == []


@pytest.mark.parametrize("surface", ["v1", "dated"])
def test_entra_tokens_refresh_an_expired_one_is_replaced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, surface: str
) -> None:
    """A fake token provider (passed as the SDK's ``azure_ad_token_provider``) whose first
    token has expired: the backend asks it again and the job is created once."""
    server = apisim.start(state=tmp_path / "state", speed=100.0)
    try:
        monkeypatch.delenv("AZURE_OPENAI_API_KEY", raising=False)
        monkeypatch.setenv("AZURE_OPENAI_ENDPOINT", server.url)
        tokens = iter(["expired-0", *(f"fresh-{i}" for i in range(1000))])
        asked: list[str] = []

        def provider() -> str:
            asked.append(next(tokens))
            return asked[-1]

        backend = AzureOpenAIBackend(
            token_provider=provider, workdir=tmp_path / "work", surface=surface
        )
        backend.preflight()
        train = write_jsonl(tmp_path / "train.jsonl", chat_rows(20))
        request = TrainingRequest("key-1", "gpt-4o-mini", Hyperparameters(2, 4, 0.1), train)
        handle = backend.submit(request)
        assert asked[0] == "expired-0" and len(asked) > 2
        assert list(server.sim.jobs) == [handle.job_id]
        assert backend.submit(request) == handle  # idempotent

        def stale() -> str:
            return "expired-always"

        refused = AzureOpenAIBackend(token_provider=stale, surface=surface)
        with pytest.raises(ProviderAuthError, match="Entra ID sign-in"):
            refused.preflight()
    finally:
        server.close()

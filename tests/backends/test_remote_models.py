"""``list_models`` and aliases on the ``openai`` and ``azure`` backends, through the real SDK
against ``ftsweep apisim``: shutdown dates and fine-tunability mapped from each provider's
shape, errors like every other call, an alias resolved at submit."""

from __future__ import annotations

import datetime
from dataclasses import replace
from pathlib import Path

import pytest

from orchestrator.backends.base import Backend, ModelInfo
from orchestrator.backends.local import LocalBackend
from orchestrator.backends.remote import ProviderAuthError, ProviderUnreachableError
from orchestrator.backends.remote.models import model_info_of, parse_date
from orchestrator.core.errors import UsageError
from tests.apisim.fixtures import chat_data, request_log
from tests.backends.test_remote_backends import Remote, _dead_port, make_request, remote, run

__all__ = ["chat_data", "remote"]

D = datetime.date


def test_list_models_maps_each_providers_shape(remote: Remote) -> None:
    models = {m.id: m for m in remote.backend().list_models()}
    mini = models["gpt-4.1-mini-2025-04-14"]
    assert mini.created == 1744588800  # 2025-04-14, as the simulator lists it
    if remote.name == "openai":  # shutdown_date YYYY-MM-DD; no fine-tunable flag
        assert mini == ModelInfo("gpt-4.1-mini-2025-04-14", 1744588800, D(2027, 1, 14), None)
        assert models["gpt-4.1-nano-2025-04-14"].shutdown_date == D(2026, 10, 23)
        assert models["babbage-002"].shutdown_date is None
    else:  # deprecation.fine_tune (unix seconds) and capabilities.fine_tune
        assert mini == ModelInfo("gpt-4.1-mini-2025-04-14", 1744588800, D(2027, 4, 14), True)
        assert models["gpt-4o-mini-2024-07-18"].shutdown_date is None
        assert "gpt-35-turbo-0125" in models
    assert [(e["op"], e["status"]) for e in request_log(remote.server)] == [("models.list", 200)]


def test_a_released_snapshot_and_a_shutdown_show_up(remote: Remote) -> None:
    sim = remote.server.sim
    sim.add_model("gpt-4o-mini-2026-11-20", created=1795000000, api=remote.name)
    sim.add_model("gpt-4.1-2025-04-14", shutdown_date=D(2026, 12, 31), api=remote.name)
    models = {m.id: m for m in remote.backend().list_models()}
    assert models["gpt-4o-mini-2026-11-20"].created == 1795000000
    assert models["gpt-4o-mini-2026-11-20"].shutdown_date is None
    assert models["gpt-4.1-2025-04-14"].shutdown_date == D(2026, 12, 31)


def test_list_models_retries_and_fails_like_every_call(
    remote: Remote, monkeypatch: pytest.MonkeyPatch
) -> None:
    remote.faults(requests=[{"op": "models.list", "status": 503, "times": 2}])
    assert remote.backend().list_models()
    assert remote.sleeps == [1.0, 2.0]
    remote.faults(requests=[{"op": "models.list", "status": 401, "code": "invalid_api_key"}])
    with pytest.raises(ProviderAuthError, match="rejected the credentials"):
        remote.backend().list_models()
    url = f"http://127.0.0.1:{_dead_port()}" + ("/v1" if remote.name == "openai" else "")
    monkeypatch.setenv(remote.address_variable, url)
    with pytest.raises(ProviderUnreachableError, match="connection refused"):
        remote.backend(connect_timeout=1.0).list_models()


def test_an_alias_is_resolved_at_submit(remote: Remote, chat_data: tuple[Path, Path]) -> None:
    remote.server.sim.add_model("gpt-4o-mini-2026-11-20", created=1795000000, api=remote.name)
    backend = remote.backend()
    request = replace(make_request("alias", chat_data, n_epochs=1), model="gpt-4o-mini@latest")
    backend.check(request)  # checks and prices treat the alias as its family
    assert backend.price(request.model) == backend.price("gpt-4o-mini")
    handle = backend.submit(request)
    job = remote.server.sim.jobs[handle.job_id]
    assert job.model == "gpt-4o-mini-2026-11-20"
    assert run(remote, backend, handle)[-1].status.terminal
    # the key still finds that job, after a newer snapshot too
    remote.server.sim.add_model("gpt-4o-mini-2027-02-01", created=1800000000, api=remote.name)
    assert remote.backend().submit(request) == handle


def test_an_alias_whose_snapshots_are_shut_down_is_refused_before_anything_is_spent(
    remote: Remote, chat_data: tuple[Path, Path]
) -> None:
    request = replace(make_request("gone", chat_data), model="gpt-4.1-nano@latest")
    today = D(2026, 12, 1) if remote.name == "openai" else D(2027, 5, 1)
    with pytest.raises(UsageError) as caught:
        remote.backend(today=lambda: today).submit(request)
    when = "2026-10-23" if remote.name == "openai" else "2027-04-14"
    replacement = (
        "put gpt-4.1-mini-2025-04-14 in backend.model"
        if remote.name == "openai"
        else "the provider lists no later snapshot: name another base model in backend.model"
    )
    assert str(caught.value).startswith(
        f"gpt-4.1-nano@latest: base model gpt-4.1-nano-2025-04-14 was shut down on {when}"
    )
    assert str(caught.value).endswith(replacement)
    assert not remote.server.sim.jobs and not remote.server.sim.files
    with pytest.raises(UsageError, match="no snapshot of gpt-5"):
        remote.backend().submit(replace(request, model="gpt-5@latest"))


def test_the_local_backend_has_no_model_list() -> None:
    assert LocalBackend.list_models is Backend.list_models


def test_model_objects_are_read_tolerantly() -> None:
    assert model_info_of({"id": "m", "created": 5, "shutdown_date": "2027-01-14"}) == ModelInfo(
        "m", 5, D(2027, 1, 14)
    )
    azure = {
        "id": "a",
        "created_at": 7,
        "capabilities": {"fine_tune": False},
        "deprecation": {"inference": 1807660800},
    }
    assert model_info_of(azure) == ModelInfo("a", 7, D(2027, 4, 14), False)
    odd = {"id": "b", "created": "x", "shutdown_date": "soon", "capabilities": [], "deprecation": 3}
    assert model_info_of(odd) == ModelInfo("b")
    assert model_info_of({"created": 1}) is None
    assert parse_date(True) is None and parse_date(float("nan")) is None
    assert parse_date("2027-01-14T00:00:00Z") == D(2027, 1, 14)

"""The simulator's model lists: the admin API, persistence, and refusing jobs on models that
are shut down (the way the provider refuses them)."""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import Any
from urllib.error import HTTPError
from urllib.request import Request, urlopen

import pytest

from orchestrator import apisim
from orchestrator.apisim.server import SimServer
from tests.apisim import openapi
from tests.apisim.test_apisim_spec import call, upload


def admin(server: SimServer, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = Request(f"{server.url}{path}", data=data, method=method)
    request.add_header("Content-Type", "application/json")
    try:
        with urlopen(request) as response:  # loopback only
            return response.status, json.load(response)
    except HTTPError as exc:
        return exc.code, json.load(exc)


def _create(server: SimServer, train: str, model: str, *, azure: bool = False) -> tuple[int, Any]:
    return call(
        server,
        "POST",
        "/fine_tuning/jobs",
        {"model": model, "training_file": train},
        azure=azure,
    )


def test_admin_reads_replaces_and_adds_entries(sim_server: SimServer) -> None:
    status, listed = admin(sim_server, "GET", "/_sim/models")
    assert status == 200 and listed["api"] == "openai"
    assert {"id", "created", "owned_by", "shutdown_date", "fine_tunable"} == set(listed["data"][0])
    new = {"id": "gpt-4o-mini-2026-11-20", "created": 1795000000, "shutdown_date": None,
           "owned_by": "system"}  # fmt: skip
    status, after = admin(sim_server, "POST", "/_sim/models", new)
    assert status == 200 and after["data"][-1] == {**new, "fine_tunable": True}
    _, got = call(sim_server, "GET", "/models/gpt-4o-mini-2026-11-20")
    openapi.validate(got, openapi.response_schema("/models/{model}", "get"))
    # POST of a known id updates it in place (no duplicate)
    admin(sim_server, "POST", "/_sim/models", {**new, "shutdown_date": "2028-01-01"})
    _, listed = call(sim_server, "GET", "/models")
    mine = [m for m in listed["data"] if m["id"] == new["id"]]
    assert [m["shutdown_date"] for m in mine] == ["2028-01-01"]
    status, replaced = admin(sim_server, "PUT", "/_sim/models", {"data": [{"id": "only-one"}]})
    assert status == 200 and [e["id"] for e in replaced["data"]] == ["only-one"]
    _, listed = call(sim_server, "GET", "/models")
    assert [m["id"] for m in listed["data"]] == ["only-one"]
    # Azure's list is its own
    _, azure = admin(sim_server, "GET", "/_sim/models?api=azure")
    assert "gpt-35-turbo-0125" in {e["id"] for e in azure["data"]}
    admin(sim_server, "POST", "/_sim/models?api=azure", {"id": "gpt-4.1-mini-2026-11-20"})
    _, listed = call(sim_server, "GET", "/models", azure=True)
    assert "gpt-4.1-mini-2026-11-20" in {m["id"] for m in listed["data"]}


@pytest.mark.parametrize(
    ("method", "path", "body", "problem"),
    [
        ("POST", "/_sim/models", {"id": ""}, "model.id: a model id"),
        ("POST", "/_sim/models", {"id": "m", "shutdown_date": "2027-13-01"}, "shutdown_date"),
        ("POST", "/_sim/models", {"id": "m", "shutdown_date": 1807660800}, "shutdown_date"),
        ("POST", "/_sim/models", {"id": "m", "created": "yesterday"}, "model.created"),
        ("POST", "/_sim/models", {"id": "m", "fine_tunable": "yes"}, "model.fine_tunable"),
        ("POST", "/_sim/models", {"id": "m", "colour": 1}, "model.colour: unknown field"),
        ("POST", "/_sim/models", {"id": "a/b"}, "cannot be a model id"),
        ("PUT", "/_sim/models", {"data": {"id": "m"}}, "data: expected a list"),
        ("PUT", "/_sim/models", {"models": []}, '{"data": [model entries]}'),
        ("PUT", "/_sim/models", {"data": [{"id": "m"}, {"id": 3}]}, "data.1.id"),
        ("GET", "/_sim/models?api=gcp", None, "api: expected one of openai, azure"),
    ],
)
def test_a_bad_entry_is_refused_and_the_list_stays(
    sim_server: SimServer, method: str, path: str, body: Any, problem: str
) -> None:
    _, before = admin(sim_server, "GET", "/_sim/models")
    status, error = admin(sim_server, method, path, body)
    assert status == 400, error
    assert problem in error["error"]["message"]
    _, after = admin(sim_server, "GET", "/_sim/models")
    assert after == before


def test_the_list_persists_with_the_state(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with apisim.start(state=state, speed=0) as server:
        server.sim.add_model("gpt-4o-mini-2026-11-20", created=1795000000)
        server.sim.add_model(
            "gpt-4.1-2025-04-14", shutdown_date=datetime.date(2027, 3, 1), api="azure"
        )
    with apisim.start(state=state, speed=0) as server:
        ids = [e["id"] for e in server.sim.base_models("openai")]
        assert ids[-1] == "gpt-4o-mini-2026-11-20"
        azure = {e["id"]: e for e in server.sim.base_models("azure")}
        assert azure["gpt-4.1-2025-04-14"]["shutdown_date"] == "2027-03-01"


def test_jobs_on_a_shut_down_model_are_refused(
    sim_server: SimServer, chat_data: tuple[Path, Path]
) -> None:
    train = upload(sim_server, chat_data[0])["id"]
    status, error = _create(sim_server, train, "gpt-4.1-nano-2025-04-14")  # 2026-10-23
    assert status == 400
    openapi.validate(error, openapi.component("ErrorResponse"))
    assert error["error"] == {
        "message": "Model gpt-4.1-nano-2025-04-14 is not available for fine-tuning: it was shut "
        "down on 2026-10-23.",
        "type": "invalid_request_error",
        "param": "model",
        "code": "model_not_available",
    }
    # a listed model whose date has not come, and names the list does not hold, still run
    sim_server.sim.today = lambda: datetime.date(2026, 12, 1)
    assert _create(sim_server, train, "gpt-4o-mini-2024-07-18")[0] == 200
    assert _create(sim_server, train, "gpt-4o-mini")[0] == 200
    assert _create(sim_server, train, "gpt-4.1-nano")[0] == 200  # undated: not in the list
    # on the shutdown day itself the model is gone
    sim_server.sim.today = lambda: datetime.date(2027, 1, 14)
    status, error = _create(sim_server, train, "gpt-4o-mini-2024-07-18")
    assert status == 400 and "shut down on 2027-01-14" in error["error"]["message"]
    # an alias is the client's to resolve: the provider knows no such model
    status, error = _create(sim_server, train, "gpt-4o-mini@latest")
    assert status == 400 and error["error"]["code"] == "model_not_available"
    # a model the list marks as not fine-tunable is refused too
    sim_server.sim.add_model("gpt-4o-2024-08-06", fine_tunable=False)
    status, error = _create(sim_server, train, "gpt-4o-2024-08-06")
    assert status == 400 and error["error"]["code"] == "model_not_available"


def test_azure_refuses_a_retired_model_its_way(
    sim_server: SimServer, chat_data: tuple[Path, Path]
) -> None:
    train = upload(sim_server, chat_data[0], azure=True)["id"]
    sim_server.sim.today = lambda: datetime.date(2027, 4, 14)
    status, error = _create(sim_server, train, "gpt-4.1-mini-2025-04-14", azure=True)
    assert status == 400
    assert error == {
        "error": {
            "code": "invalidPayload",
            "message": "The specified base model does not support fine-tuning. (fine-tuning "
            "retired on 2027-04-14)",
            "target": "model",
        }
    }
    status, _ = _create(sim_server, train, "gpt-4o-mini-2024-07-18", azure=True)  # no date
    assert status == 201


def test_model_requests_are_logged_and_take_faults(sim_server: SimServer) -> None:
    admin(sim_server, "PUT", "/_sim/faults", {"requests": [{"op": "models.*", "status": 503}]})
    status, _ = call(sim_server, "GET", "/models")
    assert status == 503
    status, _ = call(sim_server, "GET", "/models")
    assert status == 200
    _, log = admin(sim_server, "GET", "/_sim/requests?op=models.list")
    assert [e["status"] for e in log["data"]] == [503, 200]

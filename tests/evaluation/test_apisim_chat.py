"""apisim's chat completions and Azure deployments refuse what the providers refuse, in their
error shapes, over real HTTP (the success paths: ``test_evaluate_remote.py``)."""

from __future__ import annotations

import json
from typing import Any
from urllib.error import HTTPError
from urllib.request import Request, urlopen

from orchestrator.apisim.server import SimServer
from tests.apisim.fixtures import AZURE_KEY, OPENAI_KEY, sim_server  # noqa: F401


def _send(server: SimServer, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    headers = {"Content-Type": "application/json"}
    if path.startswith("/openai"):
        headers["api-key"] = AZURE_KEY
    else:
        headers["Authorization"] = f"Bearer {OPENAI_KEY}"
    data = None if body is None else json.dumps(body).encode()
    request = Request(server.url + path, data=data, method=method, headers=headers)
    try:
        with urlopen(request) as response:  # loopback only
            raw = response.read()
            return response.status, json.loads(raw) if raw else None
    except HTTPError as err:
        return err.code, json.loads(err.read())


def test_chat_and_deployment_refusals(sim_server: SimServer) -> None:  # noqa: F811
    say = {"model": "ft:gpt-4o-mini:org::nope", "messages": [{"role": "user", "content": "hi"}]}
    status, body = _send(sim_server, "POST", "/v1/chat/completions", say)
    assert (status, body["error"]["code"]) == (404, "model_not_found")
    status, body = _send(sim_server, "POST", "/v1/chat/completions", {"model": "x"})
    assert (status, body["error"]["param"]) == (400, "messages")
    status, body = _send(sim_server, "POST", "/openai/v1/chat/completions", {**say, "model": "d"})
    assert (status, body["error"]["code"]) == (404, "DeploymentNotFound")
    status, body = _send(sim_server, "GET", "/openai/v1/deployments/d")
    assert (status, body["error"]["code"]) == (404, "DeploymentNotFound")
    deploy = {"sku": {"name": "DeveloperTier"}, "properties": {"model": {"name": "ft:x"}}}
    status, body = _send(sim_server, "PUT", "/openai/v1/deployments/d", {"sku": {}})
    assert status == 400 and "properties.model.name" in body["error"]["message"]
    status, body = _send(sim_server, "PUT", "/openai/v1/deployments/d", {**deploy, "sku": {}})
    assert status == 400 and "sku.name" in body["error"]["message"]
    status, body = _send(sim_server, "PUT", "/openai/v1/deployments/d", deploy)
    assert status == 404  # no succeeded job made that model
    status, body = _send(sim_server, "PUT", "/v1/deployments/d", deploy)
    assert status == 404  # OpenAI has no deployments

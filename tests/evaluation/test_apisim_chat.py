"""apisim's chat completions and Azure's ARM deployments refuse what the providers refuse, in their
error shapes, over real HTTP (the success paths: ``test_evaluate_remote.py``)."""

from __future__ import annotations

import json
from typing import Any
from urllib.error import HTTPError
from urllib.request import Request, urlopen

from orchestrator.apisim.server import SimServer
from tests.apisim.fixtures import AZURE_KEY, OPENAI_KEY, sim_server  # noqa: F401

#: an ARM deployment's path in apisim (any subscription, group and account)
ARM = "/subscriptions/s1/resourceGroups/rg/providers/Microsoft.CognitiveServices/accounts/res"
V = "?api-version=2025-06-01"


def _send(
    server: SimServer, method: str, path: str, body: Any = None, bearer: str | None = None
) -> tuple[int, Any]:
    headers = {"Content-Type": "application/json"}
    if bearer is not None:
        headers["Authorization"] = f"Bearer {bearer}"
    elif path.startswith("/openai"):
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
    deploy = {"sku": {"name": "DeveloperTier"}, "properties": {"model": {"name": "ft:x"}}}
    # deployments are the control plane's (ARM), not the data plane's
    status, body = _send(sim_server, "PUT", "/openai/v1/deployments/d", deploy)
    assert status == 404
    status, body = _send(sim_server, "GET", f"{ARM}/deployments/d{V}", bearer="t")
    assert (status, body["error"]["code"]) == (404, "DeploymentNotFound")
    status, body = _send(sim_server, "PUT", f"{ARM}/deployments/d{V}", {"sku": {}}, "t")
    assert status == 400 and "properties.model.name" in body["error"]["message"]
    status, body = _send(sim_server, "PUT", f"{ARM}/deployments/d{V}", {**deploy, "sku": {}}, "t")
    assert status == 400 and "sku.name" in body["error"]["message"]
    status, body = _send(sim_server, "PUT", f"{ARM}/deployments/d{V}", deploy, bearer="t")
    assert status == 404  # no succeeded job made that model
    # ARM takes a bearer token only, and an api-version
    status, body = _send(sim_server, "PUT", f"{ARM}/deployments/d{V}", deploy, bearer="")
    assert (status, body["error"]["code"]) == (401, "AuthenticationFailed")
    status, body = _send(sim_server, "GET", f"{ARM}/deployments/d{V}", bearer="expired-t")
    assert (status, body["error"]["code"]) == (401, "ExpiredAuthenticationToken")
    status, body = _send(sim_server, "GET", f"{ARM}/deployments/d", bearer="t")
    assert (status, body["error"]["code"]) == (400, "MissingApiVersionParameter")
    status, body = _send(sim_server, "GET", f"/subscriptions/s1/files{V}", bearer="t")
    assert status == 404  # only deployments on the control plane
    status, body = _send(sim_server, "DELETE", f"{ARM}/deployments/d{V}", bearer="t")
    assert (status, body) == (204, None)  # ARM: deleting what is not there succeeds

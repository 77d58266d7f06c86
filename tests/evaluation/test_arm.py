"""Deployments through Azure Resource Manager (:mod:`orchestrator.backends.remote.arm`):
options and token checked first, ARM's refusals in one line, a failed delete a warning (the
success path against apisim: ``test_evaluate_remote.py``)."""

from __future__ import annotations

import io
import json
from typing import Any
from urllib.request import Request, urlopen

import pytest

from orchestrator.apisim.server import SimServer
from orchestrator.backends.remote.arm import (
    ArmDeployments,
    ArmTarget,
    account_of,
    management_token,
    model_format,
)
from orchestrator.core.errors import (
    BackendError,
    ProviderAuthError,
    ProviderUnreachableError,
    UsageError,
)
from tests.apisim.fixtures import sim_server  # noqa: F401


def _target(url: str) -> ArmTarget:
    return ArmTarget("sub-1", "rg-1", "res", url)


def test_options_come_from_options_then_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("AZURE_SUBSCRIPTION_ID", "AZURE_RESOURCE_GROUP"):
        monkeypatch.delenv(var, raising=False)
    given: dict[str, Any] = {
        "subscription_id": None,
        "resource_group": None,
        "account": None,
        "management_endpoint": None,
        "endpoint": "https://my-res.openai.azure.com",
    }
    with pytest.raises(UsageError, match=r"backend\.options\.subscription_id or export AZURE_SUB"):
        ArmTarget.resolve(**given)
    monkeypatch.setenv("AZURE_SUBSCRIPTION_ID", "s")
    with pytest.raises(UsageError, match=r"resource_group or export AZURE_RESOURCE_GROUP$"):
        ArmTarget.resolve(**given)
    monkeypatch.setenv("AZURE_RESOURCE_GROUP", "g")
    target = ArmTarget.resolve(**given)
    assert target == ArmTarget("s", "g", "my-res", "https://management.azure.com")
    assert target.url("d") == (
        "https://management.azure.com/subscriptions/s/resourceGroups/g/providers/"
        "Microsoft.CognitiveServices/accounts/my-res/deployments/d"
    )
    mine = ArmTarget.resolve(**{**given, "resource_group": "rg", "account": "other"})
    assert (mine.resource_group, mine.account) == ("rg", "other")
    assert account_of("https://x.cognitiveservices.azure.com/") == "x"
    assert [model_format(m) for m in ("gpt-4o-mini", "Ministral-3B", "Llama-3.3-70B")] == [
        "OpenAI",
        "Mistral AI",
        "Meta",
    ]


def test_token_from_the_environment_or_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AZURE_MANAGEMENT_TOKEN", "tok")
    assert management_token()() == "tok"

    def signed_out() -> str:
        raise RuntimeError("DefaultAzureCredential failed to retrieve a token\nmore")

    said = r"\(DefaultAzureCredential failed to retrieve a token\): sign in \(az login\) or "
    with pytest.raises(ProviderAuthError, match=said + "export AZURE_MANAGEMENT_TOKEN$"):
        management_token(signed_out)


def test_refusals_are_one_line_and_a_failed_delete_a_warning(
    sim_server: SimServer,  # noqa: F811
) -> None:
    arm = ArmDeployments(_target(sim_server.url), lambda: "tok")
    warned: list[str] = []
    with (
        pytest.raises(BackendError, match=r"^azure: create deployment d: HTTP 404 .*ft:x"),
        arm.deployed("d", "ft:x", warn=warned.append),
    ):
        pass
    assert warned == []  # nothing was made: its delete is a 204
    faults = {"requests": [{"op": "deployments.delete", "status": 500, "times": 0}]}
    body = json.dumps(faults).encode()
    put = Request(f"{sim_server.url}/_sim/faults", data=body, method="PUT")
    put.add_header("Content-Type", "application/json")
    urlopen(put).close()  # loopback only
    with pytest.raises(BackendError), arm.deployed("d", "ft:x", warn=warned.append):
        pass
    assert len(warned) == 1 and "delete deployment d of res by hand" in warned[0]
    expired = ArmDeployments(_target(sim_server.url), lambda: "expired-tok")
    with pytest.raises(ProviderAuthError, match="HTTP 401 ExpiredAuthenticationToken"):
        expired.state("d")
    gone = ArmDeployments(_target("http://127.0.0.1:9"), lambda: "tok", timeout=2)
    with pytest.raises(ProviderUnreachableError, match=r"management_endpoint$"):
        gone.state("d")


class _Arm:
    """ARM at the outermost edge: a deployment whose GETs report ``states`` in turn."""

    def __init__(self, *states: str) -> None:
        self.states = list(states)
        self.seen: list[str] = []

    def __call__(self, request: Request, timeout: float) -> Any:
        self.seen.append(f"{request.get_method()} {request.full_url}")
        assert request.get_header("Authorization") == "Bearer tok"
        state = self.states.pop(0) if len(self.states) > 1 else self.states[0]
        return io.BytesIO(json.dumps({"properties": {"provisioningState": state}}).encode())


def test_wait_is_bounded_and_ends_on_failed() -> None:
    now = [0.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    arm = ArmDeployments(
        _target("https://arm.test"), lambda: "tok", wait=10.0, poll=(1.0, 4.0),
        opener=_Arm("Creating"), sleep=sleep, clock=lambda: now[0],
    )  # fmt: skip
    with pytest.raises(BackendError, match=r"^azure: deployment d not ready after 10 s \(state "
                       r"Creating\); raise backend.options.deployment_wait$"):  # fmt: skip
        arm.wait_ready("d")
    assert slept == [1.0, 2.0, 4.0, 4.0]
    ended = _Arm("Creating", "Failed")
    arm = ArmDeployments(_target("https://arm.test"), lambda: "tok", opener=ended, sleep=sleep)
    with pytest.raises(BackendError, match="deployment d ended Failed"):
        arm.wait_ready("d")
    assert ended.seen[0] == (
        "GET https://arm.test/subscriptions/sub-1/resourceGroups/rg-1/providers/"
        "Microsoft.CognitiveServices/accounts/res/deployments/d?api-version=2025-06-01"
    )

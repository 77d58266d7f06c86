"""Fixtures around an in-process ``ftsweep apisim`` (import them where they are needed).

Plug the OpenAI and Azure backends into the shipped contract suite with, in
``tests/backends/conftest.py``::

    from tests.apisim.fixtures import azure_case, openai_case  # noqa: F401

and ``BACKENDS = ["local", "openai", "azure"]`` in ``tests/backends/test_contract.py``.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from orchestrator import apisim
from orchestrator.apisim.server import SimServer
from orchestrator.backends.base import Hyperparameters, TrainingRequest
from orchestrator.testing import BackendCase
from tests.helpers import chat_rows, write_jsonl

OPENAI_KEY = "sk-apisim-test-9f8e7d6c5b4a39281706"
AZURE_KEY = "az-apisim-test-0a1b2c3d4e5f60718293"
AZURE_VERSION = "2024-10-21"
#: simulated seconds per real second for the contract cases: a short job ends in ~0.1 s,
#: a long one runs ~2.5 s
CONTRACT_SPEED = 200.0
#: seconds a contract case's backend waits out 429s before raising ProviderBusyError (the
#: default, 300, would make the busy-provider test wait minutes)
CONTRACT_MAX_WAIT = 1.0


def _server(state: Path, speed: float, faults: dict[str, Any] | None = None) -> SimServer:
    return apisim.start(
        state=state, speed=speed, faults=apisim.Faults.from_dict(faults) if faults else None
    )


@pytest.fixture
def sim_server(tmp_path: Path) -> Iterator[SimServer]:
    """A simulator whose clock moves only when a test advances it (speed 0)."""
    server = _server(tmp_path / "apisim-state", 0.0)
    yield server
    server.close()


@pytest.fixture
def chat_data(tmp_path: Path) -> tuple[Path, Path]:
    """30 training and 6 validation chat examples."""
    folder = tmp_path / "data"
    folder.mkdir(exist_ok=True)
    return (
        write_jsonl(folder / "train.jsonl", chat_rows(30)),
        write_jsonl(folder / "valid.jsonl", chat_rows(6, start=100)),
    )


def openai_env(server: SimServer) -> dict[str, str]:
    return {"OPENAI_API_KEY": OPENAI_KEY, "OPENAI_BASE_URL": server.url + "/v1"}


def azure_env(server: SimServer, surface: str = "v1") -> dict[str, str]:
    """Azure's variables: the v1 surface (the default), or ``dated`` (2024-10-21)."""
    env = {"AZURE_OPENAI_API_KEY": AZURE_KEY, "AZURE_OPENAI_ENDPOINT": server.url}
    if surface == "dated":
        env.update({"AZURE_OPENAI_SURFACE": "dated", "OPENAI_API_VERSION": AZURE_VERSION})
    return env


def _admin(server: SimServer, method: str, path: str, body: Any = None) -> Any:
    """One call of the simulator's admin API (``/_sim/...``), over HTTP like any client."""
    from urllib.request import Request, urlopen

    data = None if body is None else json.dumps(body).encode()
    request = Request(f"{server.url}{path}", data=data, method=method)
    request.add_header("Content-Type", "application/json")
    with urlopen(request) as response:  # loopback only
        return json.load(response)


@contextlib.contextmanager
def provider_busy(server: SimServer) -> Iterator[None]:
    """While inside, every job create answers 429 ``daily_rate_limit_exceeded`` with a
    ``retry-after`` far beyond any backend's wait; the faults before are restored after."""
    before = _admin(server, "GET", "/_sim/faults")
    busy = {
        "op": "jobs.create",
        "status": 429,
        "code": "daily_rate_limit_exceeded",
        "retry_after": 3600,
        "times": 0,
    }
    _admin(server, "PUT", "/_sim/faults", {**before, "requests": [busy, *before["requests"]]})
    try:
        yield
    finally:
        _admin(server, "PUT", "/_sim/faults", before)


def _case(
    name: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[BackendCase]:
    server = _server(tmp_path / f"{name}-state", CONTRACT_SPEED)
    backend, _, surface = name.partition("-")
    env = openai_env(server) if name == "openai" else azure_env(server, surface or "v1")
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    train = write_jsonl(tmp_path / f"{name}-train.jsonl", chat_rows(20))
    valid = write_jsonl(tmp_path / f"{name}-valid.jsonl", chat_rows(5, start=50))

    def request(key: str, n_epochs: int, batch_size: int) -> TrainingRequest:
        hp = Hyperparameters(n_epochs, batch_size, 0.1)
        return TrainingRequest(key, "gpt-4o-mini", hp, train, valid, seed=7)

    options: dict[str, Any] = {"max_wait": CONTRACT_MAX_WAIT}
    if name == "openai":
        options["base_url"] = server.url + "/v1"
    yield BackendCase(
        name=backend,
        options=options,
        workdir=tmp_path / f"{name}-work",
        short_request=lambda key: request(key, 2, 4),
        long_request=lambda key: request(key, 50, 1),
        env=env,
        timeout_s=30.0,
        busy=lambda: provider_busy(server),
    )
    server.close()


@pytest.fixture
def openai_case(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[BackendCase]:
    """The ``openai`` backend against an in-process apisim (contract-suite case)."""
    yield from _case("openai", tmp_path, monkeypatch)


@pytest.fixture
def azure_case(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[BackendCase]:
    """The ``azure`` backend against an in-process apisim (contract-suite case)."""
    yield from _case("azure", tmp_path, monkeypatch)


@pytest.fixture
def azure_dated_case(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[BackendCase]:
    """The ``azure`` backend on the dated ``api-version`` surface (contract-suite case)."""
    yield from _case("azure-dated", tmp_path, monkeypatch)


def request_log(server: SimServer, op: str | None = None) -> list[dict[str, Any]]:
    """The simulator's request log, read over HTTP like any client would."""
    from urllib.request import urlopen

    query = f"?op={op}" if op else ""
    with urlopen(f"{server.url}/_sim/requests{query}") as response:  # loopback only
        data: list[dict[str, Any]] = json.load(response)["data"]
    return data

"""``ftsweep run`` checks the provider and the stores before the first trial.

A missing or refused key, a dead provider address, a tracking server or database that does
not answer: each is one ``error:`` line and exit 1 within seconds, before a study exists, a
trial is asked or a file is uploaded. Through the public CLI, against a real ``ftsweep
apisim`` on a loopback port and real closed ports.
"""

from __future__ import annotations

import importlib.util
import socket
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from orchestrator import apisim
from orchestrator.apisim.server import SimServer
from orchestrator.backends.local.tasks import write_task
from tests.apisim.fixtures import AZURE_KEY, OPENAI_KEY, azure_env, openai_env, request_log

SPEED = 600.0
PROVIDER_VARS = (
    "OPENAI_API_KEY",
    "OPENAI_BASE_URL",
    "OPENAI_ORG_ID",
    "OPENAI_PROJECT_ID",
    "AZURE_OPENAI_API_KEY",
    "AZURE_OPENAI_ENDPOINT",
    "OPENAI_API_VERSION",
)


def dead_port() -> int:
    """A loopback port nothing listens on: bound, then closed."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[Callable[..., SimServer]]:
    servers: list[SimServer] = []

    def start(faults: dict[str, Any] | None = None) -> SimServer:
        server = apisim.start(
            state=tmp_path / f"apisim-{len(servers)}",
            speed=SPEED,
            faults=apisim.Faults.from_dict(faults) if faults else None,
        )
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


@pytest.fixture
def runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty ``FTSWEEP_RUNS_DIR``, the default stores under it, no provider variables."""
    root = tmp_path / "mlruns"
    monkeypatch.setenv("FTSWEEP_RUNS_DIR", str(root))
    for var in ("MLFLOW_TRACKING_URI", "FTSWEEP_OPTUNA_STORAGE", *PROVIDER_VARS):
        monkeypatch.delenv(var, raising=False)
    return root


def use(monkeypatch: pytest.MonkeyPatch, env: dict[str, str], *without: str) -> None:
    for var, value in env.items():
        if var not in without:
            monkeypatch.setenv(var, value)


def sweep(tmp_path: Path, backend: str, **options: Any) -> Path:
    train, valid = write_task("tickets", tmp_path / "data", n_train=40, n_valid=12, fmt="chat")
    spec = {
        "name": f"preflight-{backend}",
        "data": {"train": str(train), "valid": str(valid)},
        "backend": {
            "name": backend,
            "model": "gpt-4o-mini",
            "options": {"poll_interval": [0.05, 0.3], **options},
        },
        "trials": 2,
        "parallel": 1,
        "sampler": {"name": "random", "seed": 0},
    }
    path = tmp_path / f"{backend}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def nothing_made(runs: Path) -> None:
    """No study and no MLflow store: the run stopped before opening either."""
    made = sorted(p.name for p in runs.rglob("*")) if runs.exists() else []
    assert "optuna.db" not in made and "mlflow.db" not in made, made


def env_of(backend: str, server: SimServer) -> dict[str, str]:
    return openai_env(server) if backend == "openai" else azure_env(server)


# -- credentials --------------------------------------------------------------------------------
MISSING = {
    ("openai", "OPENAI_API_KEY"): (
        "error: OPENAI_API_KEY is not set: export it to use the openai backend"
    ),
    ("azure", "AZURE_OPENAI_ENDPOINT"): (
        "error: AZURE_OPENAI_ENDPOINT is not set: export it (or set backend.options.endpoint) "
        "to use the azure backend"
    ),
    ("azure", "AZURE_OPENAI_API_KEY"): (
        "error: AZURE_OPENAI_API_KEY is not set: export it to use the azure backend "
        "(or pip install azure-identity to sign in with Entra ID)"
    ),
}


@pytest.mark.parametrize(("backend", "variable"), list(MISSING))
def test_a_missing_credential_is_one_line_before_anything_exists(
    cli,
    tmp_path: Path,
    sim,
    runs: Path,
    monkeypatch: pytest.MonkeyPatch,
    backend: str,
    variable: str,
) -> None:
    if variable == "AZURE_OPENAI_API_KEY" and importlib.util.find_spec("azure") is not None:
        pytest.skip("azure-identity is installed: Entra ID sign-in is tried instead")
    server = sim()
    use(monkeypatch, env_of(backend, server), variable)
    r = cli("run", sweep(tmp_path, backend))
    assert r.code == 1
    assert r.err.strip() == MISSING[backend, variable]
    assert r.out == ""
    nothing_made(runs)
    assert request_log(server) == []  # not one request reached the provider


@pytest.mark.parametrize(
    ("backend", "line"),
    [
        ("openai", "error: openai rejected the credentials (HTTP 401 invalid_api_key): "
         "check OPENAI_API_KEY"),
        ("azure", "error: azure rejected the credentials (HTTP 401 unauthorized): "
         "check AZURE_OPENAI_API_KEY (a key does not refresh: export a current key from the "
         "resource's Keys and Endpoint page) and AZURE_OPENAI_ENDPOINT"),
    ],
)  # fmt: skip
def test_a_refused_key_is_one_line_and_no_trial(
    cli, tmp_path: Path, sim, runs: Path, monkeypatch: pytest.MonkeyPatch, backend: str, line: str
) -> None:
    server = sim({"requests": [{"op": "*", "status": 401, "code": "invalid_api_key", "times": 0}]})
    use(monkeypatch, env_of(backend, server))
    r = cli("run", sweep(tmp_path, backend))
    assert r.code == 1
    assert r.err.strip() == line
    nothing_made(runs)
    assert [(e["op"], e["status"]) for e in request_log(server)] == [("jobs.list", 401)]
    assert OPENAI_KEY not in r.err and AZURE_KEY not in r.err


def test_an_organization_without_fine_tuning_is_named(
    cli, tmp_path: Path, sim, runs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    refusal = "Your organization org-abc123 is not allowed to create fine-tuning jobs."
    server = sim({"requests": [{"op": "*", "status": 403, "message": refusal, "times": 0}]})
    use(monkeypatch, openai_env(server))
    r = cli("run", sweep(tmp_path, "openai"))
    assert r.code == 1
    assert r.err.strip() == (
        f"error: openai does not allow fine-tuning for this account (HTTP 403: {refusal}): "
        "check the key's organization and project (OPENAI_ORG_ID / OPENAI_PROJECT_ID)"
    )
    nothing_made(runs)


# -- the provider's address -----------------------------------------------------------------------
@pytest.mark.parametrize("backend", ["openai", "azure"])
def test_a_dead_address_is_one_line_within_seconds(
    cli, tmp_path: Path, sim, runs: Path, monkeypatch: pytest.MonkeyPatch, backend: str
) -> None:
    port = dead_port()
    server = sim()
    use(monkeypatch, env_of(backend, server))
    if backend == "openai":
        url = f"http://127.0.0.1:{port}/v1"
        monkeypatch.setenv("OPENAI_BASE_URL", url)
        setting = "OPENAI_BASE_URL / backend.options.base_url"
    else:
        url = f"http://127.0.0.1:{port}"
        monkeypatch.setenv("AZURE_OPENAI_ENDPOINT", url)
        setting = "AZURE_OPENAI_ENDPOINT / backend.options.endpoint"
    started = time.monotonic()
    r = cli("run", sweep(tmp_path, backend, connect_timeout=1))
    took = time.monotonic() - started
    assert r.code == 1
    assert r.err.strip() == f"error: cannot reach {url}: connection refused (set {setting})"
    assert took < 8, f"{took:.1f} s"
    nothing_made(runs)


def test_connect_timeout_is_checked_like_any_option(
    cli, tmp_path: Path, sim, runs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    use(monkeypatch, openai_env(sim()))
    spec = sweep(tmp_path, "openai", connect_timeout=0)
    r = cli("run", spec)
    assert r.code == 2
    assert r.err.strip() == (
        f"error: {spec}: backend.options.connect_timeout: input should be greater than 0"
    )


# -- the stores ---------------------------------------------------------------------------------
def test_an_unreachable_tracking_server_is_one_line_within_seconds(
    cli, tmp_path: Path, sim, runs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = sim()
    use(monkeypatch, openai_env(server))
    port = dead_port()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{port}")
    started = time.monotonic()
    r = cli("run", sweep(tmp_path, "openai"))
    took = time.monotonic() - started
    assert r.code == 1
    assert r.err.strip() == (
        f"error: cannot reach the MLflow tracking server at http://127.0.0.1:{port}: "
        "connection refused (check MLFLOW_TRACKING_URI / storage.mlflow)"
    )
    assert took < 10, f"{took:.1f} s"
    nothing_made(runs)
    assert request_log(server, "jobs.create") == [] and request_log(server, "files.create") == []


class _Failing(BaseHTTPRequestHandler):
    """A proxy whose tracking server behind it is down: 502 to everything."""

    hits = 0

    def do_GET(self) -> None:
        type(self).hits += 1
        self.send_response(502)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def test_a_tracking_server_answering_502_is_unreachable(
    cli, tmp_path: Path, sim, runs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    proxy = ThreadingHTTPServer(("127.0.0.1", 0), _Failing)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    try:
        use(monkeypatch, openai_env(sim()))
        url = f"http://127.0.0.1:{proxy.server_address[1]}/mlflow"
        monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://user:hunter2@{url[7:]}")
        r = cli("run", sweep(tmp_path, "openai"))
    finally:
        proxy.shutdown()
        proxy.server_close()
    assert r.code == 1
    assert r.err.strip() == (
        f"error: cannot reach the MLflow tracking server at {url}: it answers HTTP 502 "
        "(check MLFLOW_TRACKING_URI / storage.mlflow)"
    )
    assert _Failing.hits == 2  # two tries, then it gave up
    assert "hunter2" not in r.err


def test_an_unreachable_database_is_named_without_its_password(
    cli, tmp_path: Path, sim, runs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    use(monkeypatch, openai_env(sim()))
    port = dead_port()
    monkeypatch.setenv("FTSWEEP_OPTUNA_STORAGE", f"postgresql://ftsweep:s3cret@127.0.0.1:{port}/sw")
    started = time.monotonic()
    r = cli("run", sweep(tmp_path, "openai"))
    assert r.code == 1
    assert r.err.strip() == (
        f"error: cannot reach the Optuna storage at postgresql://ftsweep:***@127.0.0.1:{port}/sw: "
        "connection refused"
    )
    assert "s3cret" not in r.err
    assert time.monotonic() - started < 10
    nothing_made(runs)


def test_mlflow_http_retries_are_bounded_unless_the_user_set_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from mlflow.environment_variables import (
        MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR,
        MLFLOW_HTTP_REQUEST_MAX_RETRIES,
        MLFLOW_HTTP_REQUEST_TIMEOUT,
    )

    from orchestrator.stores.study import MLFLOW_HTTP_DEFAULTS, bound_mlflow_retries

    names = {
        MLFLOW_HTTP_REQUEST_MAX_RETRIES.name,
        MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR.name,
        MLFLOW_HTTP_REQUEST_TIMEOUT.name,
    }
    assert set(MLFLOW_HTTP_DEFAULTS) == names  # the names MLflow reads
    for name in names:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "300")
    bound_mlflow_retries()
    assert MLFLOW_HTTP_REQUEST_MAX_RETRIES.get() == 2
    assert MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR.get() == 1
    assert MLFLOW_HTTP_REQUEST_TIMEOUT.get() == 300  # the user's own value stays

"""What the azure backend puts on the wire to authenticate, on both surfaces it speaks (v1 and
the dated ``api-version`` one), seen by a recording proxy in front of apisim over real HTTP:
a key travels in ``api-key`` (and nowhere a redirect to another origin would carry it), an
Entra ID token as a bearer with no ``api-key`` at all, and the key shows in no log, error or
file."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator import apisim
from orchestrator.apisim.server import SimServer
from orchestrator.backends.base import Hyperparameters, TrainingRequest
from orchestrator.backends.remote.azure import AzureOpenAIBackend
from orchestrator.core.errors import ProviderAuthError
from tests.apisim.fixtures import AZURE_KEY, request_log
from tests.azure.wire import Wire
from tests.helpers import chat_rows, write_jsonl

SURFACES = ["v1", "dated"]


@pytest.fixture
def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[SimServer]:
    for var in ("AZURE_OPENAI_SURFACE", "OPENAI_API_VERSION", "AZURE_OPENAI_AD_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    s = apisim.start(state=tmp_path / "apisim", speed=0.0)  # jobs wait: cancel is sent
    yield s
    s.close()


@pytest.fixture
def wire(server: SimServer) -> Iterator[Wire]:
    w = Wire(server.url)
    yield w
    w.close()


def _request(tmp_path: Path, key: str = "auth-1") -> TrainingRequest:
    train = write_jsonl(tmp_path / "train.jsonl", chat_rows(20))
    valid = write_jsonl(tmp_path / "valid.jsonl", chat_rows(6, start=50))
    return TrainingRequest(key, "gpt-4.1-mini", Hyperparameters(2, 4, 0.1), train, valid)


def _work(backend: AzureOpenAIBackend, request: TrainingRequest) -> None:
    """Every kind of call: preflight, uploads, create, poll (events, checkpoints), cancel."""
    backend.preflight()
    handle = backend.submit(request)
    backend.poll(handle)
    backend.cancel(handle)


@pytest.mark.parametrize("surface", SURFACES)
def test_a_key_travels_in_the_api_key_header(
    tmp_path: Path,
    server: SimServer,
    wire: Wire,
    monkeypatch: pytest.MonkeyPatch,
    surface: str,
) -> None:
    monkeypatch.setenv("AZURE_OPENAI_ENDPOINT", wire.url)
    monkeypatch.setenv("AZURE_OPENAI_API_KEY", AZURE_KEY)
    _work(AzureOpenAIBackend(surface=surface, workdir=tmp_path / "work"), _request(tmp_path))
    prefix = "/openai/v1/" if surface == "v1" else "/openai/"
    assert all(sent.path.startswith(prefix) for sent in wire.sent)
    assert {"files.create", "jobs.create", "jobs.cancel"} <= {e["op"] for e in request_log(server)}
    assert len(wire.sent) == len(request_log(server)) >= 6
    assert all(sent.api_key == AZURE_KEY for sent in wire.sent)
    if surface == "dated":  # AzureOpenAI sends the key as api-key only
        assert all(sent.authorization is None for sent in wire.sent)
    else:  # the SDK adds its api_key as a bearer, which Azure's v1 surface takes too
        assert all(sent.authorization == f"Bearer {AZURE_KEY}" for sent in wire.sent)


@pytest.mark.parametrize("surface", SURFACES)
def test_an_entra_token_travels_as_a_bearer_and_the_key_stays_home(
    tmp_path: Path,
    server: SimServer,
    wire: Wire,
    monkeypatch: pytest.MonkeyPatch,
    surface: str,
) -> None:
    monkeypatch.setenv("AZURE_OPENAI_ENDPOINT", wire.url)
    monkeypatch.setenv("AZURE_OPENAI_API_KEY", AZURE_KEY)  # set, but Entra ID is asked for
    issued: list[str] = []

    def provider() -> str:
        issued.append(f"entra-token-{len(issued)}")
        return issued[-1]

    backend = AzureOpenAIBackend(
        token_provider=provider, surface=surface, workdir=tmp_path / "work", auth="entra"
    )
    _work(backend, _request(tmp_path))
    assert len(wire.sent) >= 6 and len(issued) >= len(wire.sent)
    assert all(sent.api_key is None for sent in wire.sent)
    assert all(sent.authorization in {f"Bearer {t}" for t in issued} for sent in wire.sent)


@pytest.mark.parametrize("surface", SURFACES)
def test_a_redirect_to_another_origin_carries_no_key(
    tmp_path: Path,
    server: SimServer,
    wire: Wire,
    monkeypatch: pytest.MonkeyPatch,
    surface: str,
) -> None:
    """The endpoint answers 307 to another origin (``wire``, a different port): the client
    follows it without the key, so apisim sees no credential and refuses."""
    redirecting = Wire(server.url, redirect_to=wire.url)
    try:
        monkeypatch.setenv("AZURE_OPENAI_ENDPOINT", redirecting.url)
        monkeypatch.setenv("AZURE_OPENAI_API_KEY", AZURE_KEY)
        backend = AzureOpenAIBackend(surface=surface, workdir=tmp_path / "work")
        with pytest.raises(ProviderAuthError) as refused:
            backend.preflight()
        assert AZURE_KEY not in str(refused.value)
        assert redirecting.sent and all(s.api_key == AZURE_KEY for s in redirecting.sent)
        assert wire.sent, "the redirect was not followed"
        assert all(s.api_key is None and s.authorization is None for s in wire.sent)
    finally:
        redirecting.close()


@pytest.mark.parametrize("surface", SURFACES)
def test_the_key_shows_in_no_log_error_or_file(
    tmp_path: Path,
    server: SimServer,
    wire: Wire,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    surface: str,
) -> None:
    caplog.set_level(logging.DEBUG)  # the SDK's and httpx's debug logs included
    monkeypatch.setenv("AZURE_OPENAI_ENDPOINT", wire.url)
    monkeypatch.setenv("AZURE_OPENAI_API_KEY", AZURE_KEY)
    work = tmp_path / "work"
    _work(AzureOpenAIBackend(surface=surface, workdir=work), _request(tmp_path))
    expired = "expired-" + AZURE_KEY
    monkeypatch.setenv("AZURE_OPENAI_API_KEY", expired)
    with pytest.raises(ProviderAuthError) as refused:
        AzureOpenAIBackend(surface=surface, workdir=work).submit(_request(tmp_path, "auth-2"))
    assert wire.sent[-1].api_key == expired  # it reached the provider, and was refused
    assert "a key does not refresh" in str(refused.value)
    shown = [str(refused.value), repr(refused.value), caplog.text]
    shown += [str(e) for e in request_log(server)]
    assert caplog.records and request_log(server)
    assert not [text for text in shown if AZURE_KEY in text]
    files = [p for root in (work, tmp_path / "apisim") for p in root.rglob("*") if p.is_file()]
    assert files and not [p for p in files if AZURE_KEY.encode() in p.read_bytes()]

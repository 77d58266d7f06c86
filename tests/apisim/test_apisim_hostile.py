"""Hostile HTTP: malformed requests, bodies and fault configurations get a 4xx in the API's
error shape, never a 500 or a dropped connection; a bad fault configuration leaves the
previous one in place. Raw sockets for what no client library would send."""

from __future__ import annotations

import http.client
import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openai import OpenAI

from orchestrator import apisim
from orchestrator.apisim.body import Limits, parse_form, parse_json
from orchestrator.apisim.errors import ApiError
from orchestrator.apisim.faults import Faults
from orchestrator.apisim.server import SimServer
from orchestrator.apisim.simulator import Simulator
from orchestrator.core.errors import UsageError
from tests.apisim import openapi
from tests.apisim.fixtures import AZURE_KEY, AZURE_VERSION, OPENAI_KEY
from tests.apisim.test_apisim_spec import call

AUTH = f"Authorization: Bearer {OPENAI_KEY}\r\n"


def raw(
    server: SimServer, data: bytes, *, shut: bool = False, wait: float = 10.0
) -> tuple[int, dict[str, str], Any]:
    """Send ``data`` as is; the parsed answer: status, headers (lower-case), JSON body."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=wait) as sock:
        sock.sendall(data)
        if shut:
            sock.shutdown(socket.SHUT_WR)
        response = http.client.HTTPResponse(sock, method=data.split(b" ", 1)[0].decode("latin-1"))
        response.begin()
        body = response.read()
        headers = {k.lower(): v for k, v in response.getheaders()}
    parsed = json.loads(body) if body else None
    return response.status, headers, parsed


def request(method: str, path: str, headers: str = AUTH, body: bytes = b"") -> bytes:
    return f"{method} {path} HTTP/1.1\r\nHost: x\r\n{headers}\r\n".encode("latin-1") + body


def json_request(path: str, body: bytes, method: str = "POST") -> bytes:
    head = AUTH + f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    return request(method, path, head, body)


def assert_error(body: Any, status: int, *, azure: bool = False) -> None:
    """The API's error shape (the spec's ``ErrorResponse`` for OpenAI)."""
    assert isinstance(body, dict) and set(body) == {"error"}, body
    if azure:
        assert set(body["error"]) <= {"code", "message", "target"} and body["error"]["message"]
        return
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["type"] == ("server_error" if status >= 500 else "invalid_request_error")
    openapi.validate(body, openapi.component("ErrorResponse"))


@pytest.fixture
def small(tmp_path: Path) -> Iterator[SimServer]:
    """A simulator with small body limits and a short body timeout."""
    server = SimServer(
        Simulator(tmp_path / "small", speed=0),
        limits=Limits(upload_bytes=2_000, json_bytes=500, timeout=0.5),
    ).start()
    yield server
    server.close()


# -- framing ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("length", "status", "message"),
    [
        ("abc", 400, "Invalid Content-Length header: 'abc'"),
        ("-5", 400, "Invalid Content-Length header: '-5'"),
        ("1e3", 400, "Invalid Content-Length header"),
        ("+12", 400, "Invalid Content-Length header"),
        ("12, 13", 400, "Conflicting Content-Length headers"),
        ("99999999999999999999999999999", 413, "this server takes at most"),
        ("1000000000000", 413, "1,000,000,000,000 bytes"),
        (str(1024 * 1024 + 1), 413, "1,048,577 bytes"),
    ],
)
def test_bad_content_length(sim_server: SimServer, length: str, status: int, message: str) -> None:
    head = AUTH + f"Content-Type: application/json\r\nContent-Length: {length}\r\n"
    got, headers, body = raw(sim_server, request("POST", "/v1/fine_tuning/jobs", head))
    assert got == status, body
    assert_error(body, status)
    assert message in body["error"]["message"]
    assert headers["connection"] == "close"


def test_the_server_survives_everything_below(sim_server: SimServer) -> None:
    """After each refusal the server still answers (checked once more at the end)."""
    for data in (
        b"GARBAGE\r\n\r\n",
        b"GET /v1/files HTTP/9.9\r\n\r\n",
        b"\x00\xff\xfe\r\n\r\n",
        request("POST", "/v1/files", AUTH + "Content-Length: abc\r\n"),
    ):
        status, _, body = raw(sim_server, data)
        assert 400 <= status < 600 and status != 500, (data, status)
        assert_error(body, status)
    assert call(sim_server, "GET", "/files")[0] == 200


@pytest.mark.parametrize(
    ("data", "status"),
    [
        (b"GARBAGE\r\n\r\n", 400),
        (b"GET /v1/files HTTP/1.1 extra\r\n\r\n", 400),
        (b"GET /v1/files HTTP/9.9\r\n\r\n", 505),
        (b"GET /v1/files HTTP/1.1\r\nX: " + b"a" * 70_000 + b"\r\n\r\n", 431),
        (b"GET /v1/files HTTP/1.1\r\n" + b"X: 1\r\n" * 150 + b"\r\n", 431),
        (b"FOO /v1/files HTTP/1.1\r\n\r\n", 501),
        (b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\n\r\n", 414),
        (b"GET http://[x/v1/files HTTP/1.1\r\n\r\n", 400),
    ],
    ids=[
        "garbage",
        "four_words",
        "version",
        "long_header",
        "many_headers",
        "method",
        "long_uri",
        "unsplittable_url",
    ],
)
def test_what_the_standard_library_refuses_has_the_shape(
    sim_server: SimServer, data: bytes, status: int
) -> None:
    got, headers, body = raw(sim_server, data)
    assert got == status
    assert_error(body, status)
    assert headers["connection"] == "close"


def test_chunked_bodies(sim_server: SimServer) -> None:
    body = json.dumps({"max_running": 2}).encode()
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in (body[:5], body[5:])) + b"0\r\n\r\n"
    head = "Transfer-Encoding: chunked\r\nContent-Type: application/json\r\n"
    status, _, got = raw(sim_server, request("PUT", "/_sim/faults", head, chunks))
    assert status == 200 and got["max_running"] == {"openai": 2, "azure": 2}
    for te, data, code in (
        ("chunked", b"zz\r\n", 400),
        ("chunked", b"5\r\nab\r\n0\r\n\r\n", 400),
        ("gzip, chunked", b"0\r\n\r\n", 501),
    ):
        status, _, got = raw(
            sim_server, request("PUT", "/_sim/faults", f"Transfer-Encoding: {te}\r\n", data)
        )
        assert status == code, got
        assert_error(got, code)
    head = "Transfer-Encoding: chunked\r\nContent-Length: 3\r\n"
    status, _, got = raw(sim_server, request("PUT", "/_sim/faults", head, b"0\r\n\r\n"))
    assert status == 400 and "Both Transfer-Encoding and Content-Length" in got["error"]["message"]


def test_a_body_that_ends_early_or_stalls(small: SimServer) -> None:
    head = AUTH + "Content-Type: application/json\r\nContent-Length: 100\r\n"
    status, _, body = raw(small, request("POST", "/v1/fine_tuning/jobs", head, b"{}"), shut=True)
    assert status == 400 and "ended after 2 of 100 bytes" in body["error"]["message"]
    started = time.monotonic()
    status, headers, body = raw(small, request("POST", "/v1/fine_tuning/jobs", head, b"{"))
    assert status == 408 and time.monotonic() - started < 5
    assert_error(body, 408)
    assert headers["connection"] == "close"


def test_bodies_over_the_limits(small: SimServer, tmp_path: Path) -> None:
    status, _, body = raw(small, json_request("/v1/fine_tuning/jobs", b"[" + b" " * 600 + b"]"))
    assert status == 413
    assert_error(body, 413)
    client = OpenAI(base_url=small.url + "/v1", api_key=OPENAI_KEY, max_retries=0)
    big = tmp_path / "big.jsonl"
    big.write_bytes(b"{}\n" * 1000)
    with pytest.raises(openai.APIStatusError) as caught:
        client.files.create(file=big.open("rb"), purpose="fine-tune")
    assert caught.value.status_code == 413
    assert "at most 2,000" in caught.value.message
    assert client.files.list().data == []  # and the server goes on


# -- bodies ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"[" * 100_000 + b"]" * 100_000, "nested deeper than 64 levels"),
        (b'{"a": ' * 100_000 + b"1" + b"}" * 100_000, "nested deeper than 64 levels"),
        (b"{not json", "not valid JSON"),
        (b'{"seed": NaN}', "NaN is not JSON"),
        (b'{"seed": Infinity}', "Infinity is not JSON"),
        (b'{"hyperparameters": {"learning_rate_multiplier": 1e999}}', "not a finite number"),
        (b'{"seed": ' + b"9" * 5000 + b"}", "not valid JSON"),
        (b'{"model": "caf\xe9"}', "not UTF-8"),
        (b"[1, 2]", "must be a JSON object"),
        (b'"a string"', "must be a JSON object"),
        (b"null", "must be a JSON object"),
    ],
    ids=["deep_list", "deep_object", "invalid", "nan", "infinity", "1e999", "huge_int",
         "latin1", "array", "string", "null"],
)  # fmt: skip
def test_bad_json_bodies(sim_server: SimServer, body: bytes, message: str) -> None:
    status, headers, got = raw(sim_server, json_request("/v1/fine_tuning/jobs", body))
    assert status == 400, got
    assert_error(got, 400)
    assert message in got["error"]["message"]
    assert "connection" not in headers  # the framing was fine: the connection stays open


def test_the_connection_stays_usable_after_a_400(sim_server: SimServer) -> None:
    with socket.create_connection(("127.0.0.1", sim_server.port), timeout=10) as sock:
        answers = []
        for data in (json_request("/v1/fine_tuning/jobs", b"{oops"), request("GET", "/v1/files")):
            sock.sendall(data)
            response = http.client.HTTPResponse(sock)
            response.begin()
            answers.append((response.status, json.loads(response.read())))
    assert [s for s, _ in answers] == [400, 200]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": 5, "training_file": "f"}, "model"),
        ({"model": "gpt-4o-mini", "training_file": ["f"]}, "training_file"),
        ({"model": "gpt-4o-mini", "training_file": "f", "validation_file": 3}, "validation_file"),
        ({"model": "gpt-4o-mini", "training_file": "f", "seed": True}, "seed"),
        ({"model": "gpt-4o-mini", "training_file": "f", "seed": -1}, "seed"),
        ({"model": "gpt-4o-mini", "training_file": "f", "suffix": 5}, "suffix"),
        ({"model": "gpt-4o-mini", "training_file": "f", "metadata": []}, "metadata"),
        ({"model": "gpt-4o-mini", "training_file": "f", "metadata": {"k": 1}}, "metadata"),
        ({"model": "gpt-4o-mini", "training_file": "f", "hyperparameters": 3}, "hyperparameters"),
        (
            {"model": "gpt-4o-mini", "training_file": "f", "hyperparameters": {"n_epochs": "3"}},
            "hyperparameters.n_epochs",
        ),
        (
            {"model": "m", "training_file": "f", "hyperparameters": {"batch_size": True}},
            "hyperparameters.batch_size",
        ),
        (
            {"model": "m", "training_file": "f", "method": {"type": "supervised", "supervised": 5}},
            "method.supervised",
        ),
        ({"model": "m", "training_file": "f", "method": "dpo"}, "method.type"),
        ({"model": "m", "training_file": "f", "extra": 1}, "extra"),
    ],
)
def test_wrong_types_for_known_fields(sim_server: SimServer, body: Any, param: str) -> None:
    status, error = call(sim_server, "POST", "/fine_tuning/jobs", body)
    assert status == 400, error
    assert_error(error, 400)
    assert error["error"]["param"] == param


def _form(parts: list[tuple[str, str | None, bytes]]) -> tuple[str, bytes]:
    boundary = "b0undary"
    out = b""
    for name, filename, content in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        out += f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + content
        out += b"\r\n"
    return f"multipart/form-data; boundary={boundary}", out + f"--{boundary}--\r\n".encode()


@pytest.mark.parametrize(
    ("ctype", "body", "param"),
    [
        (*_form([("purpose", None, b"fine-\xff\xfetune"), ("file", "t.jsonl", b"{}")]), "purpose"),
        (*_form([("purpose", None, b"fine-tune")]), "file"),
        (*_form([("purpose", None, b"nonsense"), ("file", "t.jsonl", b"{}")]), "purpose"),
        ("multipart/form-data", b"no boundary at all", None),
        ("multipart/form-data; boundary=x", b"\x00\xff garbage", None),
        ("multipart/form-data; boundary=\xff", b"--\xff\r\n\r\n", None),
    ],
    ids=["purpose_not_utf8", "no_file", "bad_purpose", "no_boundary", "garbage", "odd_boundary"],
)
def test_bad_uploads(sim_server: SimServer, ctype: str, body: bytes, param: str | None) -> None:
    head = AUTH + f"Content-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
    status, _, got = raw(sim_server, request("POST", "/v1/files", head, body))
    assert status == 400, got
    assert_error(got, 400)
    assert got["error"]["param"] == param


# -- routes ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "status", "allow"),
    [
        ("GET", "/v1/nothing", 404, None),
        ("GET", "/nothing", 404, None),
        ("GET", "/v1/files/a/b/c", 404, None),
        ("GET", "/_sim/nothing", 404, None),
        ("PATCH", "/v1/files", 405, "GET, POST"),
        ("DELETE", "/v1/fine_tuning/jobs", 405, "GET, POST"),
        ("PUT", "/v1/fine_tuning/jobs/ftjob-1/cancel", 405, "POST"),
        ("OPTIONS", "/v1/files/file-1", 405, "DELETE, GET"),
        ("PUT", "/_sim/health", 405, "GET"),
        ("DELETE", "/_sim/faults", 405, "GET, PUT, POST"),
    ],
)
def test_unknown_routes_and_methods(
    sim_server: SimServer, method: str, path: str, status: int, allow: str | None
) -> None:
    got, headers, body = raw(sim_server, request(method, path))
    assert got == status, body
    assert_error(body, status)
    assert headers.get("allow") == allow


def test_head_gets_a_405_without_a_body(sim_server: SimServer) -> None:
    status, headers, body = raw(sim_server, request("HEAD", "/v1/files"))
    assert status == 405 and body is None and headers["allow"] == "GET, POST"


def test_azure_errors_keep_azure_shape(sim_server: SimServer) -> None:
    key = f"api-key: {AZURE_KEY}\r\n"
    for method, path, status in (
        ("PATCH", f"/openai/files?api-version={AZURE_VERSION}", 405),
        ("GET", f"/openai/nothing?api-version={AZURE_VERSION}", 404),
    ):
        got, _, body = raw(sim_server, request(method, path, key))
        assert got == status
        assert_error(body, status, azure=True)
        assert body["error"]["code"] in ("invalidPayload", "notFound")
    body = b"[" * 1000
    head = key + f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    got, _, error = raw(
        sim_server,
        request("POST", f"/openai/fine_tuning/jobs?api-version={AZURE_VERSION}", head, body),
    )
    assert got == 400 and error["error"]["code"] == "invalidPayload"


# -- the admin API and fault configurations ---------------------------------------------------


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"requests": [{"status": "x"}]}, "requests.0.status: input should be a valid integer"),
        ({"requests": [{"status": 200}]}, "requests.0.status: input should be greater than or"),
        ({"requests": [{"status": 500.0}]}, "requests.0.status: input should be a valid integer"),
        ({"requests": [{}]}, "requests.0.status: required field is missing"),
        ({"requests": [{"status": 500, "op": "job.create"}]}, "requests.0.op: 'job.create' matc"),
        ({"requests": [{"status": 500, "api": "aws"}]}, "requests.0.api: input should be"),
        ({"requests": [{"status": 500, "when": "later"}]}, "requests.0.when: input should be"),
        ({"requests": [{"status": 500, "times": -1}]}, "requests.0.times: input should be"),
        ({"requests": [{"status": 429, "retry_after": "soon"}]}, "requests.0.retry_after: "),
        ({"requests": [{"status": 500, "sdk_retry": "yes"}]}, "requests.0.sdk_retry: input"),
        ({"requests": [{"status": 500, "colour": "red"}]}, "requests.0.colour: unknown field"),
        ({"requests": "all"}, "requests: input should be a valid list"),
        ({"max_running": "x"}, "max_running: input should be a valid dictionary"),
        ({"max_running": {"aws": 1}}, "max_running: unknown API 'aws'"),
        ({"max_running": {"openai": -1}}, "max_running.openai: input should be greater"),
        ({"max_running": True}, "max_running: input should be a valid dictionary"),
        ({"file_processing_seconds": -1}, "file_processing_seconds: input should be greater"),
        ({"file_processing_seconds": "2"}, "file_processing_seconds: input should be a valid"),
        ({"stuck_files": "x.jsonl"}, "stuck_files: input should be a valid list"),
        ({"jobs": [{"nth": 0}]}, "jobs.0.nth: input should be greater than or equal to 1"),
        ({"jobs": [{"at_step": "3"}]}, "jobs.0.at_step: input should be a valid integer"),
        ({"jobs": [{"code": ""}]}, "jobs.0.code: string should have at least 1 character"),
        ({"jobs": [7]}, "jobs.0: input should be a valid dictionary"),
        ({"colour": "red"}, "colour: unknown field"),
    ],
)
def test_bad_fault_configs_are_400_and_the_previous_one_stays(
    sim_server: SimServer, config: dict[str, Any], message: str
) -> None:
    good = {"requests": [{"op": "files.list", "status": 503, "times": 0}]}
    assert raw(sim_server, json_request("/_sim/faults", json.dumps(good).encode(), "PUT"))[0] == 200
    before = sim_server.sim.faults.to_dict()
    status, _, body = raw(
        sim_server, json_request("/_sim/faults", json.dumps(config).encode(), "PUT")
    )
    assert status == 400, body
    assert_error(body, 400)
    assert body["error"]["message"].startswith("PUT /_sim/faults: " + message)
    assert sim_server.sim.faults.to_dict() == before
    assert call(sim_server, "GET", "/files")[0] == 503  # the previous faults still fire
    assert call(sim_server, "GET", "/fine_tuning/jobs")[0] == 200  # and nothing else breaks


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (b'{"advance": -1}', "advance"),
        (b'{"advance": 1e12}', "advance"),
        (b'{"advance": "60"}', "advance"),
        (b'{"speed": true}', "speed"),
        (b'{"speed": -2}', "speed"),
        (b'{"rewind": 5}', "rewind"),
        (b"[1]", None),
        (b'{"speed": NaN}', None),
    ],
)
def test_bad_clock_requests(sim_server: SimServer, body: bytes, param: str | None) -> None:
    before = sim_server.sim.clock.now()
    status, _, got = raw(sim_server, json_request("/_sim/clock", body))
    assert status == 400, got
    assert_error(got, 400)
    assert got["error"]["param"] == param
    assert sim_server.sim.clock.now() == before and sim_server.sim.clock.speed == 0


# -- the command line and the library --------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("requests: [{status: x}]\n", "requests.0.status: input should be a valid integer"),
        ("requests:\n  - {status: 500}\nrequests: []\n", "line 3: duplicate key 'requests'"),
        ("max_running: " + "[" * 1000 + "]" * 1000 + "\n", "nested deeper than 50 levels"),
        ("- 1\n", "expected a mapping, got list"),
    ],
)
def test_bad_faults_file_on_the_command_line(cli, tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "faults.yaml"
    path.write_text(text)
    r = cli("apisim", "--port", "0", "--faults", path)
    assert r.code == 2, r
    lines = r.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {path}: ") and message in lines[0]
    assert r.out == ""


@pytest.mark.timeout(30)
def test_faults_file_that_is_a_fifo_or_a_device(cli, tmp_path: Path) -> None:
    fifo = tmp_path / "faults.fifo"
    os.mkfifo(fifo)
    for path, message in ((fifo, "is a named pipe (FIFO)"), ("/dev/zero", "is a character")):
        r = cli("apisim", "--port", "0", "--faults", path)
        assert r.code == 2 and message in r.err and len(r.err.splitlines()) == 1, r.err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--speed", "nan"], "speed: must be a number from 0 to"),
        (["--speed", "-1"], "speed: must be a number from 0 to"),
        (["--port", "70000"], "port: must be 0 to 65535, got 70000"),
    ],
)
def test_bad_options_on_the_command_line(cli, args: list[str], message: str) -> None:
    r = cli("apisim", "--port", "0", *args)
    assert r.code == 2 and r.err.startswith("error: ") and message in r.err, r.err
    assert len(r.err.splitlines()) == 1


def test_a_state_folder_that_is_a_file_or_corrupt(tmp_path: Path) -> None:
    occupied = tmp_path / "occupied"
    occupied.write_text("x")
    with pytest.raises(UsageError, match="cannot keep the simulator's state here"):
        apisim.start(state=occupied, speed=0)
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "state.json").write_text('{"version": 1}')
    with pytest.raises(UsageError, match=r"state\.json: not a simulator state \(KeyError"):
        apisim.start(state=corrupt, speed=0)
    (corrupt / "state.json").write_text("{")
    with pytest.raises(UsageError, match="not a readable simulator state"):
        apisim.start(state=corrupt, speed=0)


def test_a_huge_multiplier_still_gives_a_finite_curve(
    sim_server: SimServer, chat_data: tuple[Path, Path]
) -> None:
    from tests.apisim.test_apisim_spec import upload

    train = upload(sim_server, chat_data[0])["id"]
    hp = {"n_epochs": 2, "batch_size": 1, "learning_rate_multiplier": 1e300}
    status, job = call(
        sim_server, "POST", "/fine_tuning/jobs",
        {"model": "gpt-4o-mini", "training_file": train, "hyperparameters": hp},
    )  # fmt: skip
    assert status == 200, job
    sim_server.sim.advance(36_000)
    status, got = call(sim_server, "GET", f"/fine_tuning/jobs/{job['id']}")
    assert status == 200 and got["status"] == "succeeded", got
    status, events = call(sim_server, "GET", f"/fine_tuning/jobs/{job['id']}/events?limit=100")
    assert status == 200 and events["data"]


# -- fuzz: the parsers raise their own error or nothing ---------------------------------------

_KEYS = ["status", "op", "api", "times", "skip", "when", "retry_after", "sdk_retry", "nth",
         "at_step", "code", "message", "requests", "jobs", "max_running", "stuck_files",
         "file_processing_seconds", "openai", "azure", "seen", "used", "x"]  # fmt: skip
_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()
    | st.text(max_size=10)
    | st.sampled_from(["*", "jobs.create", "files.*", "openai", "azure", "before", "after"]),
    lambda kids: (
        st.lists(kids, max_size=3) | st.dictionaries(st.sampled_from(_KEYS), kids, max_size=5)
    ),
    max_leaves=15,
)


@settings(max_examples=300, deadline=None)
@given(raw=_values)
def test_fuzz_fault_configs(raw: Any) -> None:
    try:
        faults = Faults.from_dict(raw, "fuzz")
    except UsageError as exc:
        assert str(exc).startswith("fuzz: ") and "\n" not in str(exc)
    else:
        assert Faults.from_dict(faults.to_dict()) == faults  # what GET returns, PUT takes back
        for _ in range(3):
            faults.request_fault("jobs.create", "openai")
            faults.job_fault(1, "gpt-4o-mini", None)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=st.binary(max_size=200), boundary=st.sampled_from(["b", "", "\xff", "a b"]))
def test_fuzz_bodies(body: bytes, boundary: str) -> None:
    for parse in (
        lambda: parse_json(body),
        lambda: parse_form(f"multipart/form-data; boundary={boundary}", body),
    ):
        try:
            parse()
        except ApiError as exc:
            assert exc.status == 400

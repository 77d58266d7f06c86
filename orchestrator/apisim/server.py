"""The HTTP side: a standard-library threading server speaking both dialects.

* ``/v1/...`` is OpenAI (``Authorization: Bearer <key>``);
* ``/openai/...?api-version=V`` is Azure OpenAI's dated surface and ``/openai/v1/...`` its v1
  surface (no ``api-version`` needed); both take ``api-key: <key>`` or a bearer token and
  share one resource (the same files and jobs);
* ``/subscriptions/.../providers/Microsoft.CognitiveServices/accounts/{a}/deployments/{d}``
  ``?api-version=V`` is Azure Resource Manager's deployments of the same resource (a bearer
  token only; :mod:`.chat`);
* ``/_sim/...`` is the simulator's own admin API: ``GET /_sim/requests[?op=jobs.create]``,
  ``DELETE /_sim/requests``, ``GET|PUT /_sim/faults``, ``GET|POST /_sim/clock``
  (``{"advance": seconds}`` or ``{"speed": x}``), ``GET|PUT|POST /_sim/models[?api=azure]``
  (the base-model list: read, replace with ``{"data": [...]}``, add or update one entry) and
  ``GET /_sim/health``.

Any non-empty key is accepted and none is ever stored: the request log keeps the operation,
path and status only. A key or token that starts with ``expired`` is refused with a 401 (so
tests can show what an expired credential does; the Azure wording is a guess).

Bad input never gets a 500 or a dropped connection: a garbled request line, headers the
standard library refuses, a body that is badly framed, too large, slow, not JSON or not an
object, an unknown path (404), a method the path does not take (405, with ``Allow``) or a
bad fault configuration (400, the previous one stays) are answered in the API's error shape
(:mod:`.body` reads and parses bodies).
"""

from __future__ import annotations

import json
import logging
import math
import secrets
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from orchestrator.apisim import routes
from orchestrator.apisim.body import BodyError, Limits, parse_form, parse_json, read_body
from orchestrator.apisim.errors import ApiError
from orchestrator.apisim.faults import Faults, RequestFault
from orchestrator.apisim.simulator import Simulator
from orchestrator.core.errors import UsageError

__all__ = ["SimServer"]

log = logging.getLogger(__name__)
#: (path prefix, API, surface); the longer Azure prefix first
_PREFIXES = (
    ("/v1", "openai", ""),
    ("/openai/v1", "azure", "v1"),
    ("/openai", "azure", ""),
    ("/subscriptions", "azure", "arm"),
)
_EXPIRED = "expired"


def _fault_error(fault: RequestFault, api: str, op: str) -> ApiError:
    headers = {"x-should-retry": "true" if fault.sdk_retry else "false"}
    if fault.status == 429:
        if fault.retry_after is not None:
            after = fault.retry_after
            headers["retry-after"] = str(int(after)) if after.is_integer() else str(after)
        code = fault.code or ("daily_rate_limit_exceeded" if op == "jobs.create" else None)
        message = fault.message or (
            "This fine-tune request has been rate-limited. Your organization has reached the "
            "maximum of 3 fine-tuning requests per day for the model."
            if code == "daily_rate_limit_exceeded"
            else "Rate limit reached for requests."
        )
        return ApiError(429, message, code=code, headers=headers)
    if fault.status >= 500:
        message = fault.message or (
            "The server had an error while processing your request. Sorry about that!"
        )
        return ApiError(fault.status, message, code=fault.code, headers=headers)
    message = fault.message or f"Injected error {fault.status}."
    return ApiError(fault.status, message, code=fault.code, headers=headers)


def _dialect(path: str) -> str:
    azure = path.startswith(("/openai/", "/subscriptions/")) or path == "/openai"
    return "azure" if azure else "openai"


def _phrase(code: int) -> str:
    try:
        return HTTPStatus(code).phrase
    except ValueError:
        return "Error"


#: the admin API: path -> methods it takes
_ADMIN = {
    "/_sim/health": ("GET",),
    "/_sim/requests": ("GET", "DELETE"),
    "/_sim/faults": ("GET", "PUT", "POST"),
    "/_sim/clock": ("GET", "POST"),
    "/_sim/models": ("GET", "PUT", "POST"),
}
#: the most ``POST /_sim/clock`` takes: simulated seconds per real second, seconds per jump
MAX_SPEED = 1e6
MAX_ADVANCE = 1e9


def _clock_number(body: dict[str, Any], name: str, high: float) -> float | None:
    if name not in body:
        return None
    value = body[name]
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    if not ok or not math.isfinite(value) or not 0 <= value <= high:
        raise ApiError(400, f"Invalid '{name}': expected a number from 0 to {high:g}.", param=name)
    return float(value)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    #: a garbled request line still gets a status line and headers (not HTTP/0.9's bare body)
    default_request_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in two writes: no 40 ms stalls
    server: SimServer

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("apisim: " + format, *args)

    def do_GET(self) -> None:
        self._handle()

    do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = do_GET

    # -- plumbing ------------------------------------------------------------------------
    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """The standard library's own refusals (a garbled request line, an unknown method,
        headers too long) in the API's error shape; the connection is closed after them."""
        self.close_connection = True
        err = ApiError(code, message or _phrase(code))
        path = str(getattr(self, "path", None) or "")
        self._send(code, err.body(_dialect(path.split("?", 1)[0])), {"Connection": "close"})

    def _send(
        self, status: int, body: dict[str, Any] | bytes | None, headers: dict[str, str]
    ) -> None:
        if isinstance(body, dict):
            try:
                payload, ctype = json.dumps(body, allow_nan=False).encode(), "application/json"
            except ValueError:  # a NaN in a response is a simulator bug: still valid JSON
                log.exception("apisim: unserialisable response")
                status, headers = 500, {"x-should-retry": "false"}
                bug = ApiError(500, "Internal simulator error: unserialisable response")
                payload, ctype = json.dumps(bug.body("openai")).encode(), "application/json"
        else:
            payload, ctype = body or b"", "application/octet-stream"
        try:
            self.send_response(status)
            self.send_header("x-request-id", f"req_{secrets.token_hex(8)}")
            if status != 204:
                self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(payload) if status != 204 else 0))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            if status != 204 and self.command != "HEAD":
                self.wfile.write(payload)
        except OSError:  # the client went away: nothing left to answer
            self.close_connection = True

    def _handle(self) -> None:
        method, path = self.command, self.path.split("?", 1)[0]
        api = _dialect(path)
        try:
            url = urlsplit(self.path)
            raw = read_body(self.headers, self.rfile, self.connection, self.server.limits)
        except (BodyError, ValueError) as exc:  # ValueError: a URL urllib cannot split
            err = exc if isinstance(exc, BodyError) else BodyError(400, "Invalid request URL.")
            self.close_connection = True
            self._send(err.status, err.body(api), {**err.headers, "Connection": "close"})
            return
        try:
            self._route(method, url.path, parse_qs(url.query, keep_blank_values=True), raw)
        except Exception as exc:  # a simulator bug must still answer like a server
            log.exception("apisim: %s %s failed", method, path)
            bug = ApiError(500, f"Internal simulator error: {type(exc).__name__}")
            self._send(500, bug.body(api), {"x-should-retry": "false"})

    def _route(self, method: str, path: str, query: dict[str, list[str]], raw: bytes) -> None:
        if path.startswith("/_sim/"):
            self._admin(method, path, query, raw)
            return
        for prefix, api, surface in _PREFIXES:
            if path == prefix or path.startswith(prefix + "/"):
                self._api(api, method, path[len(prefix) :], path, query, raw, surface)
                return
        err = ApiError(404, f"Unknown request URL: {method} {path}.")
        self._send(err.status, err.body("openai"), {})

    def _credential(self, api: str) -> tuple[str, str]:
        """(kind, value): ``key`` (Azure's ``api-key`` header) or ``token`` (a bearer)."""
        bearer = (self.headers.get("Authorization") or "").removeprefix("Bearer ").strip()
        key = (self.headers.get("api-key") or "").strip() if api == "azure" else ""
        return ("key", key) if key else ("token", bearer)

    def _check_credential(self, api: str) -> None:
        kind, value = self._credential(api)
        if not value:
            raise ApiError(401, "You didn't provide an API key.", code="invalid_api_key")
        if not value.startswith(_EXPIRED):
            return
        if api != "azure":
            raise ApiError(401, "Incorrect API key provided.", code="invalid_api_key")
        if kind == "key":
            raise ApiError(
                401, "Access denied due to invalid subscription key or wrong API endpoint. "
                "Make sure to provide a valid key for an active subscription and use a "
                "correct regional API endpoint for your resource.", azure_code="401",
            )  # fmt: skip
        raise ApiError(
            401, "Unauthorized. Access token is missing, invalid, audience is incorrect "
            "(https://cognitiveservices.azure.com), or have expired.", azure_code="401",
        )  # fmt: skip

    def _check_arm_credential(self) -> None:
        """ARM takes an Entra ID bearer token only (no ``api-key``)."""
        kind, value = self._credential("azure")
        if kind == "key" or not value:
            raise ApiError(401, "Authentication failed. The 'Authorization' header is missing.",
                           azure_code="AuthenticationFailed")  # fmt: skip
        if value.startswith(_EXPIRED):
            raise ApiError(401, "The access token expiry UTC time is earlier than current UTC "
                           "time.", azure_code="ExpiredAuthenticationToken")  # fmt: skip

    def _api(
        self,
        api: str,
        method: str,
        sub: str,
        path: str,
        query: dict[str, list[str]],
        raw: bytes,
        surface: str = "",
    ) -> None:
        sim = self.server.sim
        found = routes.match(method, sub)
        op = found[0] if found else "unknown"
        try:
            reply = self._dispatch(api, method, sub, path, query, raw, found, surface)
        except ApiError as err:
            reply = routes.Reply(err.status, err.body(api), err.headers)
        except Exception as exc:  # a simulator bug must still answer like a server
            log.exception("apisim: %s %s failed", method, path)
            bug = ApiError(500, f"Internal simulator error: {type(exc).__name__}")
            reply = routes.Reply(500, bug.body(api), {"x-should-retry": "false"})
        # logged before answering, so a client that asks the log next finds its request
        sim.log_request(
            {"api": api, "method": method, "path": path, "op": op, "status": reply.status}
        )
        self._send(reply.status, reply.body, reply.headers)

    def _dispatch(
        self,
        api: str,
        method: str,
        sub: str,
        path: str,
        query: dict[str, list[str]],
        raw: bytes,
        found: tuple[str, routes.Handler, tuple[str, ...]] | None,
        surface: str = "",
    ) -> routes.Reply:
        sim = self.server.sim
        if surface == "arm":
            self._check_arm_credential()
        else:
            self._check_credential(api)
        if api == "azure" and surface != "v1" and not query.get("api-version"):
            raise ApiError(
                400, "The api-version query parameter (?api-version=) is required.",
                azure_code="MissingApiVersionParameter",
            )  # fmt: skip
        if found is None:
            allowed = routes.allowed(sub)
            if allowed:
                raise ApiError(
                    405, f"Method {method} is not allowed for {path}; use {', '.join(allowed)}.",
                    headers={"Allow": ", ".join(allowed)},
                )  # fmt: skip
            raise ApiError(404, f"Unknown request URL: {method} {path}.")
        op, handler, ids = found
        if (surface == "arm") != op.startswith("deployments."):  # each plane its own paths
            raise ApiError(404, f"Unknown request URL: {method} {path}.")
        version = surface or (query.get("api-version") or [""])[0]
        ctx = routes.Ctx(sim, api, ids, query, version=version)
        ctype = self.headers.get("Content-Type") or ""
        if raw and ctype.startswith("multipart/form-data"):
            ctx.form = parse_form(ctype, raw)
        elif raw:
            ctx.json = parse_json(raw)
        with sim.lock:
            fault = sim.faults.request_fault(op, api)
            if fault is not None:
                sim.save()
                if fault.when == "after":
                    handler(ctx)
                raise _fault_error(fault, api, op)
        return handler(ctx)

    def _admin(self, method: str, path: str, query: dict[str, list[str]], raw: bytes) -> None:
        headers: dict[str, str] = {}
        try:
            allowed = _ADMIN.get(path.rstrip("/"))
            if allowed is None:
                raise ApiError(404, f"Unknown admin request: {method} {path}.")
            if method not in allowed:
                headers["Allow"] = ", ".join(allowed)
                raise ApiError(405, f"Method {method} is not allowed for {path}; "
                                    f"use {', '.join(allowed)}.")  # fmt: skip
            body: Any = parse_json(raw) if raw else {}
            if method in ("PUT", "POST") and not isinstance(body, dict):
                raise ApiError(400, "The request body must be a JSON object.")
            self._send(200, self._admin_reply(method, path.rstrip("/"), query, body), {})
        except ApiError as err:
            self._send(err.status, err.body("openai"), {**err.headers, **headers})
        except UsageError as exc:  # a bad fault configuration: the previous one stays
            self._send(400, ApiError(400, str(exc)).body("openai"), {})

    def _admin_reply(
        self, method: str, path: str, query: dict[str, list[str]], body: dict[str, Any]
    ) -> dict[str, Any]:
        sim = self.server.sim
        if path == "/_sim/health":
            return {"ok": True, "now": sim.clock.now()}
        if path == "/_sim/requests":
            if method == "DELETE":
                sim.store.clear_log()
                return {"deleted": True}
            ops = query.get("op")
            return {"data": sim.requests(ops[0] if ops else None)}
        if path == "/_sim/faults":
            if method != "GET":
                sim.set_faults(Faults.from_dict(body, f"{method} /_sim/faults"))
            return sim.faults.to_dict()
        if path == "/_sim/models":
            api = (query.get("api") or ["openai"])[0]
            if method == "PUT":
                unknown = sorted(set(body) - {"data"})
                if unknown or "data" not in body:
                    raise ApiError(400, 'Expected {"data": [model entries]}.', param="data")
                sim.set_models(body["data"], api)
            elif method == "POST":
                sim.put_model(body, api)
            return {"object": "list", "api": api, "data": sim.base_models(api)}
        if method == "POST":  # /_sim/clock
            unknown = sorted(set(body) - {"advance", "speed"})
            if unknown:
                raise ApiError(400, f"Unknown field: {unknown[0]!r}.", param=unknown[0])
            speed = _clock_number(body, "speed", MAX_SPEED)
            advance = _clock_number(body, "advance", MAX_ADVANCE)
            if speed is not None:
                sim.clock.set_speed(speed)
            if advance is not None:
                sim.advance(advance)
        return {"now": sim.tick(), "speed": sim.clock.speed}


class SimServer(ThreadingHTTPServer):
    """The simulator behind an HTTP port. ``port=0`` picks a free one (see :attr:`port`)."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(
        self,
        sim: Simulator,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        limits: Limits | None = None,
    ) -> None:
        super().__init__((host, port), _Handler)
        self.sim = sim
        self.limits = limits or Limits()
        self._thread: threading.Thread | None = None

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A connection that failed below the handler (the client reset it): logged, never
        printed as a traceback."""
        log.debug("apisim: connection from %s failed", client_address, exc_info=True)

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    @property
    def url(self) -> str:
        """The base URL, e.g. ``http://127.0.0.1:8765`` (OpenAI: add ``/v1``)."""
        host = self.server_address[0]
        return f"http://{host if isinstance(host, str) else host.decode()}:{self.port}"

    def start(self) -> SimServer:
        """Serve in a background thread (once: starting a started server does nothing)."""
        if self._thread is not None:
            return self
        self._thread = threading.Thread(
            target=self.serve_forever, args=(0.05,), name="apisim", daemon=True
        )
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop serving, save the state and release the port."""
        if self._thread is not None:
            self.shutdown()
            self._thread.join()
            self._thread = None
        self.server_close()
        self.sim.close()

    def __enter__(self) -> SimServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

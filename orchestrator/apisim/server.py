"""The HTTP side: a standard-library threading server speaking both dialects.

* ``/v1/...`` is OpenAI (``Authorization: Bearer <key>``);
* ``/openai/...?api-version=V`` is Azure OpenAI (``api-key: <key>`` or a bearer token);
* ``/_sim/...`` is the simulator's own admin API: ``GET /_sim/requests[?op=jobs.create]``,
  ``DELETE /_sim/requests``, ``GET|PUT /_sim/faults``, ``GET|POST /_sim/clock``
  (``{"advance": seconds}`` or ``{"speed": x}``) and ``GET /_sim/health``.

Any non-empty key is accepted and none is ever stored: the request log keeps the operation,
path and status only.
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
from email import policy
from email.parser import BytesParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from orchestrator.apisim import routes
from orchestrator.apisim.errors import ApiError
from orchestrator.apisim.faults import Faults, RequestFault
from orchestrator.apisim.simulator import Simulator

__all__ = ["SimServer"]

log = logging.getLogger(__name__)
_PREFIXES = (("/v1", "openai"), ("/openai", "azure"))


def _fault_error(fault: RequestFault, api: str, op: str) -> ApiError:
    headers = {"x-should-retry": "true" if fault.sdk_retry else "false"}
    if fault.status == 429:
        if fault.retry_after is not None:
            headers["retry-after"] = str(fault.retry_after)
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


def _parse_form(content_type: str, body: bytes) -> dict[str, tuple[str | None, bytes]]:
    raw = b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body
    message = BytesParser(policy=policy.HTTP).parsebytes(raw)
    form: dict[str, tuple[str | None, bytes]] = {}
    if not message.is_multipart():
        raise ApiError(400, "Expected a multipart/form-data body.")
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True)
        if isinstance(name, str):
            data = payload if isinstance(payload, bytes) else b""
            form[name] = (part.get_filename(), data)
    return form


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in two writes: no 40 ms stalls
    server: SimServer

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("apisim: " + format, *args)

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    def do_PUT(self) -> None:
        self._handle("PUT")

    # -- plumbing ------------------------------------------------------------------------
    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(
        self, status: int, body: dict[str, Any] | bytes | None, headers: dict[str, str]
    ) -> None:
        if isinstance(body, dict):
            payload, ctype = json.dumps(body).encode(), "application/json"
        else:
            payload, ctype = body or b"", "application/octet-stream"
        self.send_response(status)
        self.send_header("x-request-id", f"req_{secrets.token_hex(8)}")
        if status != 204:
            self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(payload) if status != 204 else 0))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        if status != 204:
            self.wfile.write(payload)

    def _handle(self, method: str) -> None:
        url = urlsplit(self.path)
        query = parse_qs(url.query, keep_blank_values=True)
        raw = self._body()
        if url.path.startswith("/_sim/"):
            self._admin(method, url.path, query, raw)
            return
        for prefix, api in _PREFIXES:
            if url.path == prefix or url.path.startswith(prefix + "/"):
                self._api(api, method, url.path[len(prefix) :], url.path, query, raw)
                return
        err = ApiError(404, f"Unknown request URL: {method} {url.path}.")
        self._send(err.status, err.body("openai"), {})

    def _authorised(self, api: str) -> bool:
        bearer = (self.headers.get("Authorization") or "").removeprefix("Bearer ").strip()
        if api == "azure":
            return bool(bearer or (self.headers.get("api-key") or "").strip())
        return bool(bearer)

    def _api(
        self, api: str, method: str, sub: str, path: str, query: dict[str, list[str]], raw: bytes
    ) -> None:
        sim = self.server.sim
        found = routes.match(method, sub)
        op = found[0] if found else "unknown"
        try:
            reply = self._dispatch(api, method, path, query, raw, found)
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
        path: str,
        query: dict[str, list[str]],
        raw: bytes,
        found: tuple[str, routes.Handler, tuple[str, ...]] | None,
    ) -> routes.Reply:
        sim = self.server.sim
        if not self._authorised(api):
            raise ApiError(401, "You didn't provide an API key.", code="invalid_api_key")
        if api == "azure" and not query.get("api-version"):
            raise ApiError(
                400, "The api-version query parameter (?api-version=) is required.",
                azure_code="MissingApiVersionParameter",
            )  # fmt: skip
        if found is None:
            raise ApiError(404, f"Unknown request URL: {method} {path}.")
        op, handler, ids = found
        ctx = routes.Ctx(sim, api, ids, query)
        ctype = self.headers.get("Content-Type") or ""
        if raw and ctype.startswith("multipart/form-data"):
            ctx.form = _parse_form(ctype, raw)
        elif raw:
            try:
                ctx.json = json.loads(raw)
            except ValueError as exc:
                raise ApiError(400, "The request body is not valid JSON.") from exc
        with sim.lock:
            fault = sim.faults.request_fault(op, api)
            if fault is not None:
                sim.save()
                if fault.when == "after":
                    handler(ctx)
                raise _fault_error(fault, api, op)
        return handler(ctx)

    def _admin(self, method: str, path: str, query: dict[str, list[str]], raw: bytes) -> None:
        sim = self.server.sim
        try:
            body: Any = json.loads(raw) if raw else {}
            if path == "/_sim/health":
                reply: dict[str, Any] = {"ok": True, "now": sim.clock.now()}
            elif path == "/_sim/requests" and method == "GET":
                ops = query.get("op")
                reply = {"data": sim.requests(ops[0] if ops else None)}
            elif path == "/_sim/requests" and method == "DELETE":
                sim.store.clear_log()
                reply = {"deleted": True}
            elif path == "/_sim/faults" and method == "GET":
                reply = sim.faults.to_dict()
            elif path == "/_sim/faults" and method in ("PUT", "POST"):
                sim.set_faults(Faults.from_dict(body, "PUT /_sim/faults"))
                reply = sim.faults.to_dict()
            elif path == "/_sim/clock":
                if method == "POST" and "speed" in body:
                    sim.clock.set_speed(float(body["speed"]))
                if method == "POST" and "advance" in body:
                    sim.advance(float(body["advance"]))
                reply = {"now": sim.tick(), "speed": sim.clock.speed}
            else:
                raise ApiError(404, f"Unknown admin request: {method} {path}.")
            self._send(200, reply, {})
        except ApiError as err:
            self._send(err.status, err.body("openai"), {})
        except Exception as exc:  # bad admin input (a UsageError from the faults parser...)
            self._send(400, ApiError(400, str(exc)).body("openai"), {})


class SimServer(ThreadingHTTPServer):
    """The simulator behind an HTTP port. ``port=0`` picks a free one (see :attr:`port`)."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, sim: Simulator, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__((host, port), _Handler)
        self.sim = sim
        self._thread: threading.Thread | None = None

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

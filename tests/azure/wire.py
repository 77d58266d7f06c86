"""A pass-through HTTP proxy in front of apisim that records each request's credential
headers: what the client put on the wire, which apisim (keeping no key) cannot say."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.error import HTTPError
from urllib.request import Request, urlopen

_HOP = {"connection", "keep-alive", "transfer-encoding", "host", "content-length"}


@dataclass(frozen=True)
class Sent:
    """One request as it arrived: its method, path and credential headers (None: absent)."""

    method: str
    path: str
    api_key: str | None
    authorization: str | None


class Wire:
    """Forwards every request to ``target`` (or answers ``redirect_to`` with a 307 once) and
    records it in :attr:`sent`. ``url`` is where clients go instead of ``target``."""

    def __init__(self, target: str, redirect_to: str | None = None) -> None:
        self.target = target.rstrip("/")
        self.redirect_to = redirect_to
        self.sent: list[Sent] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _handler(wire: Wire) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _body(self) -> bytes | None:
            if (self.headers.get("Transfer-Encoding") or "").lower() == "chunked":
                chunks = []
                while size := int(self.rfile.readline().split(b";")[0], 16):
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
                self.rfile.readline()
                return b"".join(chunks)
            length = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(length) if length else None

        def _forward(self) -> None:
            body = self._body()
            wire.sent.append(
                Sent(
                    self.command,
                    self.path,
                    self.headers.get("api-key"),
                    self.headers.get("Authorization"),
                )
            )
            if wire.redirect_to is not None:
                self._reply(307, {"Location": wire.redirect_to + self.path}, b"")
                return
            headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
            request = Request(wire.target + self.path, body, headers, method=self.command)
            reply: Any
            try:
                reply = urlopen(request, timeout=30)  # loopback only
            except HTTPError as exc:
                reply = exc
            with reply:
                data = reply.read()
                kept = {k: v for k, v in reply.headers.items() if k.lower() not in _HOP}
                self._reply(reply.status, kept, data)

        def _reply(self, status: int, headers: dict[str, str], data: bytes) -> None:
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_DELETE = _forward

        def log_message(self, format: str, *args: Any) -> None:
            return None

    return Handler

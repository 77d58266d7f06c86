"""A request's body, read and parsed so that bad input is always an :class:`ApiError`.

* framing: ``Content-Length`` (digits only; several must agree) or
  ``Transfer-Encoding: chunked`` (not both); anything else is a 400 (or 501 for another
  transfer coding);
* size: a multipart upload may be :attr:`Limits.upload_bytes` (512 MiB, the provider's file
  limit), any other body :attr:`Limits.json_bytes` (1 MiB); larger is a 413 before a byte of
  the body is read;
* time: a body that stops arriving for :attr:`Limits.timeout` seconds is a 408;
* JSON: UTF-8, nested at most :data:`MAX_JSON_DEPTH` deep, finite numbers only (``NaN``,
  ``Infinity`` and ``1e999`` are refused);
* multipart: whatever the standard library's parser makes of it, or a 400.

An error while reading (:class:`BodyError`) leaves the connection in an unknown state: the
server answers it and closes the connection.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from email import policy
from email.message import Message
from email.parser import BytesParser
from io import BufferedIOBase
from typing import Any

from orchestrator.apisim.errors import ApiError

__all__ = ["MAX_JSON_DEPTH", "BodyError", "Limits", "parse_form", "parse_json", "read_body"]

MAX_JSON_DEPTH = 64
_DIGITS = re.compile(r"[0-9]+")
_HEX = re.compile(rb"[0-9A-Fa-f]{1,16}")
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_BRACKETS = re.compile(r"[\[\]{}]")
_MAX_LINE = 4096


@dataclass(frozen=True)
class Limits:
    """How much of a body the server reads, and how long it waits for it."""

    upload_bytes: int = 512 * 1024 * 1024
    json_bytes: int = 1024 * 1024
    #: seconds a body may stall (per read); idle keep-alive connections are not affected
    timeout: float = 30.0


class BodyError(ApiError):
    """The body could not be read as framed: answer, then close the connection."""


def _length(headers: Message) -> int | None:
    values = headers.get_all("Content-Length") or []
    parts = {p.strip() for value in values for p in str(value).split(",")}
    if not parts:
        return None
    if len(parts) != 1:
        raise BodyError(400, "Conflicting Content-Length headers.")
    text = parts.pop()
    if not _DIGITS.fullmatch(text):
        shown = text if len(text) <= 40 else text[:39] + "\u2026"
        raise BodyError(400, f"Invalid Content-Length header: {shown!r}.")
    return int(text) if len(text) <= 18 else 10**18  # more than any limit


def read_body(headers: Message, rfile: BufferedIOBase, sock: Any, limits: Limits) -> bytes:
    """The body of a request whose headers are ``headers``, read from ``rfile`` (the
    connection ``sock``, whose timeout is set while reading)."""
    ctype = str(headers.get("Content-Type") or "")
    limit = limits.upload_bytes if ctype.startswith("multipart/form-data") else limits.json_bytes
    length = _length(headers)
    codings = [
        c.strip().lower()
        for value in headers.get_all("Transfer-Encoding") or []
        for c in str(value).split(",")
        if c.strip()
    ]
    if codings and length is not None:
        raise BodyError(400, "Both Transfer-Encoding and Content-Length given.")
    if codings and codings != ["chunked"]:
        raise BodyError(501, f"Transfer-Encoding {', '.join(codings)!r} is not supported.")
    if length is not None and length > limit:
        raise BodyError(
            413, f"The request body is {length:,} bytes; this server takes at most {limit:,}."
        )
    if not codings and not length:
        return b""
    previous = sock.gettimeout()
    sock.settimeout(limits.timeout)
    try:
        return _chunked(rfile, limit) if codings else _exactly(rfile, length or 0)
    except TimeoutError:
        raise BodyError(408, "The request body did not arrive in time.") from None
    except OSError as exc:
        raise BodyError(400, f"The request body could not be read: {exc}.") from None
    finally:
        sock.settimeout(previous)


def _exactly(rfile: BufferedIOBase, length: int) -> bytes:
    data = rfile.read(length)
    if len(data) < length:
        raise BodyError(400, f"The request body ended after {len(data):,} of {length:,} bytes.")
    return data


def _chunked(rfile: BufferedIOBase, limit: int) -> bytes:
    out = bytearray()
    while True:
        line = rfile.readline(_MAX_LINE)
        size_text = line.split(b";", 1)[0].strip()
        if not line.endswith(b"\n") or not _HEX.fullmatch(size_text):
            raise BodyError(400, "Malformed chunked request body.")
        size = int(size_text, 16)
        if size == 0:
            break
        if len(out) + size > limit:
            raise BodyError(413, f"The request body is over {limit:,} bytes, this server's limit.")
        chunk = rfile.read(size)
        end = rfile.readline(_MAX_LINE)
        if len(chunk) != size or end not in (b"\r\n", b"\n"):
            raise BodyError(400, "Malformed chunked request body.")
        out += chunk
    for _ in range(100):  # trailer fields, up to the empty line
        line = rfile.readline(_MAX_LINE)
        if line in (b"\r\n", b"\n"):
            return bytes(out)
        if not line.endswith(b"\n"):
            break
    raise BodyError(400, "Malformed chunked request body.")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} is not a finite number")
    return value


def _constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _too_deep(text: str) -> bool:
    depth = 0
    for m in _BRACKETS.finditer(_STRING.sub("", text)):
        depth += 1 if m.group() in "[{" else -1
        if depth > MAX_JSON_DEPTH:
            return True
    return False


def parse_json(raw: bytes) -> Any:
    """A JSON body as data; anything else is a 400 in the API's shape."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ApiError(400, "The request body is not valid JSON (not UTF-8).") from None
    if _too_deep(text):
        raise ApiError(400, f"The request body is nested deeper than {MAX_JSON_DEPTH} levels.")
    try:
        return json.loads(text, parse_float=_finite, parse_constant=_constant)
    except RecursionError:  # pragma: no cover (the depth check comes first)
        raise ApiError(400, "The request body is nested too deeply.") from None
    except ValueError as exc:
        detail = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
        raise ApiError(400, f"The request body is not valid JSON: {detail}.") from None


def parse_form(content_type: str, body: bytes) -> dict[str, tuple[str | None, bytes]]:
    """A multipart/form-data body: field name -> (file name, bytes)."""
    try:
        raw = b"Content-Type: " + content_type.encode("utf-8", "replace") + b"\r\n\r\n" + body
        message = BytesParser(policy=policy.HTTP).parsebytes(raw)
        if not message.is_multipart():
            raise ApiError(400, "Expected a multipart/form-data body.")
        form: dict[str, tuple[str | None, bytes]] = {}
        for part in message.iter_parts():
            name = part.get_param("name", header="content-disposition")
            payload = part.get_payload(decode=True)
            if isinstance(name, str):
                data = payload if isinstance(payload, bytes) else b""
                form[name] = (part.get_filename(), data)
        return form
    except ApiError:
        raise
    except Exception as exc:  # the email parser's surprises: a 400, not a 500
        raise ApiError(400, f"The multipart body could not be parsed: {exc}.") from None

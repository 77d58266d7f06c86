"""A streaming JSONL reader with bounded memory that never raises on bad content.

Each line becomes either a parsed value or a problem with its line number. A UTF-8 BOM and
CRLF line endings are accepted; invalid UTF-8, invalid JSON, nesting too deep for the parser
and lines over ``max_line_bytes`` are reported and skipped. The file's SHA-256 is computed
on the way, so nothing is read twice to fingerprint it.

A reader can also cover one byte range of the file (``start``/``end``, both at line starts:
:func:`line_ranges` finds them); its line numbers then count from 1 at ``start``, and the
caller adds the lines of the ranges before it.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from orchestrator.core.errors import DataError

__all__ = ["DEFAULT_MAX_LINE_BYTES", "JsonlReader", "Line", "line_ranges"]

DEFAULT_MAX_LINE_BYTES = 32 * 1024 * 1024
_BOM = b"\xef\xbb\xbf"
_CHUNK = 1 << 20


@dataclass(frozen=True, slots=True)
class Line:
    """One non-blank line: ``value`` when it parsed, else ``problem`` (code, message)."""

    number: int
    value: Any = None
    problem: tuple[str, str] | None = None


class JsonlReader:
    """Iterate over a JSONL file's lines. After iteration: ``n_lines``, ``n_bytes``,
    ``sha256``, ``had_bom``, ``crlf_lines``, ``blank_lines``."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
        *,
        start: int = 0,
        end: int | None = None,
        hash_bytes: bool = True,
    ):
        self.path = Path(path)
        self.max_line_bytes = max_line_bytes
        self.start = start
        self.end = end
        self.hash_bytes = hash_bytes
        self.n_lines = 0
        self.n_bytes = 0
        self.had_bom = False
        self.crlf_lines = 0
        self.blank_lines = 0
        self._sha = hashlib.sha256()
        if not self.path.exists():
            raise DataError(str(path), "no such file")
        if self.path.is_dir():
            raise DataError(str(path), "is a directory, not a JSONL file")

    @property
    def sha256(self) -> str:
        return self._sha.hexdigest()

    def _raw_lines(self, f: IO[bytes]) -> Iterator[tuple[int, bytes | None]]:
        """(line number, bytes) pairs; bytes is None for a line over the limit."""
        number = 0
        limit = self.max_line_bytes
        size = self.end - self.start if self.end is not None else None
        update = self._sha.update if self.hash_bytes else _no_hash
        if self.start:
            f.seek(self.start)
        while size is None or self.n_bytes < size:
            raw = f.readline(limit + 1)
            if not raw:
                return
            number += 1
            update(raw)
            self.n_bytes += len(raw)
            if len(raw) > limit and not raw.endswith(b"\n"):
                while True:  # skip the rest of the over-long line, hashing it too
                    rest = f.readline(_CHUNK)
                    update(rest)
                    self.n_bytes += len(rest)
                    if not rest or rest.endswith(b"\n"):
                        break
                yield number, None
                continue
            yield number, raw

    def __iter__(self) -> Iterator[Line]:
        try:
            f = self.path.open("rb")
        except OSError as exc:
            raise DataError(str(self.path), f"cannot read: {exc.strerror or exc}") from exc
        with f:
            for number, raw in self._raw_lines(f):
                self.n_lines = number
                if raw is None:
                    mib = self.max_line_bytes // (1024 * 1024)
                    yield Line(number, problem=("line_too_long", f"line is longer than {mib} MiB"))
                    continue
                if number == 1 and self.start == 0 and raw.startswith(_BOM):
                    self.had_bom = True
                    raw = raw[len(_BOM) :]
                if raw.endswith(b"\r\n"):
                    self.crlf_lines += 1
                if not raw.strip():
                    self.blank_lines += 1
                    continue
                yield self._parse(number, raw)

    @staticmethod
    def _parse(number: int, raw: bytes) -> Line:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            return Line(
                number,
                problem=("invalid_utf8", f"invalid UTF-8 at byte {exc.start + 1} of the line"),
            )
        try:
            return Line(number, value=json.loads(text))
        except RecursionError:
            return Line(number, problem=("too_deep", "JSON nested too deeply to parse"))
        except json.JSONDecodeError as exc:
            hint = ""
            stripped = text.strip()
            if stripped.endswith(("{", "[", ",")) or stripped in ("}", "]", "},", "],"):
                hint = " (this looks like pretty-printed JSON: JSONL needs one object per line)"
            return Line(number, problem=("invalid_json", f"invalid JSON: {exc.msg}{hint}"))


def _no_hash(_: bytes) -> None:
    return None


def line_ranges(path: str | os.PathLike[str], size: int, range_bytes: int) -> list[tuple[int, int]]:
    """Split the first ``size`` bytes of ``path`` into ``(start, end)`` ranges of about
    ``range_bytes`` each, every boundary at the start of a line (just after a newline), so
    no line is split; a line longer than a range makes that range longer."""
    ranges: list[tuple[int, int]] = []
    start = 0
    with open(path, "rb") as f:
        while start < size:
            target = start + max(1, range_bytes)
            if target >= size:
                ranges.append((start, size))
                break
            f.seek(target - 1)  # a newline just before target makes target a line start
            end = size
            pos = target - 1
            while pos < size:
                chunk = f.read(_CHUNK)
                if not chunk:
                    break
                i = chunk.find(b"\n")
                if i >= 0:
                    end = pos + i + 1
                    break
                pos += len(chunk)
            ranges.append((start, min(end, size)))
            start = min(end, size)
    return ranges

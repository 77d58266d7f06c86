"""The held-out examples of ``evaluate.file``: a prompt and the reference answer to it.

The file has the training data's formats (:mod:`orchestrator.data.formats`). A chat example's
reference is its last assistant message and its prompt every message before it; a
prompt/completion example's are its completion and its prompt. An unreadable or invalid line
is a :class:`~orchestrator.core.errors.DataError` naming the file and line (exit 2), as in the
training data's checks.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.core.errors import DataError
from orchestrator.data.formats import CHAT, Problem, check_example, detect_format
from orchestrator.data.reader import JsonlReader

__all__ = ["EvalExample", "example_of", "read_examples"]


@dataclass(frozen=True)
class EvalExample:
    """One held-out example: ``messages`` (chat) or ``prompt`` (prompt/completion), and the
    ``reference`` answer."""

    line: int
    reference: str
    messages: tuple[dict[str, str], ...] = ()
    prompt: str | None = None

    @property
    def is_chat(self) -> bool:
        """Whether the example is a conversation (else a prompt)."""
        return self.prompt is None

    @property
    def key(self) -> str:
        """The prompt as one string: what an answer is cached and seeded by."""
        if self.prompt is not None:
            return self.prompt
        return "\n".join(f"{m['role']}: {m['content']}" for m in self.messages)


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            str(p.get("text", ""))
            for p in content
            if isinstance(p, dict) and p.get("type") == "text"
        )
    return ""


def _example(line: int, value: dict[str, Any], path: Path) -> EvalExample:
    if detect_format(value) == CHAT:
        msgs = [m for m in value["messages"] if isinstance(m, dict)]
        last = max((i for i, m in enumerate(msgs) if m.get("role") == "assistant"), default=None)
        if last is None or last == 0:
            raise DataError(str(path), "no assistant answer after a prompt to score", line)
        prompt = tuple(
            {"role": str(m.get("role")), "content": _text(m.get("content"))} for m in msgs[:last]
        )
        return EvalExample(line, _text(msgs[last].get("content")), messages=prompt)
    return EvalExample(line, str(value.get("completion", "")), prompt=str(value.get("prompt", "")))


def example_of(value: Any, line: int = 0) -> EvalExample | None:
    """The example a parsed JSONL line holds, or None when it is not a usable one."""
    kind = detect_format(value)
    if isinstance(kind, Problem) or any(p.error for p in check_example(kind, value)):
        return None
    try:
        return _example(line, value, Path("-"))
    except DataError:
        return None


def read_examples(path: Path, limit: int | None = None) -> list[EvalExample]:
    """The first ``limit`` (default all) examples of ``path``; a bad line or an empty file is
    a :class:`DataError`."""
    found: list[EvalExample] = []
    fmt: str | None = None
    for line in JsonlReader(path):
        if limit is not None and len(found) >= limit:
            break
        if line.problem is not None:
            raise DataError(str(path), line.problem[1], line.number)
        kind = detect_format(line.value)
        if isinstance(kind, Problem):
            raise DataError(str(path), kind.message, line.number)
        if fmt is not None and kind != fmt:
            raise DataError(str(path), f"a {kind} example in a {fmt} file", line.number)
        fmt = kind
        errors = [p for p in check_example(kind, line.value) if p.error]
        if errors:
            raise DataError(str(path), errors[0].message, line.number)
        found.append(_example(line.number, line.value, path))
    if not found:
        raise DataError(str(path), "no examples to evaluate")
    return found

"""The two training-data formats and the checks of a single example.

* **chat**: ``{"messages": [{"role": ..., "content": ...}, ...]}`` with optional ``tools`` /
  ``functions`` / ``parallel_tool_calls``; assistant messages may carry ``weight`` 0 or 1,
  ``tool_calls`` or ``function_call``; content may be a list of parts (text, images).
* **prompt_completion** (legacy): ``{"prompt": "...", "completion": "..."}``.

:func:`check_example` returns the example's problems; an empty list means it is usable.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

__all__ = ["CHAT", "PROMPT_COMPLETION", "Problem", "check_example", "detect_format"]

CHAT = "chat"
PROMPT_COMPLETION = "prompt_completion"

ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
MESSAGE_KEYS = frozenset(
    {"role", "content", "name", "function_call", "tool_calls", "tool_call_id", "weight", "refusal"}
)
CHAT_KEYS = frozenset({"messages", "tools", "functions", "parallel_tool_calls"})
PC_KEYS = frozenset({"prompt", "completion"})
_PART_TYPES = frozenset({"text", "image_url"})


@dataclass(frozen=True, slots=True)
class Problem:
    code: str
    message: str
    error: bool = True


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}.get(
        type(value), "a number"
    )


def detect_format(value: Any) -> str | Problem:
    """The format of one parsed line, or the problem that makes it neither."""
    if not isinstance(value, dict):
        return Problem("data_type", f"expected a JSON object, got {_type_name(value)}")
    if "messages" in value:
        return CHAT
    if "prompt" in value or "completion" in value:
        return PROMPT_COMPLETION
    if "preferred_output" in value or "input" in value:
        return Problem("unsupported_format", "preference (DPO) examples are not supported")
    keys = ", ".join(sorted(value)[:5]) or "none"
    return Problem(
        "unknown_format",
        f"neither 'messages' nor 'prompt'/'completion' in the object (keys: {keys})",
    )


def check_example(fmt: str, value: dict[str, Any], special: Iterable[str] = ()) -> list[Problem]:
    """Structural problems of one example of format ``fmt``; ``special`` are token strings the
    API rejects inside text (such as ``<|endoftext|>``)."""
    problems = _check_chat(value) if fmt == CHAT else _check_pc(value)
    if not any(p.error for p in problems):
        for text in _texts(fmt, value):
            hit = next((tok for tok in special if tok in text), None)
            if hit is not None:
                problems.append(Problem("special_token", f"text contains the reserved token {hit}"))
                break
    return problems


def _texts(fmt: str, value: dict[str, Any]) -> Iterable[str]:
    if fmt == PROMPT_COMPLETION:
        yield value["prompt"]
        yield value["completion"]
        return
    for message in value["messages"]:
        content = message.get("content")
        if isinstance(content, str):
            yield content
        elif isinstance(content, list):
            for part in content:
                if isinstance(part.get("text"), str):
                    yield part["text"]


def _check_pc(value: dict[str, Any]) -> list[Problem]:
    problems: list[Problem] = []
    for key in ("prompt", "completion"):
        if key not in value:
            problems.append(Problem("missing_field", f"no '{key}' field"))
        elif not isinstance(value[key], str):
            problems.append(
                Problem("not_a_string", f"'{key}' must be a string, got {_type_name(value[key])}")
            )
    if problems:
        return problems
    extra = sorted(set(value) - PC_KEYS)
    if extra:
        problems.append(
            Problem(
                "extra_fields", f"fields other than prompt/completion are ignored: {extra}", False
            )
        )
    if not value["completion"].strip():
        problems.append(Problem("empty_completion", "completion is empty or whitespace only"))
    elif value["prompt"] and not value["prompt"].strip():
        problems.append(Problem("blank_prompt", "prompt is whitespace only", False))
    return problems


def _check_chat(value: dict[str, Any]) -> list[Problem]:
    messages = value.get("messages")
    if not isinstance(messages, list) or not messages:
        got = "empty" if messages == [] else _type_name(messages)
        return [
            Problem("missing_messages_list", f"'messages' must be a non-empty array, got {got}")
        ]
    problems: list[Problem] = []
    extra = sorted(set(value) - CHAT_KEYS)
    if extra:
        problems.append(Problem("extra_fields", f"unknown top-level fields: {extra}", False))
    has_assistant = False
    for i, message in enumerate(messages, 1):
        where = f"message {i}"
        if not isinstance(message, dict):
            problems.append(
                Problem("message_type", f"{where} must be an object, got {_type_name(message)}")
            )
            continue
        role = message.get("role")
        if "role" not in message:
            problems.append(Problem("message_missing_key", f"{where} has no 'role'"))
            continue
        if role not in ROLES:
            shown = role if isinstance(role, str) else _type_name(role)
            problems.append(Problem("unrecognized_role", f"{where} has unknown role {shown!r}"))
            continue
        unknown = sorted(set(message) - MESSAGE_KEYS)
        if unknown:
            problems.append(
                Problem("message_unrecognized_key", f"{where} ({role}) has unknown keys {unknown}")
            )
        problems.extend(_check_content(where, role, message))
        if role == "assistant":
            has_assistant = True
            weight = message.get("weight", 1)
            if weight not in (0, 1) or isinstance(weight, bool):
                problems.append(Problem("invalid_weight", f"{where} weight must be 0 or 1"))
        elif "weight" in message:
            problems.append(
                Problem("invalid_weight", f"{where}: only assistant messages take a weight")
            )
    if not has_assistant:
        problems.append(Problem("example_missing_assistant_message", "no assistant message"))
    return problems


def _check_content(where: str, role: str, message: dict[str, Any]) -> list[Problem]:
    content = message.get("content")
    calls = message.get("tool_calls") or message.get("function_call")
    if content is None:
        if role == "assistant" and calls:
            return []
        return [Problem("missing_content", f"{where} ({role}) has no content")]
    if isinstance(content, list):
        for part in content:
            if not isinstance(part, dict) or part.get("type") not in _PART_TYPES:
                return [Problem("invalid_content", f"{where} ({role}) has an invalid content part")]
            if part["type"] == "text" and not isinstance(part.get("text"), str):
                return [
                    Problem("invalid_content", f"{where} ({role}) text part has no string 'text'")
                ]
        return []
    if not isinstance(content, str):
        return [
            Problem(
                "missing_content",
                f"{where} ({role}) content must be a string, got {_type_name(content)}",
            )
        ]
    if not content.strip() and not calls:
        if role == "assistant":
            return [Problem("empty_content", f"{where} (assistant) content is empty")]
        return [
            Problem("blank_content", f"{where} ({role}) content is empty or whitespace only", False)
        ]
    return []

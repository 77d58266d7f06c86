"""Pydantic errors as sweep-file errors read: ``(field path, problem)``.

Also :func:`printable`, which keeps a user's text (a key, a path) on one line in a message.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, get_args, get_origin

from pydantic import BaseModel, ValidationError

__all__ = ["describe_validation_error", "printable"]

#: characters of one piece of user text kept in a message (a 500 kB key stays readable)
MAX_SHOWN = 120


def printable(text: str, limit: int = MAX_SHOWN) -> str:
    """``text`` with control characters escaped (so a message stays one line), cut to
    ``limit`` characters with an ellipsis."""
    if not text.isprintable():
        text = "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def _field_path(loc: Sequence[int | str]) -> str:
    return ".".join(printable(str(p)) for p in loc if p not in ("__root__",))


def _names_a_field(head: str) -> bool:
    parts = head.split(".")
    return (
        all(parts)
        and not any(c.isspace() for c in head)
        and (parts[0].isidentifier() or parts[0].isdigit())
    )


def _message(err: Mapping[str, Any]) -> str:
    msg = str(err["msg"])
    for prefix in ("Value error, ", "Assertion failed, "):
        msg = msg.removeprefix(prefix)
    if err["type"] == "extra_forbidden":
        return "unknown field"
    if err["type"] == "missing":
        return "required field is missing"
    return msg[0].lower() + msg[1:] if msg else msg


# -- pydantic's union-member segments --------------------------------------------------------
# For a field typed ``bool | LoraSpec | None``, pydantic reports each member it tried, with
# the member's name in the location (``lora.bool``, ``lora.LoraSpec.x``). The file has no such
# level, so the location is walked along the model's types and those segments are dropped.


def _unwrap(tp: Any) -> Any:
    while True:
        if get_origin(tp) is Annotated:
            tp = get_args(tp)[0]
            continue
        members = _union_members(tp, keep_single=True)
        if members is not None and len(members) == 1:
            tp = members[0]
            continue
        return tp


def _union_members(tp: Any, *, keep_single: bool = False) -> list[Any] | None:
    if get_origin(tp) not in (typing.Union, types.UnionType):
        return None
    members = [a for a in get_args(tp) if a is not type(None)]
    return members if len(members) > 1 or keep_single else None


def _member_named(members: list[Any], segment: int | str) -> Any:
    for m in members:
        origin = get_origin(m) or m
        name = getattr(origin, "__name__", None)
        if name is not None and str(segment).split("[", 1)[0] == name:
            return m
    return None


def _child(tp: Any, segment: int | str) -> Any:
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        info = tp.model_fields.get(str(segment))
        return info.annotation if info is not None else None
    origin, args = get_origin(tp), get_args(tp)
    if origin in (list, tuple, set, frozenset, Sequence) and args:
        return args[0]
    if origin in (dict, Mapping) and len(args) == 2:
        return args[1]
    return None


def _plain_location(
    model: type[BaseModel] | None, loc: Sequence[int | str]
) -> tuple[tuple[int | str, ...], int | None]:
    """``loc`` without union-member segments, and how many segments come before the first
    union (None when the location crosses none)."""
    out: list[int | str] = []
    first_union: int | None = None
    tp: Any = model
    for segment in loc:
        tp = _unwrap(tp)
        members = _union_members(tp)
        if members is not None:  # this segment names the member pydantic tried
            first_union = len(out) if first_union is None else first_union
            tp = _member_named(members, segment)
            continue
        out.append(segment)
        tp = _child(tp, segment)
    return tuple(out), first_union


def _fields_at(model: type[BaseModel] | None, loc: Sequence[int | str]) -> list[str]:
    """The field names (and aliases) that the model accepts at ``loc`` (a plain location)."""
    tp: Any = model
    for segment in loc:
        tp = _child(_unwrap(tp), segment)
    tp = _unwrap(tp)
    if not (isinstance(tp, type) and issubclass(tp, BaseModel)):
        return []
    names: list[str] = []
    for name, info in tp.model_fields.items():
        names.append(info.alias or name)
    return names


def did_you_mean(word: str, known: Sequence[str]) -> str:
    """`` (did you mean 'trials'?)`` when ``word`` is a likely typo of one of ``known``."""
    import difflib

    close = difflib.get_close_matches(word, list(known), n=1, cutoff=0.7)
    return f" (did you mean {close[0]!r}?)" if close else ""


def describe_validation_error(
    exc: ValidationError, model: type[BaseModel] | None = None
) -> tuple[str, str]:
    """``(field path, problem)`` of pydantic's first problem, as sweep-file errors read.

    Union members are folded into one problem at the field's own path: of the members'
    errors, the deepest one wins (the member the value came closest to matching), and errors
    at the same depth are joined (``input should be a valid string or a valid list``).
    Further problems are counted: ``(and 2 more problems)``.
    """
    problems: list[tuple[str, tuple[int | str, ...], str]] = []  # (group, location, message)
    for err in exc.errors():
        loc, first_union = _plain_location(model, err["loc"])
        msg = _message(err)
        if err["type"] == "extra_forbidden" and loc and first_union is None:
            msg += did_you_mean(str(loc[-1]), _fields_at(model, loc[:-1]))
        head, sep, rest = msg.partition(": ")
        if sep and _names_a_field(head):  # "high: must be >= low (2)", "options.x: ..."
            loc, msg = (*loc, *head.split(".")), rest
        group = _field_path(loc if first_union is None else loc[:first_union])
        problems.append((group, loc, msg))
    first = problems[0][0]
    mine = [p for p in problems if p[0] == first]
    deepest = max(len(loc) for _, loc, _ in mine)
    loc = next(loc for _, loc, _ in mine if len(loc) == deepest)
    messages: list[str] = []
    for _, other, msg in mine:
        if other == loc and msg not in messages:
            messages.append(msg)
    text = messages[0]
    for extra in messages[1:]:
        lead = "input should be "
        text += " or " + (extra.removeprefix(lead) if text.startswith(lead) else extra)
    more = len({group for group, _, _ in problems}) - 1
    if more:
        text += f" (and {more} more problem{'s' if more > 1 else ''})"
    return _field_path(loc), text

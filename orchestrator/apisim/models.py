"""The simulator's base-model lists (one per API), their entries, and how each API renders them.

An entry is ``{"id", "created", "owned_by", "shutdown_date", "fine_tunable"}``: ``created`` in
unix seconds, ``shutdown_date`` ``YYYY-MM-DD`` or null, ``fine_tunable`` a boolean. OpenAI
renders it as the spec's ``Model`` (``id, object, created, owned_by, shutdown_date``); Azure as
its 2024-10-21 model object (``capabilities.fine_tune``, ``lifecycle_status``,
``deprecation.fine_tune`` in unix seconds, ``created_at``).

The default lists reflect 2026-12 (``reference/updates-2026-12.md``): every fine-tunable
snapshot whose family the simulator trains, with the shutdown dates reported where known.
OpenAI: gpt-4o, gpt-4o-mini, gpt-4.1 and gpt-4.1-mini snapshots shut down on 2027-01-14,
gpt-4.1-nano and gpt-3.5-turbo on 2026-10-23 (secondary sources); babbage-002 and davinci-002
have no date. Azure: the gpt-4.1 family trains "to no earlier than 2027-04-14" (written as
that date); the others have no date. ``created`` is midnight UTC of each snapshot's date
(the release date for babbage-002 and davinci-002), not the provider's exact figure. Undated
names (``gpt-4o-mini``) are not listed: jobs on them run as before.
"""

from __future__ import annotations

import datetime
import math
from typing import Any

from orchestrator.core.errors import UsageError

__all__ = ["APIS", "FIELDS", "azure_model", "default_models", "openai_model", "parse_entry"]

APIS = ("openai", "azure")
FIELDS = ("id", "created", "owned_by", "shutdown_date", "fine_tunable")
_MAX_ENTRIES = 10_000


def _midnight(day: str) -> int:
    return int(datetime.datetime.fromisoformat(day).replace(tzinfo=datetime.UTC).timestamp())


def _entry(
    model_id: str, released: str, shutdown: str | None, owner: str = "system"
) -> dict[str, Any]:
    return {
        "id": model_id,
        "created": _midnight(released),
        "owned_by": owner,
        "shutdown_date": shutdown,
        "fine_tunable": True,
    }


_OPENAI_END = "2027-01-14"
_OPENAI_GONE = "2026-10-23"
_AZURE_41 = "2027-04-14"


def default_models() -> dict[str, list[dict[str, Any]]]:
    """A fresh copy of the default lists, by API."""
    return {
        "openai": [
            _entry("gpt-4o-mini-2024-07-18", "2024-07-18", _OPENAI_END),
            _entry("gpt-4o-2024-08-06", "2024-08-06", _OPENAI_END),
            _entry("gpt-4.1-2025-04-14", "2025-04-14", _OPENAI_END),
            _entry("gpt-4.1-mini-2025-04-14", "2025-04-14", _OPENAI_END),
            _entry("gpt-4.1-nano-2025-04-14", "2025-04-14", _OPENAI_GONE),
            _entry("gpt-3.5-turbo-0125", "2024-01-25", _OPENAI_GONE, "openai"),
            _entry("gpt-3.5-turbo-1106", "2023-11-06", _OPENAI_GONE),
            _entry("gpt-3.5-turbo-0613", "2023-06-13", _OPENAI_GONE, "openai"),
            _entry("babbage-002", "2023-08-22", None),
            _entry("davinci-002", "2023-08-22", None),
        ],
        "azure": [
            _entry("gpt-4o-mini-2024-07-18", "2024-07-18", None),
            _entry("gpt-4o-2024-08-06", "2024-08-06", None),
            _entry("gpt-4.1-2025-04-14", "2025-04-14", _AZURE_41),
            _entry("gpt-4.1-mini-2025-04-14", "2025-04-14", _AZURE_41),
            _entry("gpt-4.1-nano-2025-04-14", "2025-04-14", _AZURE_41),
            _entry("gpt-35-turbo-0125", "2024-01-25", None),
            # the open-weight models a Foundry resource trains (Global and Data zone; the
            # release days are a guess: the list carries no version for them)
            _entry("gpt-oss-20b", "2025-08-05", None),
            _entry("Llama-3.3-70B-Instruct", "2024-12-06", None),
            _entry("Qwen-32B", "2025-03-05", None),
            _entry("Ministral-3B", "2024-11-01", None),
        ],
    }


def parse_entry(raw: Any, where: str) -> dict[str, Any]:
    """One entry, checked strictly (a :class:`UsageError` naming ``where`` and the field);
    ``created`` defaults to now, ``owned_by`` to ``system``, ``fine_tunable`` to true."""
    if not isinstance(raw, dict):
        raise UsageError(f"{where}: a model entry must be an object")
    unknown = sorted(set(raw) - set(FIELDS))
    if unknown:
        raise UsageError(f"{where}.{unknown[0]}: unknown field (known: {', '.join(FIELDS)})")
    model_id = raw.get("id")
    if not isinstance(model_id, str) or not model_id.strip() or len(model_id) > 256:
        raise UsageError(f"{where}.id: a model id (a non-empty string) is required")
    if any(c.isspace() or c in "/?#" for c in model_id):
        raise UsageError(f"{where}.id: {model_id!r} cannot be a model id")
    created = raw.get("created")
    if created is None:
        created = int(datetime.datetime.now(datetime.UTC).timestamp())
    ok = isinstance(created, int | float) and not isinstance(created, bool)
    if not ok or not math.isfinite(created) or not 0 <= created < 2**40:
        raise UsageError(f"{where}.created: expected unix seconds (an integer >= 0)")
    owner = raw.get("owned_by", "system")
    if not isinstance(owner, str) or not owner:
        raise UsageError(f"{where}.owned_by: expected a non-empty string")
    shutdown = raw.get("shutdown_date")
    if shutdown is not None:
        try:
            ok = isinstance(shutdown, str) and len(shutdown) == 10
            day = datetime.date.fromisoformat(shutdown) if ok else None
        except ValueError:
            day = None
        if day is None:
            raise UsageError(f"{where}.shutdown_date: expected YYYY-MM-DD or null")
    tunable = raw.get("fine_tunable", True)
    if not isinstance(tunable, bool):
        raise UsageError(f"{where}.fine_tunable: expected true or false")
    return {
        "id": model_id,
        "created": int(created),
        "owned_by": owner,
        "shutdown_date": shutdown,
        "fine_tunable": tunable,
    }


def parse_list(raw: Any, where: str) -> list[dict[str, Any]]:
    """A whole list of entries (ids unique: a later entry replaces an earlier one)."""
    if not isinstance(raw, list) or len(raw) > _MAX_ENTRIES:
        raise UsageError(f"{where}: expected a list of at most {_MAX_ENTRIES} model entries")
    found: dict[str, dict[str, Any]] = {}
    for i, item in enumerate(raw):
        entry = parse_entry(item, f"{where}.{i}")
        found[entry["id"]] = entry
    return list(found.values())


def shutdown_of(entry: dict[str, Any]) -> datetime.date | None:
    day = entry.get("shutdown_date")
    return datetime.date.fromisoformat(day) if isinstance(day, str) else None


def openai_model(entry: dict[str, Any]) -> dict[str, Any]:
    """The spec's ``Model``."""
    return {
        "id": entry["id"],
        "object": "model",
        "created": entry["created"],
        "owned_by": entry["owned_by"],
        "shutdown_date": entry["shutdown_date"],
    }


def azure_model(entry: dict[str, Any]) -> dict[str, Any]:
    """Azure's model object (REST reference "Models - List", 2024-10-21). The simulator does
    not model inference retirement: ``deprecation`` carries ``fine_tune`` only, when set."""
    day = shutdown_of(entry)
    deprecation = {"fine_tune": _midnight(day.isoformat())} if day is not None else {}
    body: dict[str, Any] = {
        "id": entry["id"],
        "object": "model",
        "created_at": entry["created"],
        "status": "succeeded",
        "capabilities": {
            "fine_tune": entry["fine_tunable"],
            "inference": True,
            "completion": False,
            "chat_completion": True,
            "embeddings": False,
        },
        "lifecycle_status": "generally-available",
        "deprecation": deprecation,
    }
    if "model" in entry:  # a fine-tuned model: its base and job
        body["model"], body["fine_tune"] = entry["model"], entry["fine_tune"]
    return body

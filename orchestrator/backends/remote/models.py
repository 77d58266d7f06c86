"""Reading the provider's model list: OpenAI's and Azure's model objects as :class:`ModelInfo`.

* OpenAI (``GET /v1/models``): ``id``, ``created`` (unix seconds), ``owned_by`` and, where
  announced, ``shutdown_date`` (``YYYY-MM-DD``; read from the object's extra fields when the
  SDK's ``Model`` type does not declare it). OpenAI's list does not say what can be
  fine-tuned: ``fine_tunable`` is None.
* Azure OpenAI (``GET /openai/models?api-version=...``, REST reference "Models - List"):
  ``id``, ``created_at``, ``capabilities: {fine_tune, inference, ...}``, ``lifecycle_status``
  and ``deprecation: {fine_tune, inference}`` in unix seconds. ``shutdown_date`` is the day
  (UTC) of ``deprecation.fine_tune``, else of ``deprecation.inference`` (a model that no
  longer serves cannot be trained either); ``fine_tunable`` is ``capabilities.fine_tune``.

Anything missing or malformed is None: a list entry never fails the whole list.
"""

from __future__ import annotations

import datetime
import math
from collections.abc import Iterable, Mapping
from typing import Any

from orchestrator.backends.base import ModelInfo

__all__ = ["model_info_of", "models_of", "parse_date"]


def _field(obj: Any, name: str) -> Any:
    """``obj.name``, from a declared attribute, the SDK's extra fields, or a mapping."""
    if isinstance(obj, Mapping):
        return obj.get(name)
    value = getattr(obj, name, None)
    if value is None:
        extra = getattr(obj, "model_extra", None) or {}
        value = extra.get(name) if isinstance(extra, Mapping) else None
    return value


def parse_date(value: Any) -> datetime.date | None:
    """A date from ``YYYY-MM-DD`` (or an ISO date-time), or from unix seconds (its UTC day)."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        if not math.isfinite(value) or value <= 0:
            return None
        try:
            return datetime.datetime.fromtimestamp(value, datetime.UTC).date()
        except (OverflowError, OSError, ValueError):
            return None
    if isinstance(value, str):
        text = value.strip()
        try:
            return datetime.date.fromisoformat(text[:10])
        except ValueError:
            return None
    return None


def _int(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return int(value) if math.isfinite(value) else None


def model_info_of(obj: Any) -> ModelInfo | None:
    """One list entry (an SDK ``Model`` or a plain mapping) as :class:`ModelInfo`; None
    without an id."""
    model_id = _field(obj, "id")
    if not isinstance(model_id, str) or not model_id:
        return None
    created = _int(_field(obj, "created"))
    if created is None:
        created = _int(_field(obj, "created_at"))
    shutdown = parse_date(_field(obj, "shutdown_date"))
    fine_tunable: bool | None = None
    capabilities = _field(obj, "capabilities")
    if isinstance(capabilities, Mapping) and isinstance(capabilities.get("fine_tune"), bool):
        fine_tunable = capabilities["fine_tune"]
    deprecation = _field(obj, "deprecation")
    if shutdown is None and isinstance(deprecation, Mapping):
        shutdown = parse_date(deprecation.get("fine_tune")) or parse_date(
            deprecation.get("inference")
        )
    return ModelInfo(model_id, created, shutdown, fine_tunable)


def models_of(items: Iterable[Any]) -> list[ModelInfo]:
    """The entries of a model list page that have an id, in the provider's order."""
    return [info for item in items if (info := model_info_of(item)) is not None]

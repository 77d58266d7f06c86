"""OpenAI/Azure model names: snapshots, Azure spellings, fine-tuned ids, aliases and sunsets.

Pure functions, no I/O: the provider's model list comes in as
:class:`~orchestrator.backends.base.ModelInfo` entries (from
:meth:`~orchestrator.backends.base.Backend.list_models`) and the date as ``today``.

* **Families.** ``gpt-4o-mini-2024-07-18`` belongs to the family ``gpt-4o-mini``
  (:func:`family`); so do Azure's ``gpt-4o-mini.ft-<hex>``, OpenAI's
  ``ft:gpt-4o-mini-2024-07-18:org:sfx:id`` and the alias ``gpt-4o-mini@latest``.
* **Aliases.** ``FAMILY@latest`` in a sweep file's ``backend.model`` names the newest dated
  snapshot (``FAMILY-YYYY-MM-DD``) of that family in the provider's list (:func:`resolve_model`):
  newest by the date in the id, ties broken by ``created``; snapshots already shut down and
  those the provider marks as not fine-tunable are passed over, unless only shut-down ones are
  left (then the newest of them, so the caller can report the sunset). Offline, an alias counts
  as its family (token counts, prices).
* **Sunsets.** :func:`sunset` reads a model's shutdown date from the list and proposes a
  replacement; :func:`sunset_message` says it in one line.
"""

from __future__ import annotations

import datetime
import difflib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from orchestrator.catalog.models import (
    MODELS,
    OPENAI_JOBS_END,
    open_weight_models,
    openai_trainable,
)
from orchestrator.core import clock
from orchestrator.core.errors import UnknownModelError

__all__ = [
    "ALIAS_SUFFIX",
    "ANNOUNCED_SHUTDOWNS",
    "OPENAI_JOBS_END",
    "SUCCESSORS",
    "ModelInfo",
    "Sunset",
    "alias_family",
    "announced_sunset",
    "family",
    "is_alias",
    "openai_jobs_note",
    "openai_jobs_refusal",
    "resolve_model",
    "snapshot_date",
    "sunset",
    "sunset_message",
    "trainable_line",
]


@dataclass(frozen=True)
class ModelInfo:
    """One base model in a provider's list (:meth:`Backend.list_models`).

    ``created``: unix seconds, as the provider says; ``shutdown_date``: the day the provider
    stops it (for fine-tuning, where the provider distinguishes fine-tuning from inference),
    None when none is announced; ``fine_tunable``: whether the provider says it can be
    fine-tuned, None when the list does not say."""

    id: str
    created: int | None = None
    shutdown_date: datetime.date | None = None
    fine_tunable: bool | None = None


ALIAS_SUFFIX = "@latest"
_ALIAS = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)@latest$")
_SNAPSHOT = re.compile(r"^(.+)-(\d{4})-(\d{2})-(\d{2})$")


#: family -> the family to move to when no snapshot of it remains (the model table's
#: successors, with their sources: :mod:`orchestrator.catalog.models`). Chains are followed
#: (gpt-3.5-turbo -> gpt-4o-mini -> gpt-4.1-mini).
SUCCESSORS: dict[str, str] = {m.name: m.successor for m in MODELS.values() if m.successor}


#: shutdowns OpenAI announced for its fine-tuning base models, by family (the model table's,
#: with their sources). Offline knowledge for ``ftsweep validate``; a provider's model list
#: says more.
ANNOUNCED_SHUTDOWNS: dict[str, datetime.date] = {
    m.name: m.shutdown for m in MODELS.values() if m.shutdown
}


def announced_sunset(model: str, today: datetime.date) -> Sunset | None:
    """The shutdown OpenAI announced for ``model``'s family (:data:`ANNOUNCED_SHUTDOWNS`),
    with the successor family that outlives it, if any; None for other models."""
    fam = family(model, ANNOUNCED_SHUTDOWNS)
    if fam is None:
        return None
    end = ANNOUNCED_SHUTDOWNS[fam]
    replacement = SUCCESSORS.get(fam)
    while replacement is not None and ANNOUNCED_SHUTDOWNS.get(replacement, end) <= max(end, today):
        replacement = SUCCESSORS.get(replacement)
    return Sunset(model, end, end <= today, replacement, (end - today).days)


def family(model: str, known: Iterable[str]) -> str | None:
    """The entry of ``known`` that ``model`` belongs to, or None.

    ``gpt-4o-mini-2024-07-18`` belongs to ``gpt-4o-mini``, Azure's ``gpt-35-turbo-0125`` to
    ``gpt-3.5-turbo``, ``ft:gpt-4.1-nano-2025-04-14:org:sfx:id`` and Azure's
    ``gpt-4o-mini.ft-<hex>`` to their base, the alias ``gpt-4o-mini@latest`` to
    ``gpt-4o-mini``; the longest matching name wins.
    """
    name = model.strip()
    if is_alias(name):
        name = alias_family(name)
    if name.startswith("ft:"):
        name = name.split(":")[1]
    name = name.replace("gpt-35", "gpt-3.5").split(".ft-")[0]
    names = set(known)
    if name in names:
        return name
    for candidate in sorted(names, key=len, reverse=True):
        if name.startswith(candidate + "-"):
            return candidate
    return None


# -- aliases --------------------------------------------------------------------------------
def is_alias(name: str) -> bool:
    """Is ``name`` an alias (``FAMILY@latest``, e.g. ``gpt-4o-mini@latest``)?"""
    return _ALIAS.match(name.strip()) is not None


def alias_family(name: str) -> str:
    """The family an alias names (``gpt-4o-mini@latest`` -> ``gpt-4o-mini``); any other name
    is returned unchanged (stripped)."""
    m = _ALIAS.match(name.strip())
    return m.group(1) if m else name.strip()


def snapshot_date(model_id: str, of_family: str | None = None) -> datetime.date | None:
    """The date in a dated snapshot id (``gpt-4o-mini-2024-07-18`` -> 2024-07-18), or None;
    with ``of_family``, only for a snapshot of that family."""
    m = _SNAPSHOT.match(model_id)
    if m is None or (of_family is not None and m.group(1) != of_family):
        return None
    try:
        return datetime.date(int(m.group(2)), int(m.group(3)), int(m.group(4)))
    except ValueError:
        return None


def _shut(m: ModelInfo, today: datetime.date) -> bool:
    return m.shutdown_date is not None and m.shutdown_date <= today


def _snapshots(fam: str, models: Sequence[ModelInfo]) -> list[ModelInfo]:
    """The fine-tunable (or unmarked) dated snapshots of ``fam``, newest first."""
    found = [
        m for m in models if snapshot_date(m.id, fam) is not None and m.fine_tunable is not False
    ]
    return sorted(found, key=lambda m: (snapshot_date(m.id, fam), m.created or 0), reverse=True)


def _nearest(name: str, models: Sequence[ModelInfo], n: int = 3) -> list[str]:
    ids = sorted({m.id for m in models})
    close = difflib.get_close_matches(name, ids, n=n, cutoff=0.4)
    return close or ids[:n]


def resolve_model(name: str, models: Sequence[ModelInfo], today: datetime.date) -> str:
    """The model id to train: an alias resolves to its newest snapshot in ``models`` (see the
    module docstring); a plain name is itself, checked against ``models`` when the list is not
    empty (listed, or the undated name of a family with listed snapshots).

    Raises :class:`~orchestrator.core.errors.UnknownModelError` (one line) when an alias has no
    snapshot in the list, or a plain name is not listed (naming the nearest listed ids)."""
    name = name.strip()
    if is_alias(name):
        fam = alias_family(name)
        snaps = _snapshots(fam, models)
        live = [m for m in snaps if not _shut(m, today)]
        if live or snaps:
            return (live or snaps)[0].id
        related = sorted(
            m.id for m in models if m.id == fam or snapshot_date(m.id, fam) is not None
        )
        if related:
            has = f"for {fam} it lists only {', '.join(related[:5])}"
            has += " (no fine-tunable FAMILY-YYYY-MM-DD snapshot)"
        elif models:
            has = f"it lists nothing of {fam} (nearest: {', '.join(_nearest(fam, models))})"
        else:
            has = "it lists no models"
        raise UnknownModelError(
            f"{name}: the provider's model list has no snapshot of {fam}; {has}"
        )
    if not models or any(m.id == name for m in models) or _snapshots(name, models):
        return name
    raise UnknownModelError(
        f"unknown model {name!r}: the provider does not list it "
        f"(nearest: {', '.join(_nearest(name, models))})"
    )


# -- sunsets --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Sunset:
    """A base model's shutdown, from the provider's list.

    ``passed``: it is shut down (``date <= today``); ``replacement``: the newest listed
    snapshot, of its family or of a successor family (:data:`SUCCESSORS`), that outlives it
    and is not shut down, or None; ``days_left``: days from ``today`` to ``date`` (negative
    once passed), None when unknown."""

    model: str
    date: datetime.date
    passed: bool
    replacement: str | None
    days_left: int | None = None


def _replacement(
    model_id: str,
    fam: str | None,
    end: datetime.date,
    models: Sequence[ModelInfo],
    today: datetime.date,
) -> str | None:
    seen: set[str] = set()
    while fam is not None and fam not in seen:
        seen.add(fam)
        for m in _snapshots(fam, models):
            outlives = m.shutdown_date is None or m.shutdown_date > end
            if m.id != model_id and outlives and not _shut(m, today):
                return m.id
        fam = SUCCESSORS.get(fam)
    return None


def _family_of(model_id: str) -> str | None:
    m = _SNAPSHOT.match(model_id)
    if m is not None and snapshot_date(model_id) is not None:
        return m.group(1)
    base = family(model_id, [*SUCCESSORS, *SUCCESSORS.values()])
    return base or model_id


def sunset(model_id: str, models: Sequence[ModelInfo], today: datetime.date) -> Sunset | None:
    """When ``model_id`` shuts down according to ``models``, and what to use instead; None
    when the list gives it no shutdown date (or does not list it).

    An alias is resolved first; an undated family name that is not listed itself takes the
    date of the snapshot it resolves to (its newest fine-tunable one)."""
    model_id = model_id.strip()
    if is_alias(model_id):
        try:
            model_id = resolve_model(model_id, models, today)
        except UnknownModelError:
            return None
    entry = next((m for m in models if m.id == model_id), None)
    if entry is None:
        snaps = _snapshots(model_id, models)
        live = [m for m in snaps if not _shut(m, today)]
        entry = (live or snaps)[0] if snaps else None
    if entry is None or entry.shutdown_date is None:
        return None
    end = entry.shutdown_date
    fam = _family_of(entry.id)
    replacement = _replacement(entry.id, fam, end, models, today)
    return Sunset(model_id, end, end <= today, replacement, (end - today).days)


def sunset_message(s: Sunset, field: str = "backend.model", *, backend: str | None = None) -> str:
    """One line: ``base model M was shut down on D: put R in backend.model`` or ``base model M
    shuts down on D (in N days): ...``. Without a replacement it says to name another base
    model, or, for ``backend="openai"`` (which takes no new jobs from
    :data:`OPENAI_JOBS_END`), to move to the azure or local backend."""
    if s.passed:
        head = f"base model {s.model} was shut down on {s.date.isoformat()}"
    else:
        days = s.days_left
        if days is None:
            days = (s.date - clock.today()).days
        when = "today" if days <= 0 else f"in {days} day{'s' if days != 1 else ''}"
        head = f"base model {s.model} shuts down on {s.date.isoformat()} ({when})"
    if s.replacement is not None:
        return f"{head}: put {s.replacement} in {field}"
    if backend == "openai":
        return (
            f"{head} and no later OpenAI model remains (OpenAI takes no new fine-tuning jobs "
            f"from {OPENAI_JOBS_END.isoformat()}): move to the azure or local backend"
        )
    return f"{head} and the provider lists no later snapshot: name another base model in {field}"


# -- OpenAI's last weeks --------------------------------------------------------------------
def _alternatives() -> str:
    return (
        "move this sweep to the azure backend (an open-weight model: "
        + ", ".join(open_weight_models())
        + "; training_type global) or the local backend"
    )


def openai_jobs_note(today: datetime.date) -> str | None:
    """One line on the days of job creation OpenAI has left (to :data:`OPENAI_JOBS_END`),
    for ``validate``, ``estimate`` and ``run``; None once it has passed (then
    :func:`openai_jobs_refusal` speaks)."""
    days = (OPENAI_JOBS_END - today).days
    if days <= 0:
        return None
    return (
        f"OpenAI takes new fine-tuning jobs for {days} more day{'s' if days != 1 else ''} "
        f"(none from {OPENAI_JOBS_END.isoformat()}; its base models and their fine-tunes shut "
        f"down on 2027-01-14): {_alternatives()}"
    )


def openai_jobs_refusal(today: datetime.date, *, refused: bool = False) -> str | None:
    """The one line on OpenAI taking no new jobs from :data:`OPENAI_JOBS_END` on, naming the
    Azure and local alternatives; None before. ``refused``: as the openai backend's refusal
    of a job (``openai: ... (nothing was uploaded): ...``)."""
    if today < OPENAI_JOBS_END:
        return None
    head = f"OpenAI takes no new fine-tuning jobs since {OPENAI_JOBS_END.isoformat()}"
    if refused:
        head = f"openai: {head} (nothing was uploaded)"
    return f"{head}: {_alternatives()}"


def trainable_line(today: datetime.date) -> str:
    """The OpenAI models one can still train, with their dates, for the model lists that
    errors offer: ``gpt-4o-mini, gpt-4o, gpt-4.1, gpt-4.1-mini (new jobs until 2027-01-06;
    shut down 2027-01-14)``, or that none is left."""
    names = openai_trainable(today)
    if not names:
        return f"none: OpenAI takes no new fine-tuning jobs since {OPENAI_JOBS_END.isoformat()}"
    ends = sorted({day for n in names if (day := MODELS[n].shutdown) is not None})
    shut = "/".join(d.isoformat() for d in ends)
    return f"{', '.join(names)} (new jobs until {OPENAI_JOBS_END.isoformat()}; shut down {shut})"

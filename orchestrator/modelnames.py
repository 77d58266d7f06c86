"""OpenAI/Azure model names: snapshots, Azure spellings and fine-tuned ids to their family."""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["family"]


def family(model: str, known: Iterable[str]) -> str | None:
    """The entry of ``known`` that ``model`` belongs to, or None.

    ``gpt-4o-mini-2024-07-18`` belongs to ``gpt-4o-mini``, Azure's ``gpt-35-turbo-0125`` to
    ``gpt-3.5-turbo``, ``ft:gpt-4.1-nano-2025-04-14:org:sfx:id`` and Azure's
    ``gpt-4o-mini.ft-<hex>`` to their base; the longest matching name wins.
    """
    name = model.strip()
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

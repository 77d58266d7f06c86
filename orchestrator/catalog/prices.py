"""Training prices and cost arithmetic.

Prices are configuration: USD per 1M trained tokens (trained tokens = tokens in the training
file x epochs), per provider, model family and, on Azure, training tier, read from the shipped
table ``orchestrator/catalog/prices.toml`` (its header says where each number comes from). A sweep
file overrides them (``prices:`` or ``backend.options.prices:``): ``MODEL: price`` for every tier,
``MODEL/TIER: price`` (e.g. ``gpt-4.1-mini/developer``) for one tier. Azure bills similar
per-token training prices plus an hourly hosting fee for deployed models (not for training).
"""

from __future__ import annotations

import functools
import tomllib
from importlib import resources
from types import MappingProxyType
from typing import Any

from orchestrator.catalog.names import family

__all__ = [
    "TRAINING_PRICE_PER_MILLION",
    "price_table",
    "training_cost",
    "training_price",
]


@functools.cache
def price_table() -> MappingProxyType[str, MappingProxyType[str, float]]:
    """The shipped table: ``{"openai": {model: usd}, "azure/standard": {...}, ...}``."""
    raw: dict[str, Any] = tomllib.loads(
        resources.files("orchestrator.catalog").joinpath("prices.toml").read_text(encoding="utf-8")
    )
    flat: dict[str, MappingProxyType[str, float]] = {}

    def walk(prefix: str, node: dict[str, Any]) -> None:
        prices = {k: float(v) for k, v in node.items() if isinstance(v, int | float)}
        if prices:
            flat[prefix] = MappingProxyType(prices)
        for key, value in node.items():
            if isinstance(value, dict):
                walk(f"{prefix}/{key}" if prefix else key, value)

    walk("", raw)
    return MappingProxyType(flat)


#: OpenAI's list prices (the ``[openai]`` section of the table)
TRAINING_PRICE_PER_MILLION: dict[str, float] = dict(price_table()["openai"])


def training_price(
    model: str,
    overrides: dict[str, float] | None = None,
    *,
    provider: str = "openai",
    tier: str | None = None,
) -> float | None:
    """USD per 1M trained tokens for ``model`` (snapshot names match their family) on
    ``provider`` (and Azure ``tier``), or None when neither the overrides nor the table
    know it. Overrides win: ``MODEL/TIER`` over ``MODEL``."""
    overrides = overrides or {}
    if tier is not None:
        tiered = {k.rsplit("/", 1)[0]: v for k, v in overrides.items() if k.endswith(f"/{tier}")}
        known = family(model, tiered)
        if known is not None:
            return tiered[known]
    plain = {k: v for k, v in overrides.items() if "/" not in k}
    known = family(model, plain)
    if known is not None:
        return plain[known]
    section = provider if tier is None else f"{provider}/{tier}"
    table = price_table().get(section, MappingProxyType({}))
    known = family(model, table)
    return None if known is None else table[known]


def training_cost(tokens_per_epoch: int, n_epochs: int, price_per_million: float) -> float:
    """Cost in USD of training ``n_epochs`` over a file of ``tokens_per_epoch`` billed tokens."""
    return round(tokens_per_epoch * n_epochs * price_per_million / 1_000_000, 4)

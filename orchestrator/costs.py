"""Training prices and cost arithmetic.

Prices are list prices for supervised fine-tuning in USD per 1M trained tokens (trained tokens
= tokens in the training file x epochs), from OpenAI's pricing page as of 2025. They change:
a sweep file can override them. Azure bills similar per-token training prices plus an hourly
hosting fee for deployed models (not for training).
"""

from __future__ import annotations

from orchestrator.modelnames import family

__all__ = ["TRAINING_PRICE_PER_MILLION", "training_cost", "training_price"]

TRAINING_PRICE_PER_MILLION: dict[str, float] = {
    "gpt-4o-mini": 3.00,
    "gpt-4o": 25.00,
    "gpt-4.1": 25.00,
    "gpt-4.1-mini": 5.00,
    "gpt-4.1-nano": 1.50,
    "gpt-3.5-turbo": 8.00,
    "gpt-3.5-turbo-0613": 8.00,
    "babbage-002": 0.40,
    "davinci-002": 6.00,
}


def training_price(model: str, overrides: dict[str, float] | None = None) -> float | None:
    """USD per 1M trained tokens for ``model`` (snapshot names match their family), or None."""
    table = {**TRAINING_PRICE_PER_MILLION, **(overrides or {})}
    known = family(model, table)
    return None if known is None else table[known]


def training_cost(tokens_per_epoch: int, n_epochs: int, price_per_million: float) -> float:
    """Cost in USD of training ``n_epochs`` over a file of ``tokens_per_epoch`` billed tokens."""
    return round(tokens_per_epoch * n_epochs * price_per_million / 1_000_000, 4)

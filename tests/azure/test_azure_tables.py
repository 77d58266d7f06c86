"""The price table and Azure's model table: configuration read as documented."""

from __future__ import annotations

import pytest

from orchestrator.backends.remote.azure import AzureOpenAIBackend, AzureOptions
from orchestrator.catalog.azure import AZURE_MODELS, TIERS, azure_model
from orchestrator.catalog.prices import TRAINING_PRICE_PER_MILLION, price_table, training_price
from orchestrator.core.errors import UnknownModelError


def test_the_shipped_table_keeps_the_documented_tier_ratios() -> None:
    table = price_table()
    assert set(table) == {
        "openai",
        "azure/standard",
        "azure/global",
        "azure/datazone",
        "azure/developer",
    }
    for model, developer in table["azure/developer"].items():
        assert developer == pytest.approx(table["azure/global"][model] / 2)  # 50 % off Global
        standard = table["azure/standard"].get(model)
        if standard is not None:  # Global 10-30 % below regional
            assert 0.7 * standard <= table["azure/global"][model] <= 0.9 * standard
    assert TRAINING_PRICE_PER_MILLION["gpt-4o-mini"] == 3.00


def test_overrides_win_tier_first_then_model_then_the_table() -> None:
    prices = {"gpt-4.1-mini": 9.0, "gpt-4.1-mini/developer": 1.0}
    name = "gpt-4.1-mini-2025-04-14"
    assert training_price(name, prices, provider="azure", tier="developer") == 1.0
    assert training_price(name, prices, provider="azure", tier="global") == 9.0
    assert training_price(name, provider="azure", tier="global") == 4.00
    assert training_price(name, provider="azure", tier="standard") == 5.00
    assert training_price("gpt-oss-20b", provider="azure", tier="standard") is None
    assert training_price("nope", provider="azure", tier="global") is None


def test_every_model_of_the_issue_is_in_the_table_with_its_tiers() -> None:
    for name in ("gpt-4o-mini", "gpt-4o", "gpt-4.1", "gpt-4.1-mini", "gpt-4.1-nano"):
        model = AZURE_MODELS[name]
        assert model.azure_tiers == tuple(TIERS) and model.exact_tokens
    for name in ("gpt-oss-20b", "Llama-3.3-70B", "Qwen-32B", "Ministral-3B"):
        model = azure_model(name)
        assert model is not None and model.open_weight and "standard" not in model.azure_tiers
        assert not model.exact_tokens and "estimate" in model.tokens_note
        for tier in model.azure_tiers:  # every allowed tier has a price
            assert training_price(model.name, provider="azure", tier=tier) is not None
    assert azure_model("gpt-4o-mini-2024-07-18") is AZURE_MODELS["gpt-4o-mini"]
    assert AZURE_MODELS["gpt-4.1-nano"].context == 32_768


def test_token_counters_are_exact_for_openai_models_and_labelled_for_the_others() -> None:
    exact = AzureOpenAIBackend.token_counter("gpt-4o-mini-2024-07-18", AzureOptions())
    assert exact is not None and exact.name == "o200k_base"
    oss = AzureOpenAIBackend.token_counter("gpt-oss-20b", AzureOptions())
    assert oss is not None and "estimate" in oss.name and oss.max_tokens_per_example == 32_768
    row = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "ok"}]}
    assert oss.example("chat", row) == exact.example("chat", row)
    with pytest.raises(UnknownModelError, match="known: gpt-4o-mini, gpt-4o"):
        AzureOpenAIBackend.token_counter("claude-9", AzureOptions())
    priced = AzureOptions(prices={"claude-9": 2.0})
    assert AzureOpenAIBackend.token_counter("claude-9", priced) is not None
    with pytest.raises(UnknownModelError, match="only in the Global and Data zone tiers"):
        AzureOpenAIBackend.token_counter("Ministral-3B", AzureOptions(training_type="standard"))

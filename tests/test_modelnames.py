"""Aliases (``FAMILY@latest``), model-list checks and sunsets: pure functions over a list."""

from __future__ import annotations

import datetime

import pytest

from orchestrator.backends.base import ModelInfo
from orchestrator.catalog.names import (
    Sunset,
    alias_family,
    family,
    is_alias,
    resolve_model,
    snapshot_date,
    sunset,
    sunset_message,
)
from orchestrator.catalog.prices import training_price
from orchestrator.catalog.tokens import model_info
from orchestrator.core.errors import UnknownModelError, UsageError

D = datetime.date
TODAY = D(2026, 12, 1)
END = D(2027, 1, 14)
GONE = D(2026, 10, 23)

#: OpenAI's list as of 2026-12 (what apisim lists by default), plus models that are not
#: fine-tunable snapshots
OPENAI = [
    ModelInfo("gpt-4o-mini-2024-07-18", 1721260800, END),
    ModelInfo("gpt-4o-mini", 1721172741, END),
    ModelInfo("gpt-4o-2024-08-06", 1722902400, END),
    ModelInfo("gpt-4.1-2025-04-14", 1744588800, END),
    ModelInfo("gpt-4.1-mini-2025-04-14", 1744588800, END),
    ModelInfo("gpt-4.1-nano-2025-04-14", 1744588800, GONE),
    ModelInfo("gpt-3.5-turbo-0125", 1706140800, GONE),
    ModelInfo("text-embedding-3-small", 1705948997),
]


def test_alias_syntax() -> None:
    assert is_alias("gpt-4o-mini@latest") and is_alias(" gpt-4.1@latest ")
    for name in ("gpt-4o-mini", "@latest", "gpt-4o-mini@newest", "org/model@latest", "a@b@latest"):
        assert not is_alias(name), name
    assert alias_family("gpt-4o-mini@latest") == "gpt-4o-mini"
    assert alias_family("gpt-4o-mini") == "gpt-4o-mini"
    assert snapshot_date("gpt-4.1-mini-2025-04-14") == D(2025, 4, 14)
    assert snapshot_date("gpt-4.1-mini-2025-04-14", "gpt-4.1") is None
    assert snapshot_date("gpt-4o-mini-2024-13-40") is None
    assert snapshot_date("gpt-3.5-turbo-0125") is None


def test_an_alias_counts_as_its_family_offline() -> None:
    assert family("gpt-4o-mini@latest", ["gpt-4o", "gpt-4o-mini"]) == "gpt-4o-mini"
    assert training_price("gpt-4o-mini@latest") == training_price("gpt-4o-mini")
    assert training_price("gpt-4.1-nano@latest") == 1.50
    info = model_info("gpt-4.1@latest")
    assert (info.encoding, info.max_tokens_per_example) == ("o200k_base", 65_536)


def test_an_alias_resolves_to_the_newest_live_snapshot() -> None:
    assert resolve_model("gpt-4o-mini@latest", OPENAI, TODAY) == "gpt-4o-mini-2024-07-18"
    assert resolve_model("gpt-4o@latest", OPENAI, TODAY) == "gpt-4o-2024-08-06"  # not -mini
    released = [*OPENAI, ModelInfo("gpt-4o-mini-2026-11-20", 1795000000)]
    assert resolve_model("gpt-4o-mini@latest", released, TODAY) == "gpt-4o-mini-2026-11-20"
    # a newer snapshot not released yet for fine-tuning, or already shut down, is passed over
    not_tunable = [*OPENAI, ModelInfo("gpt-4o-mini-2026-11-20", 1795000000, fine_tunable=False)]
    assert resolve_model("gpt-4o-mini@latest", not_tunable, TODAY) == "gpt-4o-mini-2024-07-18"
    shut = [*OPENAI, ModelInfo("gpt-4o-mini-2025-06-01", 1748736000, D(2026, 11, 30))]
    assert resolve_model("gpt-4o-mini@latest", shut, TODAY) == "gpt-4o-mini-2024-07-18"


def test_ties_on_the_date_go_to_the_newest_created() -> None:
    models = [
        ModelInfo("fam-2026-01-01", 100),
        ModelInfo("fam-2026-01-01", 300),
        ModelInfo("fam-2025-12-31", 900),
    ]
    assert resolve_model("fam@latest", models, TODAY) == "fam-2026-01-01"
    models = [ModelInfo("fam-2026-01-01", 300, fine_tunable=True), ModelInfo("fam-2026-01-01")]
    assert resolve_model("fam@latest", models, TODAY) == "fam-2026-01-01"


def test_when_every_snapshot_is_shut_down_the_newest_is_returned_anyway() -> None:
    assert resolve_model("gpt-4.1-nano@latest", OPENAI, TODAY) == "gpt-4.1-nano-2025-04-14"
    after = D(2027, 2, 1)
    assert resolve_model("gpt-4o-mini@latest", OPENAI, after) == "gpt-4o-mini-2024-07-18"
    # the day of the shutdown counts as shut down
    both = [ModelInfo("fam-2025-01-01", shutdown_date=TODAY), ModelInfo("fam-2024-01-01")]
    assert resolve_model("fam@latest", both, TODAY) == "fam-2024-01-01"


def test_an_alias_of_an_unknown_family_names_what_the_list_has() -> None:
    with pytest.raises(UnknownModelError) as caught:
        resolve_model("gpt-5-mini@latest", OPENAI, TODAY)
    text = str(caught.value)
    assert "\n" not in text and isinstance(caught.value, UsageError)
    assert text.startswith("gpt-5-mini@latest: the provider's model list has no snapshot of ")
    assert "nearest: " in text
    only = [ModelInfo("fam"), ModelInfo("fam-2026-01-01", fine_tunable=False)]
    with pytest.raises(UnknownModelError, match=r"for fam it lists only fam, fam-2026-01-01"):
        resolve_model("fam@latest", only, TODAY)
    with pytest.raises(UnknownModelError, match="it lists no models"):
        resolve_model("fam@latest", [], TODAY)


def test_a_plain_name_is_itself_checked_against_the_list() -> None:
    assert resolve_model("gpt-4o-mini-2024-07-18", OPENAI, TODAY) == "gpt-4o-mini-2024-07-18"
    assert resolve_model("gpt-4.1-nano-2025-04-14", OPENAI, TODAY) == "gpt-4.1-nano-2025-04-14"
    # an undated family name that the list does not hold itself, but whose snapshots it does
    assert resolve_model("gpt-4.1-mini", OPENAI, TODAY) == "gpt-4.1-mini"
    assert resolve_model("anything", [], TODAY) == "anything"  # no list: nothing to check
    with pytest.raises(UnknownModelError) as caught:
        resolve_model("gpt-4o-mini-2024-07-19", OPENAI, TODAY)
    assert str(caught.value) == (
        "unknown model 'gpt-4o-mini-2024-07-19': the provider does not list it (nearest: "
        "gpt-4o-mini-2024-07-18, gpt-4.1-mini-2025-04-14, gpt-4o-2024-08-06)"
    )


def test_a_shut_down_model_gets_its_successor() -> None:
    s = sunset("gpt-4.1-nano-2025-04-14", OPENAI, TODAY)
    assert s == Sunset("gpt-4.1-nano-2025-04-14", GONE, True, "gpt-4.1-mini-2025-04-14", -39)
    assert sunset_message(s) == (
        "base model gpt-4.1-nano-2025-04-14 was shut down on 2026-10-23: "
        "put gpt-4.1-mini-2025-04-14 in backend.model"
    )
    # gpt-3.5-turbo -> gpt-4o-mini (Microsoft's legacy-models page)
    s = sunset("gpt-3.5-turbo-0125", OPENAI, TODAY)
    assert s is not None and s.replacement == "gpt-4o-mini-2024-07-18"


def test_a_coming_shutdown_counts_the_days_and_prefers_the_same_family() -> None:
    released = [*OPENAI, ModelInfo("gpt-4o-mini-2026-11-20", 1795000000)]
    s = sunset("gpt-4o-mini-2024-07-18", released, TODAY)
    assert s == Sunset("gpt-4o-mini-2024-07-18", END, False, "gpt-4o-mini-2026-11-20", 44)
    assert sunset_message(s, "backend.model") == (
        "base model gpt-4o-mini-2024-07-18 shuts down on 2027-01-14 (in 44 days): "
        "put gpt-4o-mini-2026-11-20 in backend.model"
    )
    one_day = Sunset("m", D(2026, 12, 2), False, "n", 1)
    assert "(in 1 day)" in sunset_message(one_day, "x")
    assert sunset_message(one_day, "x").endswith("put n in x")


def test_on_openai_after_january_2027_nothing_remains() -> None:
    # gpt-4o-mini's family and successors all end on 2027-01-14: none outlives it
    s = sunset("gpt-4o-mini-2024-07-18", OPENAI, TODAY)
    assert s is not None and s.replacement is None and not s.passed
    assert sunset_message(s, backend="openai") == (
        "base model gpt-4o-mini-2024-07-18 shuts down on 2027-01-14 (in 44 days) and no later "
        "OpenAI model remains (OpenAI takes no new fine-tuning jobs from 2027-01-06): move to "
        "the azure or local backend"
    )
    after = sunset("gpt-4.1-2025-04-14", OPENAI, D(2027, 1, 20))
    assert after is not None and after.passed and after.replacement is None
    assert sunset_message(after) == (
        "base model gpt-4.1-2025-04-14 was shut down on 2027-01-14 and the provider lists no "
        "later snapshot: name another base model in backend.model"
    )


def test_sunset_of_aliases_undated_names_and_models_without_a_date() -> None:
    s = sunset("gpt-4.1-nano@latest", OPENAI, TODAY)
    assert s is not None and s.model == "gpt-4.1-nano-2025-04-14" and s.passed
    undated = sunset("gpt-4.1-mini", OPENAI, TODAY)  # not listed: its newest snapshot's date
    assert undated is not None and undated.model == "gpt-4.1-mini" and undated.date == END
    listed = sunset("gpt-4o-mini", OPENAI, TODAY)  # listed itself
    assert listed is not None and listed.replacement is None
    assert sunset("text-embedding-3-small", OPENAI, TODAY) is None
    assert sunset("not-listed", OPENAI, TODAY) is None
    assert sunset("gpt-5@latest", OPENAI, TODAY) is None


def test_azure_spellings_find_their_successor() -> None:
    azure = [
        ModelInfo("gpt-35-turbo-0125", 1706140800, D(2026, 6, 1), True),
        ModelInfo("gpt-4o-mini-2024-07-18", 1721260800, None, True),
    ]
    s = sunset("gpt-35-turbo-0125", azure, TODAY)
    assert s is not None and s.passed and s.replacement == "gpt-4o-mini-2024-07-18"


def test_one_model_table_and_its_views() -> None:
    """Token tables, Azure's models, shutdowns and successors are views of one table."""
    from orchestrator.catalog.azure import AZURE_MODELS, TIERS, azure_model
    from orchestrator.catalog.models import MODELS, ModelFacts
    from orchestrator.catalog.names import ANNOUNCED_SHUTDOWNS, SUCCESSORS, announced_sunset
    from orchestrator.catalog.tokens import known_models

    counted = {m.name for m in MODELS.values() if m.openai and m.context is not None}
    assert set(known_models()) == counted and "o4-mini" not in counted
    for name in counted:
        row, info = MODELS[name], model_info(name)
        assert (info.encoding, info.max_tokens_per_example) == (row.encoding, row.context)
    assert list(AZURE_MODELS) == [m.name for m in MODELS.values() if m.azure_tiers]
    for name, row in AZURE_MODELS.items():
        assert azure_model(name) is row and set(row.azure_tiers) <= set(TIERS)
        assert row.exact_tokens is not row.open_weight
    gone = ("gpt-3.5-turbo", "gpt-4.1-nano", "o4-mini")
    ending = ("gpt-4o", "gpt-4o-mini", "gpt-4.1", "gpt-4.1-mini")
    shutdowns = {**dict.fromkeys(gone, GONE), **dict.fromkeys(ending, END)}
    assert shutdowns == ANNOUNCED_SHUTDOWNS
    assert announced_sunset("o4-mini", TODAY) == Sunset("o4-mini", GONE, True, None, -39)
    assert SUCCESSORS == {
        "gpt-3.5-turbo": "gpt-4o-mini",
        "gpt-3.5-turbo-0613": "gpt-4o-mini",
        "gpt-4o-mini": "gpt-4.1-mini",
        "gpt-4.1-nano": "gpt-4.1-mini",
        "gpt-4o": "gpt-4.1",
    }
    assert set(SUCCESSORS.values()) <= set(MODELS)  # every successor is a row too
    assert MODELS["gpt-4o-mini"].providers == ("openai", "azure")
    assert MODELS["Qwen-32B"].providers == ("azure",)
    assert MODELS["davinci-002"].providers == ("openai",)
    with pytest.raises(ValueError, match="model table: m: Azure trains it, give its context"):
        ModelFacts("m", "o200k_base", None, azure_tiers=("global",))
    with pytest.raises(ValueError, match=r"model table: m: unknown Azure tiers \['regional'\]"):
        ModelFacts("m", "o200k_base", 1, azure_tiers=("regional",))

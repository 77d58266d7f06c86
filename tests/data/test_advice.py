"""Advice from the data's shape: one crafted file per rule, and none where it does not apply."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from orchestrator.catalog.tokens import openai_counter
from orchestrator.data import advice as rules
from orchestrator.data.advice import Advice, for_sweep
from orchestrator.data.checks import check_dataset

ROOT = Path(__file__).resolve().parents[2]


def _chat(system: str, user: str, answer: str) -> dict[str, Any]:
    return {
        "messages": [
            {"role": "system", "content": system},
            {"role": "user", "content": user},
            {"role": "assistant", "content": answer},
        ]
    }


def _write(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _advice(path: Path, counted: bool = True) -> dict[str, Advice]:
    counter = openai_counter("gpt-4o-mini") if counted else None
    report = check_dataset(path, None, counter, model="gpt-4o-mini")
    return {a.code: a for a in report.train.advice}


def _generation(n: int, words: int = 12) -> list[dict[str, Any]]:
    """Open answers about as long as their questions: no rule fires."""
    return [
        _chat(
            "You answer.",
            " ".join(f"question{i} word{j}" for j in range(words)),
            " ".join(f"answer{i} word{j}" for j in range(words)),
        )
        for i in range(n)
    ]


def test_plain_generation_data_gets_no_advice(tmp_path: Path) -> None:
    assert _advice(_write(tmp_path / "g.jsonl", _generation(60))) == {}


def test_long_prompts_short_completions_suggest_a_low_prompt_loss_weight(tmp_path: Path) -> None:
    rows = [
        _chat("Summarise in one word.", " ".join(f"text{i} w{j}" for j in range(60)), f"w{i}")
        for i in range(60)
    ]
    for counted in (True, False):
        found = _advice(_write(tmp_path / "p.jsonl", rows), counted)
        assert "prompt_loss_weight" in found, counted
        message = found["prompt_loss_weight"].message
        assert "2401.13586" in message and "local trainer" in message
        assert ("tokens" if counted else "characters") in message
    # prompts three times as long as the completions (chat overhead included): nothing
    words = " ".join(f"w{j}" for j in range(10))
    short = [_chat("S.", f"a{i} {words} {words}", f"x{i} {words}") for i in range(60)]
    assert "prompt_loss_weight" not in _advice(_write(tmp_path / "s.jsonl", short))


def test_classification_data_names_the_metric_and_balanced_labels_get_no_note(
    tmp_path: Path,
) -> None:
    labels = ["billing", "shipping", "account"]
    rows = [_chat("Route it.", f"ticket {i}", labels[i % 3]) for i in range(60)]
    found = _advice(_write(tmp_path / "c.jsonl", rows))
    assert "valid_mean_token_accuracy" in found["metric"].message
    assert "label_imbalance" not in found


def test_label_imbalance_notes_the_majority_share(tmp_path: Path) -> None:
    labels = ["billing"] * 45 + ["shipping"] * 10 + ["account"] * 5
    rows = [_chat("Route it.", f"ticket {i}", label) for i, label in enumerate(labels)]
    found = _advice(_write(tmp_path / "i.jsonl", rows))
    note = found["label_imbalance"].message
    assert "'billing' 45" in note and "75 %" in note
    # just under the ratio (3x): no note
    labels = ["billing"] * 29 + ["shipping"] * 20 + ["account"] * 10
    rows = [_chat("Route it.", f"ticket {i}", label) for i, label in enumerate(labels)]
    assert "label_imbalance" not in _advice(_write(tmp_path / "j.jsonl", rows))


def test_very_small_data_suggests_more_epochs(tmp_path: Path) -> None:
    found = _advice(_write(tmp_path / "s.jsonl", _generation(12)))
    assert found["more_epochs"].value == 100 // 12
    assert "n_epochs up to 8" in found["more_epochs"].message
    edge = _advice(_write(tmp_path / "e.jsonl", _generation(rules.SMALL_EXAMPLES)))
    assert "more_epochs" not in edge


def test_length_outliers_are_named_by_line(tmp_path: Path) -> None:
    rows = _generation(60)
    long_text = " ".join(f"very{j} long" for j in range(600))
    rows[6] = _chat("You answer.", long_text, "short answer")
    rows[41] = _chat("You answer.", "q", long_text)
    for counted in (True, False):
        found = _advice(_write(tmp_path / "o.jsonl", rows), counted)
        outliers = found["length_outliers"]
        assert outliers.lines == (7, 42) and outliers.count == 2, counted
        assert "lines 7, 42" in outliers.message


def test_shipped_and_public_data_get_only_the_advice_that_applies(public: Path) -> None:
    support = _advice(ROOT / "data" / "support" / "tickets.chat.train.jsonl")
    # four balanced labels, one-word answers to long tickets, 200 examples of even length
    assert set(support) == {"metric", "prompt_loss_weight"}
    assert _advice(ROOT / "data" / "tiny" / "reverse.train.jsonl") == {}
    assert _advice(public / "microsoft-foundry_gsm8k_chat_train.jsonl") == {}


def test_the_sweep_keeps_only_advice_it_can_act_on() -> None:
    advice = (
        Advice("prompt_loss_weight", "low weight"),
        Advice("metric", "accuracy"),
        Advice("more_epochs", "more", value=8),
    )

    def kept(**kw: Any) -> set[str]:
        args: dict[str, Any] = {
            "takes_prompt_loss_weight": True,
            "prompt_loss_weight_low": 0.1,
            "objective": "valid_loss",
            "epochs_high": 4,
        }
        return {a.code for a in for_sweep(advice, **(args | kw))}

    assert kept() == {"prompt_loss_weight", "metric", "more_epochs"}
    assert "prompt_loss_weight" not in kept(takes_prompt_loss_weight=False)
    assert "prompt_loss_weight" not in kept(prompt_loss_weight_low=0.01)
    assert "metric" not in kept(objective="valid_mean_token_accuracy")
    assert "more_epochs" not in kept(epochs_high=8)


@pytest.mark.parametrize("fmt", ["chat", "prompt_completion"])
def test_validate_prints_the_advice(cli: Any, tmp_path: Path, fmt: str) -> None:
    if fmt == "chat":
        rows = _generation(12)
    else:
        rows = [{"prompt": f"q{i} a b c ->", "completion": f" a{i} b c\n"} for i in range(12)]
    path = _write(tmp_path / "d.jsonl", rows)
    r = cli("validate", path, "--model", "gpt-4o-mini")
    assert r.code == 0, r.err
    assert "advice for a sweep over this data:" in r.out
    assert "search n_epochs up to 8" in r.out
    r = cli("validate", path, "--model", "gpt-4o-mini", "--json")
    codes = [a["code"] for a in json.loads(r.out)["train"]["advice"]]
    assert "more_epochs" in codes


def test_the_sweep_plan_prints_the_advice_that_applies(cli: Any) -> None:
    r = cli("space", ROOT / "sweeps" / "quickstart.yaml")
    assert r.code == 0, r.err
    advice = r.out.split("advice from the data:")[1]
    # classification tickets, objective full_valid_loss: the metric; the space already
    # searches prompt_loss_weight from 0.01, so no word on it
    assert "valid_mean_token_accuracy" in advice
    assert "prompt_loss_weight" not in advice
    r = cli("space", ROOT / "sweeps" / "openai.yaml")
    assert r.code == 0, r.err
    assert "prompt_loss_weight" not in r.out.split("advice from the data:")[1]

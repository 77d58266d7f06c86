"""Models users train: a Llama, Qwen, Mistral, Gemma and Phi folder, each with its family's
own chat template, trains on exactly the assistant's part of each turn, and ``validate
--model`` counts the tokens the template makes."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from orchestrator.backends.base import Hyperparameters
from orchestrator.backends.local import LocalOptions, models
from orchestrator.backends.local.encoding import encode_chat
from orchestrator.backends.local.tasks import write_jsonl
from orchestrator.backends.local.trainer import TrainingConfig, run_training
from tests.backends.families import FAMILIES, Family, build_family

ANSWERS = ("Paris.", "About 2.1 million.")


class Sink:
    """The trainer's metric points, in order."""

    def __init__(self) -> None:
        self.points: list[dict[str, float]] = []

    def emit(self, step: int, values: Mapping[str, float]) -> None:
        self.points.append(dict(values))


def _conversation(family: Family, n: int = 0) -> list[dict[str, Any]]:
    system = [{"role": "system", "content": "Answer briefly."}] if family.system else []
    return [
        *system,
        {"role": "user", "content": f"Capital of France? ({n})"},
        {"role": "assistant", "content": ANSWERS[0]},
        {"role": "user", "content": "Its population?"},
        {"role": "assistant", "content": ANSWERS[1]},
    ]


@pytest.fixture(scope="module")
def family_dirs(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("families")
    return {name: build_family(f, tiny_model, root / name) for name, f in FAMILIES.items()}


@pytest.mark.parametrize("name", list(FAMILIES))
def test_the_family_template_masks_all_but_the_assistant_turns(
    name: str, family_dirs: dict[str, Path]
) -> None:
    family = FAMILIES[name]
    source = models.resolve(str(family_dirs[name]))
    assert source.kind == "dir"
    tokenizer, _ = models.load_tokenizer(source)
    assert tokenizer.chat_template == family.template  # its own, not the fallback
    messages = _conversation(family)
    encoded = encode_chat(tokenizer, messages, 0.0)
    ids = list(encoded.input_ids)
    full = tokenizer.apply_chat_template(messages, tokenize=False)
    assert tokenizer.decode(ids) == full
    trained = [i for i, w in zip(ids, encoded.weights, strict=True) if w > 0]
    completion = [i for i, c in zip(ids, encoded.completion, strict=True) if c]
    assert trained == completion
    assert tokenizer.decode(trained) == "".join(family.turn(a) for a in ANSWERS)
    # the end-of-turn marker is one token; the assistant's are trained, no other turn's
    end_of_turn = tokenizer.convert_tokens_to_ids(family.end_of_turn)
    assert ids.count(end_of_turn) == full.count(family.end_of_turn) >= len(ANSWERS)
    assert trained.count(end_of_turn) == len(ANSWERS)


@pytest.mark.parametrize("name", list(FAMILIES))
def test_validate_counts_with_the_family_template(
    name: str, family_dirs: dict[str, Path], tmp_path: Path, cli: Callable[..., Any]
) -> None:
    family = FAMILIES[name]
    rows = [{"messages": _conversation(family, n)} for n in range(12)]
    path = write_jsonl(tmp_path / "chat.jsonl", rows)
    r = cli("validate", path, "--model", family_dirs[name], "--json")
    assert r.code == 0, r.err
    report = json.loads(r.out)
    tokenizer, _ = models.load_tokenizer(models.resolve(str(family_dirs[name])))
    rendered = [tokenizer.apply_chat_template(row["messages"], tokenize=True) for row in rows]
    counts = [len(r["input_ids"] if hasattr(r, "keys") else r) for r in rendered]
    assert report["train"]["total_tokens"] == sum(counts)
    answers = "".join(family.turn(a) for a in ANSWERS)
    n_trained = len(tokenizer(answers, add_special_tokens=False)["input_ids"])
    assert report["train"]["trained_tokens"]["min"] == n_trained
    assert report["train"]["trained_tokens"]["max"] == n_trained


def test_each_family_trains_an_epoch(family_dirs: dict[str, Path], tmp_path: Path) -> None:
    for name, family in FAMILIES.items():
        rows = [{"messages": _conversation(family, n)} for n in range(4)]
        train = write_jsonl(tmp_path / f"{name}.jsonl", rows)
        sink = Sink()
        config = TrainingConfig(
            model=str(family_dirs[name]),
            train_file=train,
            hyperparameters=Hyperparameters(1, 4, 1.0, 0.0),
            options=LocalOptions.parse(
                {"torch_threads": 1, "device": "cpu", "lora": {"r": 4, "alpha": 8}}
            ),
        )
        result = run_training(config, sink)
        points = sink.points
        assert result.status == "succeeded", name
        assert points and points[-1]["epoch"] == 1.0, name
        assert all(math.isfinite(p["train_loss"]) for p in points), name


def test_an_example_the_template_refuses_is_an_error_on_its_line(
    family_dirs: dict[str, Path], tmp_path: Path, cli: Callable[..., Any]
) -> None:
    """Gemma's template raises on a system message: validate names the line, exit 2."""
    gemma = FAMILIES["gemma"]
    rows = [{"messages": _conversation(gemma, n)} for n in range(12)]
    rows[4]["messages"].insert(0, {"role": "system", "content": "Answer briefly."})
    path = write_jsonl(tmp_path / "chat.jsonl", rows)
    r = cli("validate", path, "--model", family_dirs["gemma"])
    assert r.code == 2
    assert "chat.jsonl:5: cannot count the example's tokens: the chat template of " in r.out
    assert "refuses it: System role not supported" in r.out

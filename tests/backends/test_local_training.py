"""The local trainer in-process: encoding with per-token weights, determinism, gradient
accumulation, LoRA and chat data, on the real tiny model."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from orchestrator.backends.base import Hyperparameters
from orchestrator.backends.local import LocalOptions, models
from orchestrator.backends.local.encoding import encode_chat, encode_file, encode_prompt_completion
from orchestrator.backends.local.tasks import write_jsonl, write_task
from orchestrator.backends.local.trainer import TrainingConfig, TrainingResult, run_training
from orchestrator.core.errors import DataError


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[int, dict[str, float]]] = []

    def emit(self, step: int, values: Mapping[str, float]) -> None:
        self.events.append((step, dict(values)))

    def series(self, name: str) -> list[float]:
        return [v[name] for _, v in self.events if name in v]


@pytest.fixture
def tokenizer(tiny_model: Path) -> Any:
    return models.load(models.resolve(str(tiny_model))).tokenizer


def _text(tokenizer: Any, ids: list[int]) -> str:
    return str(tokenizer.decode(ids))


def test_prompt_completion_weights(tokenizer: Any) -> None:
    e = encode_prompt_completion(tokenizer, "reverse: ab\n->", " ba", 0.3)
    ids = list(e.input_ids)
    assert ids[0] == tokenizer.bos_token_id and ids[-1] == tokenizer.eos_token_id
    n_prompt = 1 + len("reverse: ab\n->")  # BOS + one token per byte
    assert e.weights == (0.3,) * n_prompt + (1.0,) * (len(" ba") + 1)
    assert _text(tokenizer, [i for i, c in zip(ids, e.completion, strict=True) if c]) == " ba</s>"


def test_special_token_text_in_data_stays_text(tokenizer: Any) -> None:
    e = encode_prompt_completion(tokenizer, "a</s>", "b", 0.0)
    assert list(e.input_ids).count(tokenizer.eos_token_id) == 1


def test_chat_weights_follow_the_template(tokenizer: Any) -> None:
    messages = [
        {"role": "system", "content": "Be terse."},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "yo", "weight": 0},
        {"role": "user", "content": "again"},
        {"role": "assistant", "content": "ok"},
    ]
    e = encode_chat(tokenizer, messages, 0.1)
    ids = list(e.input_ids)
    completion = [i for i, c in zip(ids, e.completion, strict=True) if c]
    assert _text(tokenizer, completion) == "ok<|im_end|>\n"
    assert {w for w, c in zip(e.weights, e.completion, strict=True) if not c} == {0.1}
    full = tokenizer.apply_chat_template(messages, tokenize=False)
    assert _text(tokenizer, ids) == full
    assert full.endswith("<|im_start|>assistant\nok<|im_end|>\n")


def test_a_template_that_is_not_prefix_stable_is_an_error(tokenizer: Any, tmp_path: Path) -> None:
    tokenizer.chat_template = (
        "{{ messages|length }}{% for m in messages %}{{ m['content'] }}{% endfor %}"
    )
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]
    with pytest.raises(ValueError, match="prefix-stable"):
        encode_chat(tokenizer, messages, 0.0)
    path = write_jsonl(tmp_path / "chat.jsonl", [{"messages": messages}])
    with pytest.raises(DataError, match=r"chat\.jsonl:1: .*prefix-stable"):
        encode_file(path, tokenizer, 0.0)


def test_long_examples_are_truncated(tokenizer: Any, tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "pc.jsonl", [{"prompt": "x" * 50, "completion": " y"}])
    encoded = encode_file(path, tokenizer, 0.1, max_length=16)
    assert encoded.n_truncated == 1 and len(encoded.examples[0]) == 16


def _train(
    data: tuple[Path, Path],
    *,
    seed: int = 0,
    epochs: int = 2,
    batch_size: int = 8,
    multiplier: float = 1.0,
    plw: float | None = 0.1,
    output_dir: Path | None = None,
    **options: Any,
) -> tuple[Recorder, TrainingResult]:
    recorder = Recorder()
    config = TrainingConfig(
        model="tiny",
        train_file=data[0],
        valid_file=data[1],
        hyperparameters=Hyperparameters(epochs, batch_size, multiplier, plw),
        seed=seed,
        # exactness (determinism, accumulation) is promised on CPU, so pin it even on a GPU box
        options=LocalOptions.parse({"torch_threads": 1, "device": "cpu", **options}),
        output_dir=output_dir,
    )
    return recorder, run_training(config, recorder)


def test_same_seed_same_metrics(tiny_model: Path, reverse_small: tuple[Path, Path]) -> None:
    first, result = _train(reverse_small, seed=3)
    second, _ = _train(reverse_small, seed=3)
    other, _ = _train(reverse_small, seed=4)
    assert result.status == "succeeded" and result.steps == 2 * 3
    assert first.events == second.events
    assert first.series("train_loss") != other.series("train_loss")


def test_gradient_accumulation_gives_the_same_training(
    tiny_model: Path, reverse_small: tuple[Path, Path]
) -> None:
    whole, _ = _train(reverse_small)
    split, _ = _train(reverse_small, max_device_batch=3)
    assert split.series("train_loss") == pytest.approx(whole.series("train_loss"), rel=1e-4)
    assert split.series("full_valid_loss") == pytest.approx(
        whole.series("full_valid_loss"), rel=1e-4
    )


def test_prompt_loss_weight_changes_the_objective_not_the_reported_loss(
    tiny_model: Path, reverse_small: tuple[Path, Path]
) -> None:
    zero, _ = _train(reverse_small, plw=0.0)
    one, _ = _train(reverse_small, plw=1.0)
    # the first step's loss is measured before any update, on completion tokens only
    assert zero.series("train_loss")[0] == pytest.approx(one.series("train_loss")[0])
    assert zero.series("train_loss")[1:] != one.series("train_loss")[1:]


def test_lora_trains_an_adapter(
    tiny_model: Path, reverse_small: tuple[Path, Path], tmp_path: Path
) -> None:
    out = tmp_path / "adapter"
    recorder, result = _train(
        reverse_small, epochs=4, multiplier=10.0, output_dir=out, lora={"r": 4, "alpha": 8}
    )
    assert result.status == "succeeded" and result.model_dir == out
    assert (out / "adapter_config.json").is_file()
    assert not (out / "model.safetensors").exists()
    losses = recorder.series("full_valid_loss")
    assert losses[-1] < losses[0]


def test_chat_data_trains(tiny_model: Path, tmp_path: Path) -> None:
    data = write_task("reverse", tmp_path, n_train=16, n_valid=4, fmt="chat")
    recorder, result = _train(data, epochs=2, batch_size=4)
    assert result.status == "succeeded" and result.steps == 8
    assert len(recorder.series("full_valid_loss")) == 2
    assert all(0 <= a <= 1 for a in recorder.series("train_mean_token_accuracy"))


def test_should_stop_ends_the_run_as_cancelled(
    tiny_model: Path, reverse_small: tuple[Path, Path]
) -> None:
    recorder = Recorder()
    config = TrainingConfig(
        "tiny", reverse_small[0], Hyperparameters(50, 4, 1.0), options=LocalOptions(torch_threads=1)
    )
    result = run_training(config, recorder, should_stop=lambda: len(recorder.events) >= 5)
    assert result.status == "cancelled" and result.steps == 5
    assert [step for step, _ in recorder.events] == [1, 2, 3, 4, 5]

"""Will it fit? A model's size from its files, the memory formula against what torch keeps
for backward, and the plan's refusal (exit 2) by ``space``, ``estimate`` and ``run`` alike."""

from __future__ import annotations

import json
import shutil
import warnings
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml

from orchestrator.backends.local.memory import (
    CUDA_OVERHEAD,
    FRAGMENTATION,
    estimate_memory,
    lora_parameters,
    refusal,
)
from orchestrator.backends.local.modelshape import (
    BUILTIN_CONFIGS,
    ModelShape,
    count_parameters,
    model_shape,
)
from orchestrator.backends.local.options import LocalOptions, LoraOptions
from orchestrator.backends.local.tasks import write_task

#: the shapes of real models (their config.json fields), built on the meta device
LLAMA_8B = {
    "model_type": "llama",
    "vocab_size": 128256,
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "max_position_embeddings": 8192,
    "tie_word_embeddings": False,
}
QWEN2_05B = {
    "model_type": "qwen2",
    "vocab_size": 151936,
    "hidden_size": 896,
    "intermediate_size": 4864,
    "num_hidden_layers": 24,
    "num_attention_heads": 14,
    "num_key_value_heads": 2,
    "tie_word_embeddings": True,
}


def _meta_parameters(config: dict[str, Any]) -> int:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    fields = {k: v for k, v in config.items() if k != "model_type"}
    built = AutoConfig.for_model(config["model_type"], **fields)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(built)
    return sum(p.numel() for p in model.parameters())


SMOL = BUILTIN_CONFIGS["smollm2-135m"]
MISTRAL_2_LAYERS = {
    "model_type": "mistral",
    "vocab_size": 32000,
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "num_hidden_layers": 2,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "tie_word_embeddings": False,
}


@pytest.mark.parametrize(
    "config",
    [LLAMA_8B, QWEN2_05B, SMOL, MISTRAL_2_LAYERS],
    ids=["llama8b", "qwen2", "smol", "mistral"],
)
def test_parameter_counts_are_those_of_the_models_transformers_builds(
    config: dict[str, Any],
) -> None:
    assert count_parameters(config) == _meta_parameters(config)


def test_tiny_is_sized_as_built(tiny_model: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    built = json.loads((tiny_model / "config.json").read_text())
    assert {k: built[k] for k in BUILTIN_CONFIGS["tiny"]} == BUILTIN_CONFIGS["tiny"]
    shape = model_shape("tiny")  # pulled: from its folder, counted from the safetensors
    assert shape is not None and "safetensors" in shape.source
    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    assert shape.parameters == sum(p.numel() for p in model.parameters()) == 148_096
    assert count_parameters(BUILTIN_CONFIGS["tiny"]) == 148_096
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        from peft import LoraConfig, get_peft_model

        for targets in ("all-linear", ["q_proj", "v_proj"]):
            adapted = get_peft_model(
                AutoModelForCausalLM.from_pretrained(tiny_model),
                LoraConfig(r=4, target_modules=targets, task_type="CAUSAL_LM"),
            )
            trained = sum(p.numel() for p in adapted.parameters() if p.requires_grad)
            modules = targets if isinstance(targets, str) else tuple(targets)
            lora = LoraOptions(r=4, target_modules=modules)
            assert lora_parameters(shape, lora) == trained


def test_a_gguf_file_is_sized_from_its_header(tmp_path: Path) -> None:
    import gguf
    import numpy as np

    path = tmp_path / "m.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_embedding_length(64)
    writer.add_feed_forward_length(256)
    writer.add_block_count(2)
    writer.add_head_count(4)
    writer.add_head_count_kv(2)
    writer.add_context_length(1024)
    writer.add_token_list([f"t{i}" for i in range(300)])
    writer.add_tensor("token_embd.weight", np.zeros((300, 64), dtype=np.float32))
    writer.add_tensor("blk.0.ffn_up.weight", np.zeros((256, 64), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    shape = model_shape(str(path))
    assert shape == ModelShape(
        parameters=300 * 64 + 256 * 64,
        layers=2,
        hidden=64,
        intermediate=256,
        heads=4,
        kv_heads=2,
        head_dim=16,
        vocab=300,
        context=1024,
        source="GGUF header",
    )


def test_a_model_that_cannot_be_read_without_loading_has_no_shape() -> None:
    assert model_shape("nobody-here/no-such-model") is None  # offline, not in the hub cache


def _saved_for_backward(config: dict[str, Any], lora: bool, b: int, s: int) -> int:
    """Bytes of the activations transformers' Llama saves for backward under bf16 autocast
    (weights left out), for ``b`` examples of ``s`` tokens."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(**config, attn_implementation="sdpa"))
    if lora:
        from peft import LoraConfig, get_peft_model

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            model = get_peft_model(
                model.to(torch.bfloat16),
                LoraConfig(r=8, target_modules="all-linear", task_type="CAUSAL_LM"),
            )
    model.train()
    weights = {p.data_ptr() for p in model.parameters()}
    saved: dict[tuple[Any, ...], int] = {}

    def pack(t: Any) -> Any:
        if t.data_ptr() not in weights:
            key = (t.data_ptr(), t.dtype, tuple(t.shape), t.stride())
            saved[key] = t.numel() * t.element_size()
        return t

    ids = torch.randint(0, config["vocab_size"], (b, s))
    with (
        torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t),
        torch.autocast("cpu", dtype=torch.bfloat16),
    ):
        model(input_ids=ids, attention_mask=torch.ones_like(ids))
    return sum(saved.values())


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_activations_are_what_torch_keeps_for_backward(lora: bool) -> None:
    """The activation bytes per token, measured as the docs say (the growth from 128 to 512
    tokens, so the fixed part drops out), within 10 % of the formula, on a shape that was
    not among those it was fitted on."""
    config = {
        "vocab_size": 320,
        "hidden_size": 192,
        "intermediate_size": 512,
        "num_hidden_layers": 3,
        "num_attention_heads": 6,
        "num_key_value_heads": 2,
        "max_position_embeddings": 1024,
    }
    measured = _saved_for_backward(config, lora, 4, 128) - _saved_for_backward(config, lora, 2, 64)
    shape = ModelShape(count_parameters(config), 3, 192, 512, 6, 2, 32, 320, 1024, "test")
    opts = LocalOptions(lora=LoraOptions() if lora else None)

    def activations(b: int, s: int) -> int:
        return estimate_memory(shape, opts, b, s).activations

    assert activations(4, 128) - activations(2, 64) == pytest.approx(measured, rel=0.10)


def test_the_estimate_by_hand() -> None:
    shape = model_shape("smollm2-135m")
    assert shape is not None
    p, n = 134_515_008, 8 * 100
    full = estimate_memory(shape, LocalOptions(), 8, 100)
    assert (full.weights, full.gradients, full.optimizer) == (6 * p, 4 * p, 8 * p)
    assert full.activations == ((26 * 576 + 11 * 1536) * 30 + 13 * 576) * n
    assert full.logits == 10 * 49152 * 8 * 99  # target positions only: one chunk of them
    chunked = estimate_memory(shape, LocalOptions(loss_chunk=128), 8, 100)
    assert chunked.logits == 10 * 49152 * 128  # one chunk's logits at a time
    parts = 18 * p + full.activations + full.logits
    assert full.total == int(parts * FRAGMENTATION) + CUDA_OVERHEAD
    lora = estimate_memory(shape, LocalOptions(lora=LoraOptions()), 8, 100, gpus=2)
    t = lora_parameters(shape, LoraOptions())
    assert t == 2_442_240  # r 8 on all seven linear layers of 30
    assert (lora.weights, lora.gradients, lora.optimizer) == (2 * p + 4 * t, 8 * t, 8 * t)


def test_a_configuration_that_cannot_fit_is_refused_with_what_would_fit() -> None:
    shape = model_shape("smollm2-135m")
    assert shape is not None
    opts = LocalOptions()
    assert refusal(shape, opts, 16, 128, 1, 80) is None
    why = refusal(shape, opts, 64, 128, 1, 14)
    assert why is not None and why.startswith("batch_size 64 (64 examples of up to 128 tokens")
    assert "than the 14 GiB of one GPU; it fits with backend.options.max_device_batch: " in why
    assert " or backend.options.lora: true" in why and "backend.options.max_length: 64" in why
    fix = int(why.split("max_device_batch: ")[1].split(" ")[0])
    assert refusal(shape, LocalOptions(max_device_batch=fix), 64, 128, 1, 14) is None
    assert refusal(shape, LocalOptions(max_device_batch=fix + 1), 64, 128, 1, 14) is not None
    assert refusal(shape, LocalOptions(lora=LoraOptions()), 64, 128, 1, 14) is None
    hopeless = refusal(shape, opts, 64, 1024, 1, 0.5)
    assert hopeless is not None and "no single option makes it fit" in hopeless
    split = refusal(shape, opts, 64, 1024, 4, 8)  # DDP: 16 examples a GPU
    assert split is not None and "(16 examples of up to 1024 tokens per pass on each of 4" in split


@pytest.fixture
def llama_8b_folder(tiny_model: Path, tmp_path: Path) -> Path:
    """A folder with Llama-3-8B's config.json and the tiny model's tokenizer: sized as 8B,
    tokenized as tiny (no weights: nothing here loads them)."""
    folder = tmp_path / "llama-8b-shaped"
    folder.mkdir()
    for file in tiny_model.iterdir():
        if file.name.startswith(("tokenizer", "special_tokens", "chat_template")):
            shutil.copy(file, folder)
    config = {**LLAMA_8B, "architectures": ["LlamaForCausalLM"], "bos_token_id": 256}
    (folder / "config.json").write_text(json.dumps({**config, "eos_token_id": 257}))
    return folder


def test_a_space_that_cannot_fit_the_gpu_is_refused_by_space_estimate_and_run(
    cli: Callable[..., Any], llama_8b_folder: Path, tmp_path: Path, runs_dir: Path
) -> None:
    """LoRA on an 8B-shaped model, declared 24 GiB GPUs, batch sizes up to 64: the largest
    batch is refused before anything starts, naming it and the options that make it fit;
    with the first of them the same sweep plans, and ``estimate`` shows its memory."""
    train, valid = write_task("reverse", tmp_path / "data", n_train=200, n_valid=20)
    spec: dict[str, Any] = {
        "name": "big",
        "data": {"train": str(train), "valid": str(valid)},
        "backend": {
            "name": "local",
            "model": str(llama_8b_folder),
            "options": {"lora": True, "gpu_memory_gb": 24},
        },
        "space": {"n_epochs": 2, "batch_size": {"low": 8, "high": 64}},
        "trials": 2,
    }
    path = tmp_path / "big.yaml"
    path.write_text(yaml.safe_dump(spec))
    for command in ("space", "estimate", "run"):
        result = cli(command, path)
        assert result.code == 2, (command, result.out, result.err)
        line = result.err.strip()
        assert line.count("\n") == 0, line
        assert line.startswith(f"error: {path}: batch_size 64 (64 examples of up to "), line
        assert "than the 24 GiB of one GPU; it fits with backend.options.max_device_batch: " in line
    assert not (runs_dir / "backends").exists()  # run started nothing
    fix = int(line.split("max_device_batch: ")[1].split(" ")[0])
    spec["backend"]["options"]["max_device_batch"] = fix
    path.write_text(yaml.safe_dump(spec))
    assert cli("space", path).code == 0
    estimate = cli("estimate", path)
    assert estimate.code == 0, estimate.err
    row = next(r for r in estimate.out.splitlines() if r.startswith("GPU memory per trial"))
    assert "of the 24 GiB of each GPU, at batch_size 64: " in row
    assert f"{fix} examples of up to " in row and "8,030,261,248 parameters" in row
    assert float(row.split("about ")[1].split(" GiB")[0]) <= 24


def test_the_trainer_s_memory_options_count() -> None:
    """``gradient_checkpointing: true`` (not ``auto``, off until an out-of-memory error),
    ``attn_implementation: eager``, ``load_in_4bit`` and ``loss_chunk``, parsed as a sweep
    file gives them."""
    shape = model_shape("smollm2-135m")
    assert shape is not None

    def estimate(**raw: Any) -> Any:
        return estimate_memory(shape, LocalOptions.parse({"lora": True, **raw}), 8, 512)

    base = estimate()
    assert estimate(gradient_checkpointing="auto") == base
    assert estimate(gradient_checkpointing=True).activations < base.activations / 4
    assert estimate(attn_implementation="eager").activations > base.activations
    assert estimate(attn_implementation="sdpa") == base
    assert estimate(loss_chunk=64).logits == 10 * shape.vocab * 64 < base.logits
    quantized = replace(LocalOptions.parse({"lora": True}), load_in_4bit=True)  # CUDA-only
    assert estimate_memory(shape, quantized, 8, 512).weights < base.weights / 2

"""A model's size and shape without loading its weights: what the memory estimate needs.

* a folder (built-in models once pulled, any Hugging Face folder, a hub id in the local hub
  cache): the shapes from ``config.json``; the parameter count from the ``*.safetensors``
  headers when there are any (exact: the tensors' shapes, read from each file's first bytes),
  else from the shapes by the decoder formula below;
* the built-in ``tiny`` and ``smollm2-135m`` before they are pulled: their known
  ``config.json`` (a test checks ``tiny``'s against the built model);
* a ``.gguf`` file: the header's metadata and tensor shapes (the ``gguf`` package).

The formula, for a Llama-style decoder (Llama, Mistral, Qwen2/3, SmolLM, and others with
``q/k/v/o_proj`` and a gated MLP): ``V·h`` embeddings (twice when the output layer is not
tied), and per layer ``h·(a·d) + 2·h·(k·d) + (a·d)·h`` attention (``a`` heads, ``k`` key/value
heads of width ``d``; biases on q/k/v where the config says so), ``3·h·I`` MLP and ``2·h``
norms; plus the final norm. It matches the models transformers builds for Llama, Mistral,
SmolLM2 and Qwen2 shapes exactly (tested on the meta device).
"""

from __future__ import annotations

import json
import math
import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.backends.local.models import BUILTIN_MODELS, models_home

__all__ = ["BUILTIN_CONFIGS", "ModelShape", "count_parameters", "model_shape"]

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*$")

#: ``config.json`` of the built-in models, for sizing them before they are pulled
BUILTIN_CONFIGS: dict[str, dict[str, Any]] = {
    "tiny": {
        "model_type": "llama",
        "vocab_size": 261,
        "hidden_size": 64,
        "intermediate_size": 256,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 4,
        "max_position_embeddings": 512,
        "tie_word_embeddings": True,
    },
    "smollm2-135m": {  # HuggingFaceTB/SmolLM2-135M-Instruct
        "model_type": "llama",
        "vocab_size": 49152,
        "hidden_size": 576,
        "intermediate_size": 1536,
        "num_hidden_layers": 30,
        "num_attention_heads": 9,
        "num_key_value_heads": 3,
        "max_position_embeddings": 8192,
        "tie_word_embeddings": True,
    },
}


@dataclass(frozen=True)
class ModelShape:
    """What sizes a model in memory (see the module docstring)."""

    parameters: int
    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    #: the longest sequence it takes (``max_position_embeddings``), when known
    context: int | None
    #: where the figures came from, for messages ("config.json", "GGUF header", ...)
    source: str


def count_parameters(config: Mapping[str, Any]) -> int:
    """Parameters of a Llama-style decoder with this ``config.json`` (module docstring)."""
    h, inter, layers, vocab = (
        int(config[k])
        for k in ("hidden_size", "intermediate_size", "num_hidden_layers", "vocab_size")
    )
    heads = int(config["num_attention_heads"])
    kv = int(config.get("num_key_value_heads") or heads)
    d = int(config.get("head_dim") or h // heads)
    attention = 2 * h * heads * d + 2 * h * kv * d
    if config.get("attention_bias") or config.get("model_type") == "qwen2":
        attention += heads * d + 2 * kv * d
    if config.get("model_type") == "qwen3":
        attention += 2 * d  # q_norm, k_norm
    layer = attention + 3 * h * inter + 2 * h
    embeddings = vocab * h * (1 if config.get("tie_word_embeddings", False) else 2)
    return embeddings + layers * layer + h


def _shape(config: Mapping[str, Any], parameters: int | None, source: str) -> ModelShape | None:
    keys = ("hidden_size", "intermediate_size", "num_hidden_layers", "vocab_size")
    if not all(isinstance(config.get(k), int) for k in (*keys, "num_attention_heads")):
        return None
    heads = int(config["num_attention_heads"])
    h = int(config["hidden_size"])
    context = config.get("max_position_embeddings")
    return ModelShape(
        parameters=parameters if parameters is not None else count_parameters(config),
        layers=int(config["num_hidden_layers"]),
        hidden=h,
        intermediate=int(config["intermediate_size"]),
        heads=heads,
        kv_heads=int(config.get("num_key_value_heads") or heads),
        head_dim=int(config.get("head_dim") or h // heads),
        vocab=int(config["vocab_size"]),
        context=int(context) if isinstance(context, int) else None,
        source=source,
    )


def _safetensors_parameters(folder: Path) -> int | None:
    """The parameter count from the headers of the folder's ``*.safetensors`` files."""
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        return None
    total = 0
    for file in files:
        with file.open("rb") as f:
            (size,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(size))
        for name, tensor in header.items():
            if name != "__metadata__":
                total += math.prod(tensor["shape"])
    return total


def _folder_shape(folder: Path, source: str) -> ModelShape | None:
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    config = config.get("text_config", config)  # multimodal folders keep the LM's apart
    counted = _safetensors_parameters(folder)
    return _shape(config, counted, source if counted is None else f"{source}, safetensors")


def _gguf_shape(path: Path) -> ModelShape | None:
    try:
        from gguf import GGUFReader
    except ImportError:
        return None
    try:
        reader = GGUFReader(path)
    except (OSError, ValueError) as exc:
        raise ValueError(f"unreadable GGUF file {path}: {exc}") from exc

    def field(key: str) -> Any:
        found = reader.fields.get(key)
        return None if found is None else found.contents()

    arch = field("general.architecture")
    tensors = {t.name: t for t in reader.tensors}
    embedding = tensors.get("token_embd.weight")
    tokens = field("tokenizer.ggml.tokens")
    config = {
        "hidden_size": field(f"{arch}.embedding_length"),
        "intermediate_size": field(f"{arch}.feed_forward_length"),
        "num_hidden_layers": field(f"{arch}.block_count"),
        "num_attention_heads": field(f"{arch}.attention.head_count"),
        "num_key_value_heads": field(f"{arch}.attention.head_count_kv"),
        "max_position_embeddings": field(f"{arch}.context_length"),
        "vocab_size": len(tokens) if tokens else None,
    }
    if config["vocab_size"] is None and embedding is not None:
        config["vocab_size"] = int(max(embedding.shape))
    config = {k: int(v) if isinstance(v, int | float) else v for k, v in config.items()}
    count = sum(int(t.n_elements) for t in reader.tensors)
    return _shape(config, count or None, "GGUF header")


def model_shape(model: str) -> ModelShape | None:
    """The shape of the model ``model`` names (as :func:`.models.resolve` reads the name),
    without loading or pulling it; None when it cannot be known here (a hub id not in the
    local cache, a config of another kind of model). ``ValueError`` for an unreadable file."""
    if model in BUILTIN_MODELS:
        pulled = models_home() / model
        if (pulled / "config.json").is_file():
            return _folder_shape(pulled, f"{model}'s config.json")
        config = BUILTIN_CONFIGS.get(model)
        return None if config is None else _shape(config, None, f"{model}'s known config.json")
    path = Path(model).expanduser()
    if path.is_dir():
        return _folder_shape(path, f"{path / 'config.json'}")
    if path.suffix.lower() == ".gguf":
        return _gguf_shape(path) if path.is_file() else None
    if _HUB_ID.match(model):
        try:
            from huggingface_hub import try_to_load_from_cache
        except ImportError:
            return None
        found = try_to_load_from_cache(model, "config.json")
        if isinstance(found, str):
            return _folder_shape(Path(found).parent, f"{model}'s cached config.json")
    return None

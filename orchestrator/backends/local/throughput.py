"""Throughput, model FLOPs utilisation (MFU) and peak memory of a training run.

* **tokens/s**: tokens of the training examples (padding excluded) per second spent in
  optimizer steps (validation excluded).
* **Model FLOPs per token** (:func:`flops_per_token`): ``2N`` forward, ``2N`` backward through
  the activations, and ``2 x trainable`` for the weight gradients, so ``6N`` for a full
  fine-tune and about ``4N`` with LoRA; plus attention, ``12 x layers x hidden x T`` (PaLM's
  count, fwd + bwd, with ``T`` the example's own length, averaged per token). ``N`` counts the
  matmul weights: every parameter but the input embedding (unless it is tied to the LM head).
  Recomputation (gradient checkpointing, chunked loss) is not counted: it is not model work.
* **MFU** = tokens/s x FLOPs per token / the device's dense bf16 peak
  (:data:`PEAK_TFLOPS`, matched on the CUDA device name, or option ``peak_tflops``). On CPU,
  or on a GPU not in the table without ``peak_tflops``, MFU is not reported.
* **Peak memory**: CUDA's peak allocated memory on a GPU, the process's peak RSS elsewhere.

The trainer emits them as ``THROUGHPUT_METRICS`` (:mod:`orchestrator.backends.base`). This
module imports only the standard library (and torch inside functions).

Heavy libraries are imported inside the functions.
"""

from __future__ import annotations

import re
import resource
import sys
from dataclasses import dataclass
from typing import Any

__all__ = [
    "PEAK_TFLOPS",
    "ModelFlops",
    "flops_per_token",
    "mfu",
    "peak_memory_mb",
    "peak_rss_mb",
    "peak_tflops",
]


#: dense bf16 TFLOP/s (fp16 for the T4) by a pattern of the CUDA device name, most specific first
PEAK_TFLOPS: tuple[tuple[str, str, float], ...] = (
    ("H100 PCIe", r"H100.*PCIe", 756.0),
    ("H100 SXM", r"H100", 989.0),
    ("H200", r"H200", 989.0),
    ("A100", r"A100", 312.0),
    ("L40S", r"L40S", 362.0),
    ("A10G", r"A10G", 125.0),
    ("L4", r"\bL4\b", 121.0),
    ("RTX 4090", r"4090", 165.0),
    ("T4", r"\bT4\b", 65.0),
)


def peak_tflops(device_name: str | None, override: float | None = None) -> float | None:
    """The dense bf16 peak of a device by its name (``override`` wins); None when unknown."""
    if override is not None:
        return override
    if not device_name:
        return None
    for _, pattern, tflops in PEAK_TFLOPS:
        if re.search(pattern, device_name, flags=re.IGNORECASE):
            return tflops
    return None


@dataclass(frozen=True)
class ModelFlops:
    """What :func:`flops_per_token` needs to know of a model."""

    #: matmul weights (every parameter but an untied input embedding)
    matmul_params: int
    trainable_params: int
    layers: int
    hidden: int

    @classmethod
    def of(cls, model: Any) -> ModelFlops:
        """Counted on a (possibly peft-wrapped) transformers model."""
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        config = getattr(base, "config", None)
        embed = base.get_input_embeddings() if hasattr(base, "get_input_embeddings") else None
        head = base.get_output_embeddings() if hasattr(base, "get_output_embeddings") else None
        skip = 0
        if embed is not None and (head is None or head.weight is not embed.weight):
            skip = embed.weight.numel()
        total = sum(_numel(p) for p in model.parameters())
        trainable = sum(_numel(p) for p in model.parameters() if p.requires_grad)
        return cls(
            matmul_params=total - skip,
            trainable_params=trainable,
            layers=int(getattr(config, "num_hidden_layers", 0) or 0),
            hidden=int(getattr(config, "hidden_size", 0) or 0),
        )


def _numel(p: Any) -> int:
    # bitsandbytes 4-bit weights pack two values per byte; ds_numel / quant_state hold the truth
    state = getattr(p, "quant_state", None)
    if state is not None and getattr(state, "shape", None) is not None:
        n = 1
        for d in state.shape:
            n *= int(d)
        return n
    return int(p.numel())


def flops_per_token(model: ModelFlops, mean_context: float) -> float:
    """Model FLOPs of training on one token (see the module docstring)."""
    dense = 4 * model.matmul_params + 2 * model.trainable_params
    return float(dense + 12 * model.layers * model.hidden * mean_context)


def mfu(tokens_per_second: float, flops: float, peak: float | None) -> float | None:
    """Model FLOPs utilisation as a fraction of ``peak`` TFLOP/s; None without a peak."""
    if not peak:
        return None
    return tokens_per_second * flops / (peak * 1e12)


def peak_rss_mb() -> float:
    """This process's peak resident memory in MB."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024


def peak_memory_mb(device: Any) -> float:
    """CUDA's peak allocated memory on ``device`` when it is a GPU, else the peak RSS (MB)."""
    if getattr(device, "type", None) == "cuda":
        import torch

        return float(torch.cuda.max_memory_allocated(device)) / (1024 * 1024)
    return peak_rss_mb()

"""Will it fit? The GPU memory of one local job, estimated before it starts.

For a model of ``P`` parameters (``T`` of them trained), ``L`` layers of width ``h``, MLP
width ``I``, ``a`` heads and a vocabulary of ``V``, a pass over ``b`` examples of ``s`` tokens
on one GPU needs, in bytes (bf16 autocast on CUDA, as the trainer runs; AdamW):

* **weights**: ``4·P`` for a full fine-tune (fp32 master weights) plus ``2·P`` for the bf16
  copies autocast keeps during the forward pass; with LoRA the frozen base in bf16, ``2·P``
  (``0.5625·P`` of its linear layers' weights with ``load_in_4bit``: NF4 with an fp32 scale
  per 64 weights, QLoRA, Dettmers et al. 2023), and the adapters ``4·T``;
* **gradients** ``4·T`` and **optimizer state** ``8·T`` (Adam's two fp32 moments): with
  the weights, the 16 bytes per trained parameter of mixed-precision Adam (ZeRO, Rajbhandari
  et al. 2020, section 3.1); ``T = P`` for a full fine-tune, the adapters' count with LoRA
  (``r·(in + out)`` per adapted linear layer); one more ``4·T`` of gradient buckets under DDP;
* **activations** kept for the backward pass, per token: ``26·h + 11·I`` bytes per layer plus
  ``13·h`` for the output head in a full fine-tune, ``12·h + 12·I`` per layer plus ``10·h``
  with LoRA. These are measured, not derived: the bytes of the tensors transformers'
  ``LlamaForCausalLM`` (SDPA attention) saves for backward under bf16 autocast
  (``torch.autograd.graph.saved_tensors_hooks``), fitted over five shapes to within 7 %
  (``tests/backends/test_local_memory.py`` measures them again). They are of the order of
  Korthikanti et al. 2022 ("Reducing Activation Recomputation in Large Transformer
  Models", eq. 1: ``34·h + 5·a·s`` per layer for GPT with 16-bit activations); Llama's fp32
  RMSNorm internals and gated MLP make the difference. SDPA keeps no attention scores;
  ``attn_implementation: eager`` adds the paper's scores term, as ``6·a·s`` (fp32 softmax
  and its bf16 copy). With ``gradient_checkpointing``: ``4·h`` per layer (each layer's fp32
  input, measured) and the head, plus one layer's activations, recomputed in the backward;
* **logits**: ``10·V`` bytes per loss position of one loss chunk (a bf16 and an fp32 copy
  and the fp32 log-softmax, or in the backward the log-softmax and an fp32 and a bf16
  gradient). The loss computes logits only at target positions (:mod:`.loss`), at most
  ``s - 1`` per example, in chunks of ``loss_chunk`` positions (default: as many as keep one
  chunk's fp32 logits under 1 GiB) that are recomputed in the backward when there are
  several: so ``10·V·min(b·(s - 1), chunk)``;
* **overhead**: the sum times 1.1 (the allocator's fragmentation) plus 0.75 GiB (the CUDA
  context and the kernels' workspaces).

``b`` is the examples of one forward pass on one GPU: ``max_device_batch`` (else the whole
batch), at most ``ceil(batch_size / gpus_per_trial)``; ``s`` the longest training example in
tokens, at most ``max_length``. ``gradient_checkpointing: auto`` counts as off (it is, until
a CUDA out-of-memory error at one example per pass switches it on).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from orchestrator.backends.local.devices import Gpu, placement
from orchestrator.backends.local.loss import LOSS_CHUNK_BYTES
from orchestrator.backends.local.modelshape import ModelShape, model_shape
from orchestrator.backends.local.options import LocalOptions, LoraOptions
from orchestrator.core.errors import UsageError

if TYPE_CHECKING:
    from orchestrator.data.findings import DatasetStats

__all__ = [
    "MemoryEstimate",
    "estimate_memory",
    "fixes",
    "lora_parameters",
    "micro_batch",
    "plan_memory",
    "refusal",
]

LABEL = "GPU memory per trial"

GIB = 2**30
CUDA_OVERHEAD = int(0.75 * GIB)
FRAGMENTATION = 1.1
LOGIT_BYTES = 10
NF4_BYTES = 0.5625  # 4 bits plus an fp32 absmax per block of 64
_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def _linear_shapes(shape: ModelShape) -> dict[str, tuple[int, int]]:
    """(in, out) of each linear layer of one decoder layer, by module name."""
    h, i = shape.hidden, shape.intermediate
    q, kv = shape.heads * shape.head_dim, shape.kv_heads * shape.head_dim
    return {
        "q_proj": (h, q),
        "k_proj": (h, kv),
        "v_proj": (h, kv),
        "o_proj": (q, h),
        "gate_proj": (h, i),
        "up_proj": (h, i),
        "down_proj": (i, h),
    }


def lora_parameters(shape: ModelShape, lora: LoraOptions) -> int:
    """The adapters' parameters: ``r·(in + out)`` per adapted linear layer of every decoder
    layer (``all-linear``: all seven; else those named)."""
    targets = lora.target_modules
    names = _LINEAR if targets == "all-linear" else tuple(targets)
    linear = _linear_shapes(shape)
    per_layer = sum(lora.r * (n_in + n_out) for n, (n_in, n_out) in linear.items() if n in names)
    return shape.layers * per_layer


def micro_batch(opts: LocalOptions, batch_size: int, gpus: int) -> int:
    """Examples per forward pass on one GPU."""
    per_gpu = math.ceil(batch_size / max(gpus, 1))
    return min(opts.max_device_batch or per_gpu, per_gpu)


@dataclass(frozen=True)
class MemoryEstimate:
    """One job's GPU memory on each GPU, in bytes, by part (see the module docstring)."""

    weights: int
    gradients: int
    optimizer: int
    activations: int
    logits: int
    #: examples per pass and tokens per example it was estimated for
    micro_batch: int
    tokens: int

    @property
    def total(self) -> int:
        parts = self.weights + self.gradients + self.optimizer + self.activations + self.logits
        return int(parts * FRAGMENTATION) + CUDA_OVERHEAD

    def describe(self) -> str:
        """``weights 0.5 + gradients 0.5 + ... GiB`` (before the overhead)."""
        parts = (
            ("weights", self.weights),
            ("gradients", self.gradients),
            ("optimizer", self.optimizer),
            ("activations", self.activations),
            ("logits", self.logits),
        )
        return " + ".join(f"{name} {_gib(v)}" for name, v in parts) + " GiB"


def _gib(n: float) -> str:
    value = n / GIB
    return f"{value:.2f}" if value < 10 else f"{value:.1f}"


def estimate_memory(
    shape: ModelShape, opts: LocalOptions, micro: int, tokens: int, gpus: int = 1
) -> MemoryEstimate:
    """The memory of one GPU of a job of ``shape`` with ``opts``: ``micro`` examples of
    ``tokens`` tokens per pass, ``gpus`` GPUs per job (module docstring)."""
    p = shape.parameters
    if opts.lora is None:
        trained = p
        weights = 4 * p + 2 * p
    else:
        trained = lora_parameters(shape, opts.lora)
        if opts.load_in_4bit:
            linear = shape.layers * sum(i * o for i, o in _linear_shapes(shape).values())
            base = int(NF4_BYTES * linear) + 2 * (p - linear)
        else:
            base = 2 * p
        weights = base + 4 * trained
    gradients = 4 * trained * (2 if gpus > 1 else 1)
    h, inter = shape.hidden, shape.intermediate
    if opts.lora is None:
        per_layer, head = 26 * h + 11 * inter, 13 * h
    else:
        per_layer, head = 12 * h + 12 * inter, 10 * h
    if opts.attn_implementation == "eager":
        per_layer += 6 * shape.heads * tokens
    if opts.gradient_checkpointing is True:
        per_token = 4 * h * shape.layers + per_layer + head
    else:
        per_token = per_layer * shape.layers + head
    n = micro * tokens
    chunk = opts.loss_chunk or max(1, LOSS_CHUNK_BYTES // (4 * shape.vocab))
    positions = min(micro * max(tokens - 1, 0), chunk)
    return MemoryEstimate(
        weights=weights,
        gradients=gradients,
        optimizer=8 * trained,
        activations=per_token * n,
        logits=LOGIT_BYTES * shape.vocab * positions,
        micro_batch=micro,
        tokens=tokens,
    )


def fixes(
    shape: ModelShape, opts: LocalOptions, micro: int, tokens: int, gpus: int, limit: int
) -> list[str]:
    """Each single change of the options that makes the job fit ``limit`` bytes, as
    ``option: value`` (a smaller ``max_device_batch``, ``gradient_checkpointing``, LoRA,
    ``load_in_4bit``, a shorter ``max_length``), most harmless first."""

    def fits(o: LocalOptions, m: int = micro, t: int = tokens) -> bool:
        return estimate_memory(shape, o, m, t, gpus).total <= limit

    found = []
    smaller = next((m for m in range(micro - 1, 0, -1) if fits(opts, m)), None)
    if smaller is not None:
        found.append(f"max_device_batch: {smaller}")
    checkpointed = replace(opts, gradient_checkpointing=True)
    if opts.gradient_checkpointing is not True and fits(checkpointed):
        found.append("gradient_checkpointing: true")
    if opts.lora is None and fits(replace(opts, lora=LoraOptions())):
        found.append("lora: true")
    if not opts.load_in_4bit:
        lora = opts.lora or LoraOptions()
        if fits(replace(opts, lora=lora, load_in_4bit=True)):
            found.append("load_in_4bit: true" + ("" if opts.lora else " (with lora)"))
    shorter = next((t for t in _halvings(tokens) if fits(opts, t=t)), None)
    if shorter is not None:
        found.append(f"max_length: {shorter} (truncates longer examples)")
    return found


def _halvings(tokens: int) -> list[int]:
    out, t = [], tokens // 2
    while t >= 16:
        out.append(t)
        t //= 2
    return out


def refusal(
    shape: ModelShape, opts: LocalOptions, batch_size: int, tokens: int, gpus: int, gib: float
) -> str | None:
    """Why the configuration with ``batch_size`` cannot fit GPUs of ``gib`` GiB (naming it,
    the estimate and the options that would make it fit), or None when it fits."""
    micro = micro_batch(opts, batch_size, gpus)
    estimate = estimate_memory(shape, opts, micro, tokens, gpus)
    limit = int(gib * GIB)
    if estimate.total <= limit:
        return None
    per_gpu = f" on each of {gpus} GPUs" if gpus > 1 else ""
    found = fixes(shape, opts, micro, tokens, gpus, limit)
    remedy = (
        "it fits with " + " or ".join(f"backend.options.{fix}" for fix in found)
        if found
        else "no single option makes it fit: use a smaller model or GPUs with more memory"
    )
    return (
        f"batch_size {batch_size} ({micro} examples of up to {tokens} tokens per pass"
        f"{per_gpu}) needs about {_gib(estimate.total)} GiB of GPU memory "
        f"({estimate.describe()}, plus overhead), more than the {gib:g} GiB of one GPU; {remedy}"
    )


def plan_memory(
    model: str,
    opts: LocalOptions,
    batch_size: int,
    train: DatasetStats,
    discover: Callable[[], Sequence[Gpu]],
) -> tuple[tuple[str, str], ...]:
    """The plan's check (:meth:`LocalBackend.check_resources`): :class:`UsageError` with
    :func:`refusal`'s line when the largest batch cannot fit a GPU whose memory is known
    (``gpu_memory_gb``, or found); else a row for ``ftsweep estimate``. Without a GPU memory
    to compare with, only a counted plan (``estimate``, ``run``) gets the row."""
    place = placement(opts, discover)
    gib = place.memory_gib
    if gib is None and (train.tokens is None or opts.device not in ("auto", "cuda")):
        return ()
    try:
        shape = model_shape(model)
    except ValueError as exc:
        raise UsageError(f"local backend: {exc}") from None
    if shape is None:
        return ((LABEL, f"unknown: {model} cannot be sized without loading it"),)
    longest = train.tokens.max if train.tokens is not None else _longest(model, train)
    tokens = int(min(longest, opts.max_length or shape.context or longest))
    gpus = place.per_job or opts.gpus_per_trial or 1
    if gib is not None:
        problem = refusal(shape, opts, batch_size, tokens, gpus, gib)
        if problem is not None:
            raise UsageError(problem)
    micro = micro_batch(opts, batch_size, gpus)
    estimate = estimate_memory(shape, opts, micro, tokens, gpus)
    against = (
        f"of the {gib:g} GiB of each GPU"
        if gib is not None
        else "(no GPU found to compare with: backend.options.gpu_memory_gb declares one)"
    )
    return (
        (
            LABEL,
            f"about {_gib(estimate.total)} GiB {against}, at batch_size {batch_size}: "
            f"{micro} examples of up to {tokens} tokens per pass ({estimate.describe()}, "
            f"plus overhead; {shape.parameters:,} parameters from {shape.source})",
        ),
    )


def _longest(model: str, train: DatasetStats) -> int:
    """The longest training example in tokens, counted as the trainer encodes it."""
    from orchestrator.backends.local.tokens import LocalTokenCounter
    from orchestrator.data.checks import check_file

    stats = check_file(Path(train.path), LocalTokenCounter(model), model=model)[0]
    return int(stats.tokens.max) if stats.tokens is not None else 1

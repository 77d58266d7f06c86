"""The weighted loss and the completion-token metrics of a batch of encoded examples.

The optimised objective of a batch is ``sum(w * CE) / sum(w)`` over shifted targets, each
target carrying the weight of the token it predicts. The reported loss and accuracy are
measured on completion tokens only, so they do not move when ``prompt_loss_weight`` does.

The loss is computed only where it counts: the decoder's hidden states are gathered at the
target positions (:mod:`.batches`: every position whose next token has a non-zero weight or
is a completion token) before the LM head, so no logits exist for padding, for the last
token of an example, or for prompt tokens with ``prompt_loss_weight`` 0. The LM head and the
cross-entropy then run in chunks of ``loss_chunk`` positions; when there are several chunks
each one is checkpointed (its logits are recomputed in the backward pass), so at most one
chunk's fp32 logits live at a time. A model whose causal-LM forward does more than
``lm_head(decoder(...))`` (logit soft-capping or scaling) keeps its own forward, and its
logits are gathered the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from orchestrator.backends.local.batches import Layout, lay_out
from orchestrator.backends.local.encoding import Encoded

__all__ = ["LOSS_CHUNK_BYTES", "BatchStats", "Forward", "split_head", "target_weight"]

#: without option ``loss_chunk``, positions are chunked so one chunk's fp32 logits stay under this
LOSS_CHUNK_BYTES = 1 << 30

#: config fields of models whose logits are not plain ``lm_head(hidden)``
_LOGIT_TRANSFORMS = (
    "final_logit_softcapping",
    "logit_scale",
    "logits_scaling",
    "output_multiplier_scale",
)


@dataclass
class BatchStats:
    """Sums over the completion targets of one or more micro-batches."""

    loss_sum: float = 0.0
    correct: int = 0
    count: int = 0
    weighted_sum: float = 0.0
    weight: float = 0.0

    def add(self, other: BatchStats) -> None:
        self.loss_sum += other.loss_sum
        self.correct += other.correct
        self.count += other.count
        self.weighted_sum += other.weighted_sum
        self.weight += other.weight

    @property
    def loss(self) -> float:
        """Mean cross-entropy per completion token (the weighted loss when there are none)."""
        if self.count:
            return self.loss_sum / self.count
        return self.weighted_sum / self.weight if self.weight else float("nan")

    @property
    def accuracy(self) -> float:
        """Share of completion tokens the model predicts (argmax, teacher forcing)."""
        return self.correct / self.count if self.count else float("nan")


def target_weight(examples: Sequence[Encoded]) -> float:
    """The total loss weight of the examples' targets (every token but the first)."""
    return float(sum(sum(e.weights[1:]) for e in examples))


def split_head(model: Any) -> tuple[Any, Any] | None:
    """``(decoder, lm_head)`` of a causal LM (through a peft wrapper) whose logits are
    ``lm_head(decoder(...).last_hidden_state)``, or None where that is not known to hold."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    config = getattr(base, "config", None)
    if config is None or not type(base).__name__.endswith("ForCausalLM"):
        return None
    for name in _LOGIT_TRANSFORMS:
        if getattr(config, name, None) not in (None, 1, 1.0):
            return None
    try:
        decoder, head = base.get_decoder(), base.get_output_embeddings()
    except (AttributeError, ValueError, NotImplementedError):
        return None
    if decoder is None or head is None or decoder is base:
        return None
    return decoder, head


def _direct(fn: Callable[..., Any], /, **inputs: Any) -> Any:
    return fn(**inputs)


class Forward:
    """The forward pass and loss of one model over lists of encoded examples.

    ``precision`` is a :class:`~.precision.Precision`; ``packed`` chooses the layout of
    :func:`.batches.lay_out`; ``loss_chunk`` the positions per chunk (None: see
    :data:`LOSS_CHUNK_BYTES`); ``through`` what the training passes go through
    (:meth:`.distributed.StepShare.wrap`; evaluation calls the model directly).
    """

    def __init__(
        self,
        model: Any,
        *,
        pad_id: int,
        device: Any,
        precision: Any,
        packed: bool,
        loss_chunk: int | None = None,
        through: Callable[..., Any] | None = None,
    ) -> None:
        self.model = model
        #: runs the training passes, ``through(fn, **inputs)`` (a data-parallel rank's DDP)
        self.through = through or _direct
        self.pad_id = pad_id
        self.device = device
        self.precision = precision
        self.packed = packed
        self.loss_chunk = loss_chunk
        self.split = split_head(model)
        #: token slots computed and tokens in them, over the training passes (with gradients);
        #: the difference is padding
        self.train_slots = 0
        self.train_tokens = 0

    def __call__(self, examples: Sequence[Encoded]) -> tuple[Any, BatchStats]:
        """The weighted cross-entropy *sum* as a tensor (divide by the batch's total
        :func:`target_weight` before ``backward``) and the batch's statistics."""
        import torch

        weighted, ce, hits, layout = self._run(examples)
        with torch.no_grad():
            c = torch.tensor(layout.completion, dtype=torch.bool).to(ce.device)
            stats = BatchStats(
                loss_sum=float(ce[c].sum()),
                correct=int((hits & c).sum()),
                count=int(c.sum()),
                weighted_sum=float(weighted),
                weight=float(sum(layout.weights)),
            )
        return weighted, stats

    def per_example(self, examples: Sequence[Encoded]) -> list[BatchStats]:
        """Each example's statistics (call under ``torch.no_grad()``)."""
        _, ce_t, hits_t, layout = self._run(examples)
        ce, hits = ce_t.tolist(), hits_t.tolist()
        out = [BatchStats() for _ in examples]
        for k, i in enumerate(layout.example):
            stats, w = out[i], layout.weights[k]
            stats.weighted_sum += ce[k] * w
            stats.weight += w
            if layout.completion[k]:
                stats.loss_sum += ce[k]
                stats.correct += bool(hits[k])
                stats.count += 1
        return out

    def _run(self, examples: Sequence[Encoded]) -> tuple[Any, Any, Any, Layout]:
        """The weighted CE sum, per-target CE and argmax hits (tensors), and the layout."""
        import torch

        layout = lay_out(examples, self.pad_id, packed=self.packed)
        if torch.is_grad_enabled():
            self.train_slots += layout.n_slots
            self.train_tokens += layout.n_tokens
        dev = self.device
        ids = torch.tensor(layout.input_ids, dtype=torch.long).to(dev)
        inputs: dict[str, Any] = {"input_ids": ids}
        if layout.attention_mask is not None:
            inputs["attention_mask"] = torch.tensor(layout.attention_mask, dtype=torch.long).to(dev)
        if layout.position_ids is not None:
            inputs["position_ids"] = torch.tensor(layout.position_ids, dtype=torch.long).to(dev)
        positions = torch.tensor(layout.positions, dtype=torch.long).to(dev)
        targets = torch.tensor(layout.targets, dtype=torch.long).to(dev)
        weights = torch.tensor(layout.weights, dtype=torch.float32).to(dev)
        run = self.through if torch.is_grad_enabled() else _direct
        with self.precision.autocast():
            if self.split is not None:
                rows = run(self.split[0], **inputs).last_hidden_state
            else:
                rows = run(self.model, **inputs).logits
        rows = rows.reshape(-1, rows.size(-1)).index_select(0, positions)
        weighted, ce, argmax = self._loss(rows, targets, weights)
        return weighted, ce, argmax == targets, layout

    def _loss(self, rows: Any, targets: Any, weights: Any) -> tuple[Any, Any, Any]:
        """Weighted CE sum, per-position CE and argmax, chunked (see the module docstring)."""
        import torch
        from torch.utils.checkpoint import checkpoint

        n = rows.size(0)
        head = self.split[1] if self.split is not None else None
        vocab = head.weight.size(0) if head is not None else rows.size(-1)
        chunk = self.loss_chunk or max(1, LOSS_CHUNK_BYTES // (4 * vocab))
        if n <= chunk:
            return self._chunk(rows, targets, weights)
        parts = []
        for start in range(0, n, chunk):
            piece = (rows[start : start + chunk], targets[start : start + chunk])
            w = weights[start : start + chunk]
            if torch.is_grad_enabled() and head is not None:
                parts.append(checkpoint(self._chunk, *piece, w, use_reentrant=False))
            else:
                parts.append(self._chunk(*piece, w))
        weighted = torch.stack([p[0] for p in parts]).sum()
        return weighted, torch.cat([p[1] for p in parts]), torch.cat([p[2] for p in parts])

    def _chunk(self, rows: Any, targets: Any, weights: Any) -> tuple[Any, Any, Any]:
        import torch.nn.functional as F

        if self.split is not None:
            with self.precision.autocast():
                rows = self.split[1](rows)
        logits = rows.float()
        ce = F.cross_entropy(logits, targets, reduction="none")
        return (ce * weights).sum(), ce.detach(), logits.detach().argmax(-1)

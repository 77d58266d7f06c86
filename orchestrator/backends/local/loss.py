"""The weighted loss and the completion-token metrics of a batch of encoded examples.

The optimised objective of a batch is ``sum(w * CE) / sum(w)`` over shifted targets, each
target carrying the weight of the token it predicts. The reported loss and accuracy are
measured on completion tokens only, so they do not move when ``prompt_loss_weight`` does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from orchestrator.backends.local.encoding import Encoded

__all__ = ["BatchStats", "forward", "target_weight"]


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


def forward(
    model: Any, examples: Sequence[Encoded], pad_id: int, device: Any, autocast: Any
) -> tuple[Any, BatchStats]:
    """Run ``model`` on ``examples`` (right-padded into one batch).

    Returns the weighted cross-entropy *sum* as a tensor (divide by the batch's total
    :func:`target_weight` before ``backward``) and the batch's statistics.
    """
    import torch
    import torch.nn.functional as F

    width = max(len(e) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    weights = torch.zeros((len(examples), width), dtype=torch.float32)
    completion = torch.zeros((len(examples), width), dtype=torch.bool)
    for row, e in enumerate(examples):
        n = len(e)
        ids[row, :n] = torch.tensor(e.input_ids)
        mask[row, :n] = 1
        weights[row, :n] = torch.tensor(e.weights)
        completion[row, :n] = torch.tensor(e.completion)
    ids, mask = ids.to(device), mask.to(device)
    weights, completion = weights.to(device), completion.to(device)

    with autocast:
        logits = model(input_ids=ids, attention_mask=mask).logits
    logits = logits[:, :-1].float()
    targets = ids[:, 1:]
    w = weights[:, 1:]
    c = completion[:, 1:]
    ce = F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1), reduction="none")
    ce = ce.view_as(w)
    weighted = (ce * w).sum()
    with torch.no_grad():
        hits = (logits.argmax(-1) == targets) & c
        stats = BatchStats(
            loss_sum=float(ce[c].sum()),
            correct=int(hits.sum()),
            count=int(c.sum()),
            weighted_sum=float(weighted),
            weight=float(w.sum()),
        )
    return weighted, stats

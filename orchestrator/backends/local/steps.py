"""One optimizer step of the local trainer: micro-batches, exact accumulation, loss scaling.

The objective of a batch is its weighted CE sum divided by the whole batch's target weight, so
each micro-batch's sum is divided by that total before ``backward`` and ``max_device_batch``
changes memory, not the result. Micro-batches are cut from the batch sorted by length (the sum
does not care, and similar lengths pad or pack less). With fp16 the loss is scaled by a
``GradScaler`` and the gradients unscaled before clipping at 1.0.

On a CUDA out-of-memory error the micro-batch is halved and the step retried; at one example
per pass, with ``gradient_checkpointing: auto``, checkpointing is switched on and the step
retried once more before giving up. A data-parallel rank runs only its share of the batch
(:meth:`.distributed.StepShare.split`) and returns the statistics of the whole step.

Imports only torch (and this package's pure modules), so ``benchmarks/gpu_check.py`` runs the
same step on a machine without ftsweep's other dependencies.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from orchestrator.backends.local.distributed import OneProcess, StepShare
from orchestrator.backends.local.encoding import Encoded
from orchestrator.backends.local.loss import BatchStats, Forward, target_weight
from orchestrator.backends.local.prepare import enable_checkpointing
from orchestrator.core.errors import BackendError

__all__ = ["Stepper", "chunks"]

_T = TypeVar("_T")


def chunks(items: Sequence[_T], size: int) -> list[Sequence[_T]]:
    """``items`` cut into consecutive pieces of at most ``size``."""
    return [items[i : i + size] for i in range(0, len(items), size)]


def _never() -> bool:
    return False


class Stepper:
    """Optimizer steps of ``forward.model`` (see the module docstring).

    ``micro`` is the examples per pass; ``checkpointing`` the ``gradient_checkpointing``
    option (``True``, ``False`` or ``"auto"``); ``share`` this process's part of each step
    (:mod:`.distributed`: a data-parallel rank's micro-batches, their loss factors and sync
    contexts, and the statistics summed over the ranks; the whole step by default).
    """

    def __init__(
        self,
        forward: Forward,
        optimizer: Any,
        scheduler: Any,
        *,
        micro: int,
        scaler: Any = None,
        checkpointing: bool | str = "auto",
        share: StepShare | None = None,
    ) -> None:
        self.forward = forward
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.micro = micro
        self.scaler = scaler
        self.share = share or OneProcess()
        self.auto_checkpointing = checkpointing == "auto"
        self.checkpointing = checkpointing is True
        self.params = [p for g in optimizer.param_groups for p in g["params"]]
        #: sum over trained examples of their length squared (attention FLOPs)
        self.context_sum = 0.0

    def step(
        self, batch: Sequence[Encoded], stop: Callable[[], bool] = _never
    ) -> BatchStats | None:
        """One optimizer step; None when ``stop`` turned true before it finished."""
        import torch

        total_weight = max(target_weight(batch), 1e-12)
        ordered = sorted(batch, key=len) if self.micro < len(batch) else batch
        while True:
            stats = BatchStats()
            try:
                for micro, factor, sync in self.share.split(ordered, self.micro):
                    if stop():
                        self.optimizer.zero_grad(set_to_none=True)
                        return None
                    with sync:
                        weighted, part = self.forward(micro)
                        loss = weighted * factor / total_weight
                        (self.scaler.scale(loss) if self.scaler else loss).backward()
                    if factor:
                        stats.add(part)
                break
            except torch.cuda.OutOfMemoryError as exc:
                self.optimizer.zero_grad(set_to_none=True)
                torch.cuda.empty_cache()
                if self.micro > 1:
                    self.micro = max(1, self.micro // 2)
                elif self.auto_checkpointing and not self.checkpointing:
                    enable_checkpointing(self.forward.model)
                    self.checkpointing = True
                else:
                    raise BackendError("out of GPU memory even with one example per pass") from exc
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        torch.nn.utils.clip_grad_norm_(self.params, 1.0)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.context_sum += sum(len(e) ** 2 for e in batch)
        return self.share.reduce(stats)

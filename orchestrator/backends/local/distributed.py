"""One process's share of a training step: alone, or one rank of a data-parallel job.

A job with ``gpus_per_trial`` > 1 is started by ``torchrun`` (:func:`.devices.worker_command`),
one worker per GPU; each reads its rank from the environment (:class:`Ranks`). The training
loop asks its :class:`StepShare` three things, and nothing else changes:

* ``wrap(model)``: what the training passes go through, called as ``run(fn, **inputs)`` for
  ``fn`` the model or a part of it (its decoder: :mod:`.loss` applies the LM head itself).
  Alone it calls ``fn``; a rank calls it inside ``DistributedDataParallel`` over a module
  holding the model (NCCL on CUDA, gloo on CPU), so DDP sees every pass whichever part it
  runs and its gradient hooks fire in the backward;
* ``split(batch, micro)``: this rank's micro-batches of an optimizer step, each with the
  factor its weighted loss is multiplied by and the context its backward runs in. Rank ``r``
  of ``w`` takes examples ``r, r + w, ...`` of the step's batch. Every loss is divided by the
  *whole* batch's weight and multiplied by ``w`` (DDP averages gradients over the ranks), so
  the gradient is exactly the single-process one. Only a rank's last micro-batch synchronises
  (``no_sync`` before it), so ranks may hold different numbers of micro-batches; a rank left
  without an example runs one pass with factor 0, because every rank must join each
  synchronisation;
* ``reduce(stats)``: the step's metrics summed over the ranks;

and ``world``, the ranks in the job (MFU counts the peak of every GPU).

Evaluation, generation and saving use the unwrapped model on each rank (no collective calls
there); only rank 0 writes the job's files. On CPU (gloo) this is tested to give the
single-process losses; the NCCL path on several GPUs has not run here (see
``docs/local-trainer.md``).
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol, cast

from orchestrator.backends.local.encoding import Encoded
from orchestrator.backends.local.loss import BatchStats

__all__ = ["DataParallel", "OneProcess", "Ranks", "StepShare"]

Part = tuple[Sequence[Encoded], float, AbstractContextManager[Any]]


@dataclass(frozen=True)
class Ranks:
    """This process's place in a data-parallel job (``torchrun``'s environment)."""

    rank: int = 0
    local_rank: int = 0
    world: int = 1

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Ranks:
        """From ``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE``; a single process without them."""
        env = os.environ if env is None else env
        try:
            world = int(env.get("WORLD_SIZE", "1"))
            rank = int(env.get("RANK", "0"))
            local = int(env.get("LOCAL_RANK", str(rank)))
        except ValueError:
            return cls()
        return cls(rank, local, world) if world > 1 else cls()

    @property
    def main(self) -> bool:
        """Rank 0: the process that writes the job's files."""
        return self.rank == 0


class StepShare(Protocol):
    """What the training loop asks about its share of each step (module docstring)."""

    @property
    def world(self) -> int: ...

    def wrap(self, model: Any) -> Callable[..., Any]: ...

    def split(self, batch: Sequence[Encoded], micro: int) -> list[Part]: ...

    def reduce(self, stats: BatchStats) -> BatchStats: ...


def _chunks(items: Sequence[Encoded], size: int) -> list[Sequence[Encoded]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def _direct(fn: Callable[..., Any], /, **inputs: Any) -> Any:
    return fn(**inputs)


class OneProcess:
    """The whole step in this process."""

    @property
    def world(self) -> int:
        return 1

    def wrap(self, model: Any) -> Callable[..., Any]:
        return _direct

    def split(self, batch: Sequence[Encoded], micro: int) -> list[Part]:
        return [(chunk, 1.0, contextlib.nullcontext()) for chunk in _chunks(batch, micro)]

    def reduce(self, stats: BatchStats) -> BatchStats:
        return stats


class DataParallel:
    """Rank ``ranks.rank`` of a data-parallel job: joins the process group on ``start``."""

    def __init__(self, ranks: Ranks) -> None:
        self.ranks = ranks
        self.model: Any = None
        self.device: Any = None

    def start(self, device: Any) -> None:
        """Join the process group (NCCL for a CUDA ``device``, gloo otherwise)."""
        import torch.distributed as dist

        self.device = device
        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")

    @property
    def world(self) -> int:
        return self.ranks.world

    def wrap(self, model: Any) -> Callable[..., Any]:
        import torch
        from torch.nn.parallel import DistributedDataParallel

        class Passes(torch.nn.Module):
            """The model, and a forward that runs any part of it (module docstring)."""

            def __init__(self, model: Any) -> None:
                super().__init__()
                self.model = model

            def forward(self, fn: Callable[..., Any], /, **inputs: Any) -> Any:
                return fn(**inputs)

        cuda = self.device is not None and self.device.type == "cuda"
        with warnings.catch_warnings():  # torch 2.13 renames it; older ones know only this
            warnings.simplefilter("ignore", FutureWarning)
            self.model = DistributedDataParallel(
                Passes(model),
                device_ids=[self.device.index] if cuda else None,
                broadcast_buffers=False,
            )
        return cast(Callable[..., Any], self.model)

    def split(self, batch: Sequence[Encoded], micro: int) -> list[Part]:
        world = float(self.ranks.world)
        mine = list(batch[self.ranks.rank :: self.ranks.world])
        if not mine:  # every rank joins each synchronisation: a pass that counts nothing
            return [(batch[:1], 0.0, contextlib.nullcontext())]
        chunks = _chunks(mine, micro)
        last = len(chunks) - 1
        return [
            (chunk, world, self.model.no_sync() if i < last else contextlib.nullcontext())
            for i, chunk in enumerate(chunks)
        ]

    def reduce(self, stats: BatchStats) -> BatchStats:
        import torch
        import torch.distributed as dist

        sums = [stats.loss_sum, stats.correct, stats.count, stats.weighted_sum, stats.weight]
        device = self.device if self.device is not None and self.device.type == "cuda" else None
        tensor = torch.tensor(sums, dtype=torch.float64, device=device)
        dist.all_reduce(tensor)
        loss_sum, correct, count, weighted_sum, weight = tensor.tolist()
        return BatchStats(loss_sum, round(correct), round(count), weighted_sum, weight)

    def close(self) -> None:
        """Leave the process group."""
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()

"""The simulator's response surface as a cheap objective, shared by the search benchmarks.

A trial's objective is what ``apisim`` reports as ``full_valid_loss`` at an epoch end: the
simulator's own per-job curve (``orchestrator/apisim/surface.py``: :func:`curve`, the values a
job on apisim reports, its noise included), computed for the job's resolved hyper-parameters
and a seed drawn per job from the run's seed and the job's configuration. A job's earlier
epochs are the same curve's earlier epoch ends (what ``epochs_as_trials`` tells). Regret is
measured on the noise-free value of the configuration the sampler ends up choosing (the best
*observed*), against the best noise-free value of a dense grid over the same space.

The space is the default one (``SpaceSpec()``) resolved for the ``openai`` backend at each
dataset size, exactly as ``ftsweep run`` resolves it; a job's price is the simulator's
per-token price times ``n_epochs x examples x tokens per example``.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from functools import cached_property, lru_cache

from orchestrator.apisim.surface import Resolved, Surface, SurfaceInputs, curve
from orchestrator.backends.registry import load
from orchestrator.config import SpaceSpec
from orchestrator.plan.space import SearchSpace, resolve_space

__all__ = ["DATASET_SIZES", "Problem", "problems"]

#: training examples of the simulated datasets (small, medium, large)
DATASET_SIZES = (100, 1000, 10000)
#: tokens per training example, and gpt-4o-mini's training price per 1M tokens (USD)
TOKENS_PER_EXAMPLE = 400
PRICE_PER_M_TOKENS = 3.0


@dataclass(frozen=True)
class Problem:
    """One dataset's search problem: its resolved space and its surface."""

    n_train: int
    space: SearchSpace

    def _surface(self, batch_size: int, lrm: float) -> Surface:
        hp = Resolved(1, int(batch_size), float(lrm))
        return Surface(SurfaceInputs(hp, self.n_train, True, 0, f"bench-{self.n_train}"))

    def true_value(self, params: dict[str, float], epochs: int | None = None) -> float:
        """The noise-free validation loss of ``params`` after ``epochs`` (default its own)."""
        e = int(params["n_epochs"]) if epochs is None else epochs
        surface = self._surface(int(params["batch_size"]), params["learning_rate_multiplier"])
        return surface.losses(float(e))[1]

    def observed(self, params: dict[str, float], seed: int, epochs: int | None = None) -> float:
        """What the simulator reports for the job ``params`` at the end of epoch ``epochs``
        (default its last): its ``full_valid_loss``, from :func:`epoch_ends`."""
        ends = self.epoch_ends(
            int(params["n_epochs"]),
            int(params["batch_size"]),
            params["learning_rate_multiplier"],
            seed,
        )
        return ends[(int(params["n_epochs"]) if epochs is None else epochs) - 1]

    def epoch_ends(
        self, n_epochs: int, batch_size: int, lrm: float, seed: int
    ) -> tuple[float, ...]:
        """The ``full_valid_loss`` a job on apisim reports at each epoch end: the simulator's
        :func:`curve`, seeded per job (from the run's ``seed`` and the configuration)."""
        return _epoch_ends(self.n_train, n_epochs, batch_size, lrm, seed)

    def cost(self, params: dict[str, float]) -> float:
        """The job's price in USD (the simulator charges trained tokens)."""
        tokens = int(params["n_epochs"]) * self.n_train * TOKENS_PER_EXAMPLE
        return tokens * PRICE_PER_M_TOKENS / 1e6

    @cached_property
    def optimum(self) -> float:
        """The best noise-free value on a dense grid: every epoch count, every batch size
        (up to 64 log-spaced ones) and 200 log-spaced multipliers."""
        e_lo, e_hi = (int(x) for x in self.space.bounds("n_epochs"))
        b_lo, b_hi = (int(x) for x in self.space.bounds("batch_size"))
        m_lo, m_hi = self.space.bounds("learning_rate_multiplier")
        if b_hi - b_lo < 64:
            batches = list(range(b_lo, b_hi + 1))
        else:
            batches = sorted({round(b_lo * (b_hi / b_lo) ** (i / 63)) for i in range(64)})
        lrms = [m_lo * (m_hi / m_lo) ** (i / 199) for i in range(200)]
        best = math.inf
        for b in batches:
            for m in lrms:
                surface = self._surface(b, m)
                for e in range(e_lo, e_hi + 1):
                    best = min(best, surface.losses(float(e))[1])
        return best

    def regret(self, value: float) -> float:
        """``value`` above the grid optimum, in % of it (never below 0)."""
        return max(0.0, 100 * (value - self.optimum) / self.optimum)


@lru_cache(maxsize=4096)
def _epoch_ends(
    n_train: int, n_epochs: int, batch_size: int, lrm: float, seed: int
) -> tuple[float, ...]:
    key = f"{seed}|{n_epochs}|{batch_size}|{lrm:.12g}"
    job_seed = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big")
    hp = Resolved(n_epochs, batch_size, lrm)
    points = curve(SurfaceInputs(hp, n_train, True, job_seed, f"bench-{n_train}"))
    ends = tuple(p.full_valid_loss for p in points if p.full_valid_loss is not None)
    assert len(ends) == n_epochs, (len(ends), n_epochs)
    return ends


def problems(sizes: tuple[int, ...] = DATASET_SIZES) -> list[Problem]:
    backend = load("openai")
    return [Problem(n, resolve_space(SpaceSpec(), n, backend, "bench")) for n in sizes]

"""The response-surface model behind every simulated loss curve.

A job's curve is a deterministic function of its hyper-parameters, its data and its seed
(see ``docs/apisim.md`` for the derivation). With ``N`` training examples, batch size ``B``,
learning-rate multiplier ``M``, ``E`` epochs and the reference batch ``B* = clamp(round(0.002 N),
1, 256)`` (the legacy default), the *progress* after ``e`` (fractional) epochs is

    p(e) = e * (M / 0.1) * sqrt(B* / B)

and, with per-dataset constants ``L0`` (initial loss) and ``Lf`` (the loss floor),

    base(p)  = Lf + (L0 - Lf) * exp(-p / 0.7)
    over(p)  = min(2 L0, k * max(0, p - p0) ** 1.3)
               with k = 0.25 * sqrt(100 / N) and p0 = 1.2 * (N / 100) ** 0.15
    mem(p)   = 1 - 0.85 * (1 - exp(-3 k max(0, p - p0)))
    div(p)   = min(10, exp(2.5 * (M - 1) * p) - 1) if M > 1 else 0
    train    = base * mem + div            (times log-normal noise, sigma 0.15 / sqrt(B))
    valid    = base + over + 0.05 + div    (noise sigma 0.06 per sampled step, 0.01 at epoch ends)
    accuracy = exp(-0.55 * loss)

So small ``M`` or large ``B`` under-fit, many epochs over-fit (sooner on small data), and
multipliers above 1 diverge (those above 100 behave as 100).
"""

from __future__ import annotations

import hashlib
import math
import random
from dataclasses import dataclass

from orchestrator.data.checks import default_epochs

__all__ = [
    "Resolved",
    "StepMetrics",
    "Surface",
    "SurfaceInputs",
    "auto_batch_size",
    "auto_learning_rate_multiplier",
    "curve",
    "eval_interval",
    "resolve",
]

NOMINAL_MULTIPLIER = 0.1
DIVERGENCE_MULTIPLIER = 1.0
#: a larger multiplier gives the same (fully diverged) curve; keeps the arithmetic finite
MAX_MULTIPLIER = 100.0
MAX_LOSS = 15.0


@dataclass(frozen=True)
class Resolved:
    """Hyper-parameters after ``"auto"`` has been resolved."""

    n_epochs: int
    batch_size: int
    learning_rate_multiplier: float

    @property
    def as_dict(self) -> dict[str, int | float]:
        return {
            "n_epochs": self.n_epochs,
            "batch_size": self.batch_size,
            "learning_rate_multiplier": self.learning_rate_multiplier,
        }


@dataclass(frozen=True)
class SurfaceInputs:
    """Everything a curve depends on."""

    hp: Resolved
    n_train: int
    has_validation: bool
    seed: int
    data_key: str  # identifies the training data (and model): sets L0 and Lf

    @property
    def steps_per_epoch(self) -> int:
        return max(1, math.ceil(self.n_train / self.hp.batch_size))

    @property
    def total_steps(self) -> int:
        return self.steps_per_epoch * self.hp.n_epochs


@dataclass(frozen=True)
class StepMetrics:
    """The metrics reported at one step (``None`` where that step reports nothing)."""

    step: int
    train_loss: float
    train_mean_token_accuracy: float
    valid_loss: float | None = None
    valid_mean_token_accuracy: float | None = None
    full_valid_loss: float | None = None
    full_valid_mean_token_accuracy: float | None = None

    def as_dict(self) -> dict[str, float]:
        """Present metrics only, under their API names (without ``step``)."""
        values = {
            "train_loss": self.train_loss,
            "train_mean_token_accuracy": self.train_mean_token_accuracy,
            "valid_loss": self.valid_loss,
            "valid_mean_token_accuracy": self.valid_mean_token_accuracy,
            "full_valid_loss": self.full_valid_loss,
            "full_valid_mean_token_accuracy": self.full_valid_mean_token_accuracy,
        }
        return {k: v for k, v in values.items() if v is not None}


def auto_batch_size(n_examples: int) -> int:
    """The legacy default: about 0.2 % of the training examples, between 1 and 256."""
    return max(1, min(256, round(0.002 * n_examples)))


def auto_learning_rate_multiplier(batch_size: int) -> float:
    """The legacy default: 0.05, 0.1 or 0.2, larger for larger batches."""
    if batch_size <= 4:
        return 0.05
    if batch_size <= 16:
        return 0.1
    return 0.2


def resolve(requested: dict[str, object], n_examples: int) -> Resolved:
    """Replace ``"auto"`` (or missing) values: cookbook epochs rule, legacy batch/LR rules."""
    epochs = requested.get("n_epochs", "auto")
    batch = requested.get("batch_size", "auto")
    lr = requested.get("learning_rate_multiplier", "auto")
    n_epochs = default_epochs(n_examples) if epochs in ("auto", None) else int(str(epochs))
    batch_size = auto_batch_size(n_examples) if batch in ("auto", None) else int(str(batch))
    batch_size = max(1, min(batch_size, max(1, n_examples)))
    multiplier = (
        auto_learning_rate_multiplier(batch_size) if lr in ("auto", None) else float(str(lr))
    )
    return Resolved(max(1, n_epochs), batch_size, multiplier)


def eval_interval(total_steps: int) -> int:
    """Steps between two ``valid_*`` reports (about 50 per job)."""
    return max(1, math.ceil(total_steps / 50))


def _unit(key: str, salt: str) -> float:
    digest = hashlib.sha256(f"{salt}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def _accuracy(loss: float, rng: random.Random) -> float:
    return min(1.0, max(0.0, math.exp(-0.55 * loss) * (1 + rng.gauss(0, 0.01))))


class Surface:
    """One job's loss surface: its rate, floor and noise, from the job's inputs (the
    benchmarks evaluate it directly, as the simulator does)."""

    def __init__(self, inputs: SurfaceInputs) -> None:
        hp, n = inputs.hp, max(1, inputs.n_train)
        multiplier = min(hp.learning_rate_multiplier, MAX_MULTIPLIER)
        reference_batch = auto_batch_size(n)
        self.rate = (multiplier / NOMINAL_MULTIPLIER) * math.sqrt(reference_batch / hp.batch_size)
        self.l0 = 1.5 + 1.0 * _unit(inputs.data_key, "l0")
        self.floor = 0.15 + 0.35 * _unit(inputs.data_key, "floor")
        self.k = 0.25 * math.sqrt(100 / max(n, 10))
        self.p0 = 1.2 * (n / 100) ** 0.15
        self.excess = max(0.0, multiplier - DIVERGENCE_MULTIPLIER)
        instability = max(0.0, (multiplier - 0.5) / 0.5)
        self.sigma_train = 0.15 / math.sqrt(hp.batch_size) * (1 + 2 * instability)

    def losses(self, epochs_done: float) -> tuple[float, float]:
        p = epochs_done * self.rate
        base = self.floor + (self.l0 - self.floor) * math.exp(-p / 0.7)
        late = max(0.0, p - self.p0)
        over = min(2 * self.l0, self.k * late**1.3)
        memorised = 1 - 0.85 * (1 - math.exp(-3 * self.k * late))
        div = min(10.0, math.expm1(min(2.5 * self.excess * p, 10.0))) if self.excess else 0.0
        return base * memorised + div, base + over + 0.05 + div


def curve(inputs: SurfaceInputs) -> list[StepMetrics]:
    """Every step's metrics for a job, deterministic for ``inputs`` (including the seed)."""
    surface = Surface(inputs)
    rng = random.Random(f"{inputs.seed}|{inputs.data_key}|{inputs.hp}|{inputs.n_train}")
    per_epoch, total = inputs.steps_per_epoch, inputs.total_steps
    every = eval_interval(total)
    points: list[StepMetrics] = []
    for step in range(1, total + 1):
        train_true, valid_true = surface.losses(step / per_epoch)
        train = min(MAX_LOSS, train_true * math.exp(min(50.0, rng.gauss(0, surface.sigma_train))))
        metrics = StepMetrics(step, round(train, 6), round(_accuracy(train, rng), 6))
        if inputs.has_validation and (step % every == 0 or step == total):
            valid = min(MAX_LOSS, valid_true * math.exp(rng.gauss(0, 0.06)))
            metrics = _with(metrics, valid_loss=valid, valid_acc=_accuracy(valid, rng))
        if inputs.has_validation and step % per_epoch == 0:
            full = min(MAX_LOSS, valid_true * math.exp(rng.gauss(0, 0.01)))
            metrics = _with(metrics, full_loss=full, full_acc=_accuracy(full, rng))
        points.append(metrics)
    return points


def _with(
    m: StepMetrics,
    *,
    valid_loss: float | None = None,
    valid_acc: float | None = None,
    full_loss: float | None = None,
    full_acc: float | None = None,
) -> StepMetrics:
    def r(x: float | None, old: float | None) -> float | None:
        return round(x, 6) if x is not None else old

    return StepMetrics(
        m.step,
        m.train_loss,
        m.train_mean_token_accuracy,
        r(valid_loss, m.valid_loss),
        r(valid_acc, m.valid_mean_token_accuracy),
        r(full_loss, m.full_valid_loss),
        r(full_acc, m.full_valid_mean_token_accuracy),
    )

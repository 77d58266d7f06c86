"""Over- and under-fitting diagnosis from loss curves, per trial and per sweep.

Per trial, :func:`diagnose` reads the metric curves of one job and returns a
:class:`Diagnosis`: a label, the numbers behind it, and what to try next.

* ``diverged``: a NaN/inf loss, or training loss that ends higher than it started;
* ``overfit``: validation loss bottoms out before the end and then rises by more than
  ``overfit_rise``, or it has stopped improving while the train/valid gap grew by more than
  ``gap_growth``;
* ``underfit``: training loss still falling at the end (by more than ``still_falling`` between
  the last two segments) with validation at its lowest, or training accuracy below
  ``low_accuracy``;
* ``good``: none of these;
* ``unknown``: no validation metric and no training signal either way.

Per sweep, :func:`advise` names searched parameters whose best values sit at a range edge and
the range to try next.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from orchestrator.space import SearchSpace

__all__ = ["Advice", "Diagnosis", "Thresholds", "advise", "diagnose"]

Curve = Sequence[tuple[int, float]]  # (step, value), in step order


@dataclass(frozen=True)
class Thresholds:
    """Tunable limits of the rules (relative changes unless noted)."""

    overfit_rise: float = 0.05
    gap_growth: float = 0.5  # absolute, in nats
    still_falling: float = 0.03
    low_accuracy: float = 0.3
    diverge_rise: float = 0.10


@dataclass(frozen=True)
class Diagnosis:
    label: str  # overfit | underfit | diverged | good | unknown
    evidence: dict[str, float] = field(default_factory=dict)
    recommendation: str = ""
    best_epoch: int | None = None

    def summary(self) -> str:
        nums = ", ".join(f"{k}={_fmt(v)}" for k, v in self.evidence.items())
        return f"{self.label}: {self.recommendation}" + (f" ({nums})" if nums else "")


def _fmt(v: float) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _finite(curve: Curve) -> bool:
    return all(math.isfinite(v) for _, v in curve)


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


def _segments(curve: Curve, parts: int) -> list[float]:
    """Means of ``parts`` consecutive, equal slices of the curve's values."""
    values = [v for _, v in curve]
    n = len(values)
    if n < parts:
        return values
    size = n / parts
    return [_mean(values[round(i * size) : round((i + 1) * size)]) for i in range(parts)]


def diagnose(
    curves: Mapping[str, Curve],
    n_epochs: int | None = None,
    hyperparameters: Mapping[str, Any] | None = None,
    thresholds: Thresholds = Thresholds(),
) -> Diagnosis:
    """Label one trial from its metric curves (OpenAI metric names)."""
    hp = dict(hyperparameters or {})
    lrm = hp.get("learning_rate_multiplier")
    train = list(curves.get("train_loss", ()))
    per_epoch = list(curves.get("full_valid_loss", ()))
    valid = per_epoch or list(curves.get("valid_loss", ()))
    acc = list(curves.get("train_mean_token_accuracy", ()))

    for name in ("train_loss", "valid_loss", "full_valid_loss"):
        if not _finite(curves.get(name, ())):
            return Diagnosis(
                "diverged",
                {"non_finite": 1.0},
                "the loss became NaN/inf: lower learning_rate_multiplier"
                + (f" below {lrm:g}" if lrm else ""),
            )
    if len(train) >= 4:
        first, *_, last = _segments(train, 4)
        if last > first * (1 + thresholds.diverge_rise):
            return Diagnosis(
                "diverged",
                {"train_loss_start": first, "train_loss_end": last},
                "training loss rose: lower learning_rate_multiplier"
                + (f" below {lrm:g}" if lrm else ""),
            )

    if len(valid) >= 2:
        values = [v for _, v in valid]
        best_i = min(range(len(values)), key=values.__getitem__)
        best, final = values[best_i], values[-1]
        rise = (final - best) / best if best > 0 else 0.0
        best_epoch = best_i + 1 if per_epoch else None
        if best_i < len(values) - 1 and rise > thresholds.overfit_rise:
            evidence = {"min_valid_loss": best, "final_valid_loss": final, "rise": round(rise, 4)}
            if best_epoch is not None:
                evidence["best_epoch"] = float(best_epoch)
                advice = f"stop earlier: n_epochs={best_epoch} had the lowest validation loss"
            else:
                advice = "fewer epochs or a lower learning_rate_multiplier"
            return Diagnosis("overfit", evidence, advice, best_epoch)
        gap = _gap_growth(train, valid)
        improving = values[-2] > 0 and (values[-2] - final) / values[-2] > thresholds.still_falling
        if gap is not None and gap > thresholds.gap_growth and not improving:
            return Diagnosis(
                "overfit",
                {"gap_growth": round(gap, 4), "final_valid_loss": final},
                "the train/valid gap keeps growing: fewer epochs or a lower "
                "learning_rate_multiplier",
                best_epoch,
            )

    still = _still_falling(train, thresholds.still_falling)
    valid_at_min = not valid or min(v for _, v in valid) >= valid[-1][1]
    more = f"n_epochs > {n_epochs}" if n_epochs else "more epochs"
    if still is not None and valid_at_min:
        return Diagnosis(
            "underfit",
            {"train_loss_drop_last_segment": round(still, 4)},
            f"training loss was still falling: try {more} or a higher learning_rate_multiplier",
            len(valid) if per_epoch else None,
        )
    if acc and acc[-1][1] < thresholds.low_accuracy:
        return Diagnosis(
            "underfit",
            {"train_mean_token_accuracy": acc[-1][1]},
            f"training accuracy is low ({acc[-1][1]:.2f}): try {more} or a higher "
            "learning_rate_multiplier",
        )
    if not valid:
        return Diagnosis("unknown", {}, "no validation data: add a validation file to diagnose")
    if len(valid) < 2:
        return Diagnosis("unknown", {}, "one validation point: too short a curve to judge")
    values = [v for _, v in valid]
    best_i = min(range(len(values)), key=values.__getitem__)
    return Diagnosis(
        "good",
        {"min_valid_loss": values[best_i], "final_valid_loss": values[-1]},
        "no sign of over- or under-fitting",
        best_i + 1 if per_epoch else None,
    )


def _gap_growth(train: Curve, valid: Curve) -> float | None:
    """How much (valid - train) grew from the first to the last validation point."""
    if len(valid) < 2 or not train:
        return None

    def train_at(step: int) -> float:
        near = [v for s, v in train if s <= step][-3:] or [train[0][1]]
        return _mean(near)

    (s0, v0), (s1, v1) = valid[0], valid[-1]
    return (v1 - train_at(s1)) - (v0 - train_at(s0))


def _still_falling(train: Curve, threshold: float) -> float | None:
    if len(train) < 6:
        return None
    segs = _segments(train, 5)
    prev, last = segs[-2], segs[-1]
    if prev > 0 and (prev - last) / prev > threshold:
        return (prev - last) / prev
    return None


@dataclass(frozen=True)
class Advice:
    """Sweep-level advice: where the best trials sit and what to search next."""

    best_params: dict[str, Any]
    at_edge: dict[str, str]  # parameter -> "low" | "high"
    next_ranges: dict[str, tuple[float, float]]
    labels: dict[str, int]
    notes: tuple[str, ...]


def advise(
    space: SearchSpace,
    best_params: Mapping[str, Any],
    labels: Sequence[str],
    top_params: Sequence[Mapping[str, Any]] = (),
) -> Advice:
    """Edges of the best configuration and the ranges to try next.

    ``top_params`` (the best few trials) make the edge call robust: a parameter counts as
    at an edge when the best trial and most of the top trials sit there.
    """
    at_edge: dict[str, str] = {}
    ranges: dict[str, tuple[float, float]] = {}
    notes: list[str] = []
    for dim in space.dimensions:
        if dim.name not in best_params or dim.low is None or dim.high is None:
            continue
        edge = dim.on_edge(best_params[dim.name])
        if edge is None:
            continue
        others = [dim.on_edge(p[dim.name]) for p in top_params if dim.name in p]
        if others and sum(e == edge for e in others) * 2 < len(others):
            continue
        at_edge[dim.name] = edge
        low, high = dim.low, dim.high
        if edge == "high":
            new = (
                (low + (high - low) / 2, high * 2)
                if dim.log
                else (high - (high - low) / 2, high + (high - low))
            )
        else:
            new = (
                (low / 2, low + (high - low) / 2)
                if dim.log
                else (max(low - (high - low), 0.0), low + (high - low) / 2)
            )
        if dim.kind == "int":
            new = (
                max(1, math.floor(new[0])),
                max(math.ceil(new[1]), int(high) + 1 if edge == "high" else 1),
            )
        ranges[dim.name] = new
        notes.append(
            f"best {dim.name}={_fmt(best_params[dim.name])} sits at the {edge} end of "
            f"{_fmt(low)}–{_fmt(high)}: try {_fmt(new[0])}–{_fmt(new[1])}"
        )
    counts: dict[str, int] = {}
    for label in labels:
        counts[label] = counts.get(label, 0) + 1
    total = sum(counts.values())
    if total and counts.get("overfit", 0) * 2 > total:
        notes.append("most trials over-fit: lower n_epochs or learning_rate_multiplier ranges")
    if total and counts.get("underfit", 0) * 2 > total:
        notes.append("most trials under-fit: raise n_epochs or learning_rate_multiplier ranges")
    if total and counts.get("diverged", 0) * 2 > total:
        notes.append("most trials diverged: lower the learning_rate_multiplier range")
    return Advice(dict(best_params), at_edge, ranges, counts, tuple(notes))

"""Over- and under-fitting diagnosis from loss curves, per trial and per sweep.

Per trial, :func:`diagnose` reads the metric curves of one job and returns a
:class:`Diagnosis`: a label, the numbers behind it, and what to try next. The first rule that
matches wins (thresholds: :class:`Thresholds`; evidence and corpus: ``docs/diagnosis.md``):

* ``diverged``: a NaN/inf loss, training loss that ends higher than it started, or a training
  loss that jumps more than ``spike_rise`` above its first (untrained) value;
* stopped early (``pruned_at_epoch``): ``unknown``, "pruned at epoch N", never judged as if
  it had finished;
* ``overfit``: validation loss bottoms out before the end and then rises by more than
  ``overfit_rise``, or it has stopped improving while the train/valid gap grew by more than
  ``gap_growth``; a validation loss still at its minimum at the end (within ``at_min``) is
  never overfit;
* ``underfit``: training loss still falling at the end with validation at its lowest and
  still improving (not on a plateau, below); an accuracy that never left its first level (the
  majority-token rate); or an accuracy below ``low_accuracy``. The accuracy is the training
  token accuracy, else the validation one;
* ``unknown``: no validation metric (or one point) and no other signal;
* ``good``: none of these; "converged" when the validation loss is on a plateau: the best of
  its last ``plateau_part`` (a quarter, at least 3 points) is not ``plateau_gain`` below the
  best before them, so more epochs would not help, however fast the training loss still
  falls.

The validation curve decides between those three: still falling is under-fit, level is
converged, risen again (or level while the train/valid gap grew, above its minimum) is
over-fit.

Per sweep, :func:`advise` names searched parameters whose best values sit at a range edge and
the range to try next, and :func:`compare_trials` the trials far worse than the best one at
the same epoch (under-trained relative to it).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from orchestrator.plan.space import SearchSpace

__all__ = [
    "ACCURACY_NAMES",
    "PLATEAU_MIN_POINTS",
    "Advice",
    "Diagnosis",
    "Thresholds",
    "TrialCurve",
    "advise",
    "compare_trials",
    "diagnose",
]

Curve = Sequence[tuple[int, float]]  # (step, value), in step order

#: the fewest validation points a plateau is judged over ("the last several epochs")
PLATEAU_MIN_POINTS = 3

#: accuracy curves in the order they are judged: training's, else validation's
ACCURACY_NAMES = (
    "train_mean_token_accuracy",
    "full_valid_mean_token_accuracy",
    "valid_mean_token_accuracy",
)
_ACC_SHOWN = {
    "train_mean_token_accuracy": "training token accuracy",
    "full_valid_mean_token_accuracy": "validation token accuracy",
    "valid_mean_token_accuracy": "validation token accuracy",
    "": "accuracy",
}


@dataclass(frozen=True)
class Thresholds:
    """Tunable limits of the rules (relative changes unless noted)."""

    overfit_rise: float = 0.05
    gap_growth: float = 0.5  # absolute, in nats
    still_falling: float = 0.03
    low_accuracy: float = 0.3
    diverge_rise: float = 0.10
    #: accuracy "never left its first level": it gained less than this (absolute) from the
    #: best of the first ``early_part`` of the curve to the mean of its last fifth ...
    flat_gain: float = 0.03
    early_part: float = 0.5
    #: ... and ended below this (a base model already right this often is not "stuck")
    flat_ceiling: float = 0.5
    #: per sweep: a trial this much worse (relative) than the best at the same epoch is
    #: under-trained relative to it
    far_worse: float = 0.2
    #: the training loss (a 3-step running mean) went this much above its first value
    spike_rise: float = 0.25
    #: a final validation loss within this of its minimum is "still at its minimum"
    at_min: float = 0.01
    #: a validation plateau: the best of the last ``plateau_part`` of the validation points
    #: (at least :data:`PLATEAU_MIN_POINTS`) is less than ``plateau_gain`` (relative) below
    #: the best before them
    plateau_part: float = 0.25
    plateau_gain: float = 0.01


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


def _accuracy(curves: Mapping[str, Curve]) -> tuple[str, list[tuple[int, float]]]:
    """The accuracy curve to judge: training's, else validation's (full passes first)."""
    for name in ACCURACY_NAMES:
        curve = list(curves.get(name, ()))
        if curve:
            return name, curve
    return "", []


def _diverged(reason: str, evidence: dict[str, float], lrm: Any) -> Diagnosis:
    below = f" below {lrm:g}" if isinstance(lrm, int | float) else ""
    return Diagnosis("diverged", evidence, f"{reason}: lower learning_rate_multiplier{below}")


def diagnose(
    curves: Mapping[str, Curve],
    n_epochs: int | None = None,
    hyperparameters: Mapping[str, Any] | None = None,
    thresholds: Thresholds = Thresholds(),
    *,
    pruned_at_epoch: int | None = None,
    stop_reason: str = "pruned",
) -> Diagnosis:
    """Label one trial from its metric curves (OpenAI metric names).

    ``pruned_at_epoch``: the trial was stopped there (``stop_reason``: pruned, or a job that
    was cancelled or failed); only divergence is read from its curve, anything else is
    ``unknown`` with "pruned at epoch N".
    """
    hp = dict(hyperparameters or {})
    lrm = hp.get("learning_rate_multiplier")
    train = list(curves.get("train_loss", ()))
    per_epoch = list(curves.get("full_valid_loss", ()))
    valid = per_epoch or list(curves.get("valid_loss", ()))
    acc_name, acc = _accuracy(curves)

    for name in ("train_loss", "valid_loss", "full_valid_loss"):
        if not _finite(curves.get(name, ())):
            return _diverged("the loss became NaN/inf", {"non_finite": 1.0}, lrm)
    if len(train) >= 4:
        first, *_, last = _segments(train, 4)
        if last > first * (1 + thresholds.diverge_rise):
            return _diverged(
                "training loss rose", {"train_loss_start": first, "train_loss_end": last}, lrm
            )

    spike = _spike(train, thresholds.spike_rise)
    if spike is not None:
        step, peak = spike
        return _diverged(
            f"training loss jumped to {peak:.4g} at step {step}, {peak / train[0][1]:.1f}x its "
            "start (the steps are too large)",
            {"train_loss_start": train[0][1], "train_loss_peak": peak, "peak_step": float(step)},
            lrm,
        )

    if pruned_at_epoch is not None:
        of = f" of {n_epochs}" if n_epochs else ""
        evidence = {"pruned_at_epoch": float(pruned_at_epoch)}
        if valid:
            evidence["last_valid_loss"] = valid[-1][1]
        why = "worse than the other trials there; " if stop_reason == "pruned" else ""
        return Diagnosis(
            "unknown",
            evidence,
            f"{stop_reason} at epoch {pruned_at_epoch}{of}: {why}"
            "stopped before the end, so not diagnosed",
        )

    more = f"n_epochs > {n_epochs}" if n_epochs else "more epochs"
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
        # a validation loss still at its minimum at the end is never "use fewer epochs":
        # stopping earlier would make the model worse
        stalled = final > best * (1 + thresholds.at_min)
        if gap is not None and gap > thresholds.gap_growth and not improving and stalled:
            return Diagnosis(
                "overfit",
                {"gap_growth": round(gap, 4), "min_valid_loss": best, "final_valid_loss": final},
                "validation loss stopped improving while the train/valid gap grew: "
                + (f"n_epochs={best_epoch} or " if best_epoch is not None else "fewer epochs or ")
                + "a lower learning_rate_multiplier",
                best_epoch,
            )

    still = _still_falling(train, thresholds.still_falling)
    valid_at_min = not valid or valid[-1][1] <= min(v for _, v in valid) * (1 + thresholds.at_min)
    # a falling training loss says "more epochs" only while validation still improves: on a
    # plateau the model has converged (or begun to memorise), and more epochs are wrong
    plateau = _plateau(valid, thresholds)
    if still is not None and valid_at_min and plateau is None:
        return Diagnosis(
            "underfit",
            {"train_loss_drop_last_segment": round(still, 4)},
            f"training loss was still falling: try {more} or a higher learning_rate_multiplier",
            len(valid) if per_epoch else None,
        )
    flat = _flat_accuracy(acc, thresholds)
    if flat is not None:
        early, final = flat
        return Diagnosis(
            "underfit",
            {f"{acc_name}_early": round(early, 4), f"{acc_name}_final": round(final, 4)},
            f"{_ACC_SHOWN[acc_name]} never left its first level ({final:.2f} at the end, "
            f"{early:.2f} at best in the first half: the rate of always predicting the "
            "commonest tokens): the model learned only token frequencies; try a higher "
            f"learning_rate_multiplier or {more}",
        )
    if acc and acc[-1][1] < thresholds.low_accuracy:
        return Diagnosis(
            "underfit",
            {acc_name: acc[-1][1]},
            f"{_ACC_SHOWN[acc_name]} is low ({acc[-1][1]:.2f}): try {more} or a higher "
            "learning_rate_multiplier",
        )
    if not valid:
        return Diagnosis("unknown", {}, "no validation data: add a validation file to diagnose")
    if len(valid) < 2:
        return Diagnosis("unknown", {}, "one validation point: too short a curve to judge")
    values = [v for _, v in valid]
    best_i = min(range(len(values)), key=values.__getitem__)
    evidence = {"min_valid_loss": values[best_i], "final_valid_loss": values[-1]}
    if plateau is None:
        return Diagnosis(
            "good", evidence, "no sign of over- or under-fitting", best_i + 1 if per_epoch else None
        )
    window, before, recent = plateau
    points = "epochs" if per_epoch else "validation points"
    evidence |= {"plateau_points": float(window), "best_before_plateau": before}
    advice = (
        f"converged: the validation loss improved less than {thresholds.plateau_gain:.0%} in "
        f"the last {window} {points} ({recent:.4g} against {before:.4g} before them), so more "
        "epochs would not help"
    )
    gap = _gap_growth(train, valid[-window - 1 :])
    if still is not None and gap is not None and gap > 0:
        evidence["plateau_gap_growth"] = round(gap, 4)
        advice += (
            f"; the training loss kept falling and the train/valid gap grew by {gap:.2f} over "
            "them: the model has begun to memorise the training data"
        )
    return Diagnosis("good", evidence, advice, best_i + 1 if per_epoch else None)


def _plateau(valid: Curve, thresholds: Thresholds) -> tuple[int, float, float] | None:
    """``(points, best before, best of them)`` when the validation loss has stopped improving:
    the best of its last ``points`` values (``plateau_part`` of the curve, at least
    :data:`PLATEAU_MIN_POINTS`) is less than ``plateau_gain`` below the best before them;
    else None (still improving, or too short a curve to say)."""
    values = [v for _, v in valid]
    window = max(PLATEAU_MIN_POINTS, round(len(values) * thresholds.plateau_part))
    if len(values) <= window:
        return None
    before, recent = min(values[:-window]), min(values[-window:])
    if before > 0 and (before - recent) / before < thresholds.plateau_gain:
        return window, before, recent
    return None


def _gap_growth(train: Curve, valid: Curve) -> float | None:
    """How much (valid - train) grew from the first to the last validation point."""
    if len(valid) < 2 or not train:
        return None

    def train_at(step: int) -> float:
        near = [v for s, v in train if s <= step][-3:] or [train[0][1]]
        return _mean(near)

    (s0, v0), (s1, v1) = valid[0], valid[-1]
    return (v1 - train_at(s1)) - (v0 - train_at(s0))


def _spike(train: Curve, rise: float) -> tuple[int, float] | None:
    """``(step, value)`` where the training loss's 3-step running mean peaked, when that
    peak is more than ``rise`` above the first value (an untrained model's loss)."""
    if len(train) < 6 or train[0][1] <= 0:
        return None
    values = [v for _, v in train]
    means = [_mean(values[i : i + 3]) for i in range(len(values) - 2)]
    i = max(range(len(means)), key=means.__getitem__)
    if means[i] > values[0] * (1 + rise):
        j = max(range(i, i + 3), key=values.__getitem__)
        return train[j][0], values[j]
    return None


def _flat_accuracy(acc: Curve, thresholds: Thresholds) -> tuple[float, float] | None:
    """``(early, final)`` levels of an accuracy curve that never left its first level (the
    majority-token rate: what a model that learned only token frequencies scores), else
    None."""
    if len(acc) < 4:
        return None
    values = [v for _, v in acc]
    n = len(values)
    early = max(values[: max(1, round(n * thresholds.early_part))])
    final = _mean(values[-max(1, n // 5) :])
    gain = final - early
    if gain < thresholds.flat_gain and final < thresholds.flat_ceiling:
        return early, final
    return None


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
    #: trial number -> why it is under-trained relative to the best trial
    relative: dict[int, str] = field(default_factory=dict)


@dataclass(frozen=True)
class TrialCurve:
    """One trial of a sweep as :func:`compare_trials` sees it: the objective at each epoch
    end (Optuna's intermediate values) and its hyper-parameters."""

    number: int
    params: Mapping[str, Any]
    by_epoch: Mapping[int, float]


def compare_trials(
    trials: Sequence[TrialCurve],
    best: int,
    *,
    minimize: bool = True,
    thresholds: Thresholds = Thresholds(),
) -> dict[int, str]:
    """Trials far worse than the best one at the same epoch: under-trained relative to it.

    Each trial is compared with trial ``best`` at the last epoch both reported; one that is
    worse by more than ``thresholds.far_worse`` (relative) gets a note naming the epoch, both
    values and the best trial's settings that differ from its own.
    """
    ref = next((t for t in trials if t.number == best), None)
    if ref is None or not ref.by_epoch:
        return {}
    notes: dict[int, str] = {}
    for t in trials:
        common = sorted(set(t.by_epoch) & set(ref.by_epoch))
        if t.number == best or not common:
            continue
        epoch = common[-1]
        mine, theirs = float(t.by_epoch[epoch]), float(ref.by_epoch[epoch])
        if not (math.isfinite(mine) and math.isfinite(theirs)) or theirs == 0:
            continue
        worse = (mine - theirs) / abs(theirs) if minimize else (theirs - mine) / abs(theirs)
        if worse <= thresholds.far_worse:
            continue
        differ = [
            f"{k}={_fmt(v)}"
            for k, v in ref.params.items()
            if k != "n_epochs" and t.params.get(k) != v
        ]
        hint = f" (trial {best} had {', '.join(differ)})" if differ else ""
        notes[t.number] = (
            f"trial {t.number} is under-trained relative to trial {best}: at epoch {epoch} its "
            f"objective was {mine:.4g} against {theirs:.4g} ({worse:.0%} worse){hint}"
        )
    return notes


def advise(
    space: SearchSpace,
    best_params: Mapping[str, Any],
    labels: Sequence[str],
    top_params: Sequence[Mapping[str, Any]] = (),
    *,
    trials: Sequence[TrialCurve] = (),
    best_trial: int | None = None,
    minimize: bool = True,
    thresholds: Thresholds = Thresholds(),
) -> Advice:
    """Edges of the best configuration and the ranges to try next.

    ``top_params`` (the best few trials) make the edge call robust: a parameter counts as
    at an edge when the best trial and most of the top trials sit there. With ``trials``
    and ``best_trial``, :func:`compare_trials` adds a note for each trial far worse than the
    best at the same epoch (``Advice.relative``).
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
    relative = (
        compare_trials(trials, best_trial, minimize=minimize, thresholds=thresholds)
        if best_trial is not None
        else {}
    )
    if len(relative) <= 2:
        notes.extend(relative[n] for n in sorted(relative))
    else:  # one line for many: the per-trial notes stay in Advice.relative
        ref = next(t for t in trials if t.number == best_trial)
        shown = ", ".join(str(n) for n in sorted(relative))
        settings = ", ".join(f"{k}={_fmt(v)}" for k, v in ref.params.items() if k != "n_epochs")
        notes.append(
            f"trials {shown} are under-trained relative to trial {best_trial} (more than "
            f"{thresholds.far_worse:.0%} worse at the same epoch): its settings were "
            f"{settings or 'the same'}"
        )
    return Advice(dict(best_params), at_edge, ranges, counts, tuple(notes), relative)

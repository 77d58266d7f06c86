"""Diagnosis rules on synthetic curves (real curves: tests/engine)."""

from __future__ import annotations

import math

from orchestrator.config import SpaceSpec
from orchestrator.diagnosis import Thresholds, advise, diagnose
from orchestrator.space import resolve_space
from tests.test_space import Hosted


def _curve(values: list[float], every: int = 1) -> list[tuple[int, float]]:
    return [((i + 1) * every, v) for i, v in enumerate(values)]


def test_overfit_names_the_best_epoch() -> None:
    train = _curve([2.0 - 0.05 * i for i in range(40)])
    full = _curve([1.9, 1.7, 1.6, 1.75, 1.9], every=8)
    d = diagnose({"train_loss": train, "full_valid_loss": full}, n_epochs=5)
    assert d.label == "overfit"
    assert d.best_epoch == 3
    assert "n_epochs=3" in d.recommendation
    assert d.evidence["min_valid_loss"] == 1.6 and d.evidence["final_valid_loss"] == 1.9


def test_underfit_when_loss_still_falls_at_the_end() -> None:
    train = _curve([3.0 - 0.04 * i for i in range(30)])
    full = _curve([2.9], every=30)
    d = diagnose({"train_loss": train, "full_valid_loss": full}, n_epochs=1)
    assert d.label == "underfit"
    assert "n_epochs > 1" in d.recommendation


def test_diverged_on_nan_or_rising_loss() -> None:
    d = diagnose(
        {"train_loss": _curve([2.0, 1.5, math.nan, 1.0])},
        hyperparameters={"learning_rate_multiplier": 0.2},
    )
    assert d.label == "diverged" and "below 0.2" in d.recommendation
    rising = _curve([1.0, 1.1, 1.5, 2.0, 2.8, 3.5, 4.0, 5.0])
    assert diagnose({"train_loss": rising}).label == "diverged"


def test_good_and_unknown() -> None:
    train = _curve([2.0, 1.5, 1.2, 1.1, 1.05, 1.04, 1.04, 1.03, 1.03, 1.03])
    full = _curve([1.4, 1.2, 1.15], every=3)
    assert diagnose({"train_loss": train, "full_valid_loss": full}).label == "good"
    assert diagnose({"train_loss": train}).label == "unknown"


def test_thresholds_are_configurable() -> None:
    train = _curve([2.0 - 0.01 * i for i in range(20)])
    full = _curve([1.5, 1.4, 1.43], every=7)
    assert diagnose({"train_loss": train, "full_valid_loss": full}).label == "good"
    strict = Thresholds(overfit_rise=0.01)
    assert (
        diagnose({"train_loss": train, "full_valid_loss": full}, thresholds=strict).label
        == "overfit"
    )


def test_sweep_advice_widens_ranges_at_an_edge() -> None:
    space = resolve_space(SpaceSpec(), 1000, Hosted)
    best = {"n_epochs": 4, "batch_size": 10, "learning_rate_multiplier": 0.08}
    advice = advise(space, best, ["underfit", "underfit", "good"])
    assert advice.at_edge == {"n_epochs": "high"}
    low, high = advice.next_ranges["n_epochs"]
    assert low <= 4 < high
    assert any("raise n_epochs" in n for n in advice.notes)
    assert any("n_epochs=4 sits at the high end of 2–4" in n for n in advice.notes)


def test_gap_growth_needs_a_stalled_validation_loss() -> None:
    train = _curve([3.0, 2.5, 2.0, 1.6, 1.2, 0.9, 0.6, 0.4, 0.25, 0.15, 0.1, 0.08])
    stalled = _curve([2.0, 1.6, 1.55, 1.58], every=3)
    d = diagnose({"train_loss": train, "full_valid_loss": stalled})
    assert d.label == "overfit" and "gap" in d.recommendation
    # early epochs: train loss (averaged over the epoch) is above the end-of-epoch valid loss,
    # so the gap "grows" while both fall: that is learning, not over-fitting
    falling = _curve([2.4, 1.2, 0.93], every=4)
    high_train = _curve([4.0, 3.5, 3.1, 2.6, 1.6, 1.4, 1.3, 1.25, 1.2, 1.19, 1.18, 1.18])
    assert diagnose({"train_loss": high_train, "full_valid_loss": falling}).label != "overfit"

"""Diagnosis rules on synthetic curves (real curves: tests/engine)."""

from __future__ import annotations

import math

from orchestrator.analysis.diagnosis import Thresholds, TrialCurve, advise, compare_trials, diagnose
from orchestrator.config import SpaceSpec
from orchestrator.plan.space import resolve_space
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


def test_missing_train_accuracy_falls_back_to_validation_accuracy() -> None:
    train = _curve([2.0, 1.8, 1.7, 1.65, 1.62, 1.61, 1.6, 1.6, 1.6, 1.6])
    full = _curve([1.9, 1.8, 1.79, 1.79], every=2)
    low = _curve([0.1, 0.12, 0.2, 0.21], every=2)
    curves = {"train_loss": train, "full_valid_loss": full}
    assert diagnose(curves).label == "good"  # nothing says it learned little ...
    d = diagnose({**curves, "full_valid_mean_token_accuracy": low})  # ... but the accuracy
    assert d.label == "underfit"
    assert d.recommendation.startswith("validation token accuracy is low (0.21)")
    assert d.evidence == {"full_valid_mean_token_accuracy": 0.21}
    # training accuracy wins when there is one
    high = _curve([0.5, 0.7, 0.8, 0.85, 0.88, 0.9, 0.91, 0.92, 0.92, 0.92])
    both = {**curves, "full_valid_mean_token_accuracy": low, "train_mean_token_accuracy": high}
    assert diagnose(both).label == "good"


def test_accuracy_that_never_leaves_its_first_level_is_underfit() -> None:
    train = _curve([3.0, 2.6, 2.5, 2.45, 2.43, 2.42, 2.42, 2.41, 2.41, 2.41])
    full = _curve([2.6, 2.5, 2.49, 2.485], every=2)
    stuck = _curve([0.05, 0.29, 0.3, 0.29, 0.31, 0.3, 0.3, 0.29, 0.3, 0.3])
    d = diagnose({"train_loss": train, "full_valid_loss": full, "train_mean_token_accuracy": stuck})
    assert d.label == "underfit"
    assert "never left its first level (0.30 at the end, 0.31 at best in the first half" in (
        d.recommendation
    )
    # the same level reached late, after a climb, is learning
    climb = _curve([0.05, 0.1, 0.12, 0.15, 0.18, 0.2, 0.22, 0.25, 0.28, 0.31])
    assert (
        diagnose(
            {"train_loss": train, "full_valid_loss": full, "train_mean_token_accuracy": climb}
        ).label
        == "good"
    )
    # flat and high: a base model that already knew the task
    knew = _curve([0.9, 0.91, 0.9, 0.91, 0.9, 0.91, 0.9, 0.9, 0.91, 0.9])
    assert (
        diagnose(
            {"train_loss": train, "full_valid_loss": full, "train_mean_token_accuracy": knew}
        ).label
        == "good"
    )


def test_a_validation_loss_at_its_minimum_at_the_end_is_never_fewer_epochs() -> None:
    # the train/valid gap grows by far more than gap_growth, but validation still improves
    train = _curve([3.0, 2.5, 2.0, 1.6, 1.2, 0.9, 0.6, 0.4, 0.25, 0.15, 0.1, 0.08])
    for last in (1.549, 1.55, 1.555):  # below, at, 0.3% above the minimum
        full = _curve([2.0, 1.6, 1.55, last], every=3)
        d = diagnose({"train_loss": train, "full_valid_loss": full}, n_epochs=4)
        assert d.label != "overfit", (last, d.summary())
        assert "fewer" not in d.recommendation and "stop earlier" not in d.recommendation


def test_a_loss_spike_above_the_start_is_diverged() -> None:
    spike = _curve([5.6, 7.2, 6.8, 12.4, 7.9, 7.7, 8.6, 6.5, 5.9, 4.8, 4.3, 3.9, 3.5, 3.3])
    d = diagnose({"train_loss": spike}, hyperparameters={"learning_rate_multiplier": 300.0})
    assert d.label == "diverged"
    assert d.recommendation.startswith("training loss jumped to 12.4 at step 4, 2.2x its start")
    assert d.recommendation.endswith("lower learning_rate_multiplier below 300")
    # batch noise that stays under the start is not a spike
    noisy = _curve([5.6, 4.9, 5.4, 4.6, 5.2, 4.4, 4.9, 4.1, 4.5, 3.9, 4.2, 3.7])
    assert diagnose({"train_loss": noisy}).label != "diverged"


def test_a_pruned_trial_is_pruned_at_its_epoch_unless_it_diverged() -> None:
    train = _curve([3.0 - 0.04 * i for i in range(30)])
    full = _curve([2.9, 2.5], every=10)
    d = diagnose({"train_loss": train, "full_valid_loss": full}, n_epochs=4, pruned_at_epoch=2)
    assert d.label == "unknown"
    assert d.recommendation == (
        "pruned at epoch 2 of 4: worse than the other trials there; stopped before the end, "
        "so not diagnosed"
    )
    assert d.evidence == {"pruned_at_epoch": 2.0, "last_valid_loss": 2.5}
    nan = {"train_loss": _curve([2.0, math.nan])}
    assert diagnose(nan, pruned_at_epoch=1).label == "diverged"
    cancelled = diagnose({"train_loss": train}, pruned_at_epoch=1, stop_reason="cancelled")
    assert cancelled.recommendation.startswith("cancelled at epoch 1: stopped before the end")


def test_trials_far_worse_than_the_best_at_the_same_epoch_are_under_trained() -> None:
    trials = [
        TrialCurve(0, {"learning_rate_multiplier": 2.0, "batch_size": 4}, {1: 2.0, 2: 1.5, 3: 1.2}),
        TrialCurve(1, {"learning_rate_multiplier": 0.1, "batch_size": 4}, {1: 3.0, 2: 2.8}),
        TrialCurve(2, {"learning_rate_multiplier": 1.5, "batch_size": 4}, {1: 2.1, 2: 1.6, 3: 1.3}),
        TrialCurve(
            3, {"learning_rate_multiplier": 0.2, "batch_size": 16}, {1: 2.5, 2: 2.0, 3: 1.9, 4: 1.7}
        ),
    ]
    notes = compare_trials(trials, best=0)
    assert sorted(notes) == [1, 3]  # trial 2 is within 20% of the best at epoch 3
    assert notes[1] == (
        "trial 1 is under-trained relative to trial 0: at epoch 2 its objective was 2.8 "
        "against 1.5 (87% worse) (trial 0 had learning_rate_multiplier=2)"
    )
    assert "at epoch 3" in notes[3] and "batch_size=4" in notes[3]
    # maximised objectives: lower is worse
    acc = [TrialCurve(0, {}, {1: 0.9}), TrialCurve(1, {}, {1: 0.6}), TrialCurve(2, {}, {1: 0.85})]
    assert sorted(compare_trials(acc, best=0, minimize=False)) == [1]
    # and advise carries them as notes
    space = resolve_space(SpaceSpec(), 1000, Hosted)
    advice = advise(space, {"n_epochs": 3}, ["good"] * 4, trials=trials, best_trial=0)
    assert advice.relative == notes
    assert notes[1] in advice.notes


def test_many_under_trained_trials_make_one_note() -> None:
    best = TrialCurve(0, {"learning_rate_multiplier": 2.0, "batch_size": 4}, {1: 1.0, 2: 0.5})
    slow = [
        TrialCurve(n, {"learning_rate_multiplier": 0.1, "batch_size": 4}, {1: 3.0, 2: 2.0})
        for n in (1, 2, 3)
    ]
    space = resolve_space(SpaceSpec(), 1000, Hosted)
    advice = advise(space, {"n_epochs": 2}, ["good"] * 4, trials=[best, *slow], best_trial=0)
    assert sorted(advice.relative) == [1, 2, 3]  # each trial's own note is kept
    relative = [n for n in advice.notes if "under-trained" in n]
    assert relative == [
        "trials 1, 2, 3 are under-trained relative to trial 0 (more than 20% worse at the same "
        "epoch): its settings were learning_rate_multiplier=2, batch_size=4"
    ]


def test_a_validation_plateau_is_converged_not_more_epochs() -> None:
    # the training loss falls to the end in both; only the validation curve differs
    train = _curve([3.0 - 0.06 * i for i in range(32)])
    level = _curve([3.0, 2.5, 2.2, 2.05, 2.0, 1.99, 1.995, 1.99], every=4)
    falling = _curve([3.0, 2.5, 2.2, 2.05, 1.95, 1.85, 1.78, 1.72], every=4)
    d = diagnose({"train_loss": train, "full_valid_loss": level}, n_epochs=8)
    assert d.label == "good", d.summary()
    assert d.recommendation.startswith(
        "converged: the validation loss improved less than 1% in the last 3 epochs (1.99 "
        "against 2 before them), so more epochs would not help; the training loss kept "
        "falling and the train/valid gap grew by 0.71 over them"
    )
    assert d.evidence["plateau_points"] == 3.0 and d.best_epoch == 6
    more = diagnose({"train_loss": train, "full_valid_loss": falling}, n_epochs=8)
    assert more.label == "underfit" and "n_epochs > 8" in more.recommendation
    # the plateau's limit is a threshold: with no improvement required, nothing is a plateau
    eager = Thresholds(plateau_gain=0.0)
    d = diagnose({"train_loss": train, "full_valid_loss": level}, n_epochs=8, thresholds=eager)
    assert d.label == "underfit"
    # a quarter of a long curve, not 3 points: 3 level epochs at the end of 20 still improving
    long_valid = _curve([3.0 - 0.05 * i for i in range(17)] + [2.2, 2.2, 2.2], every=2)
    long_train = _curve([3.2 - 0.05 * i for i in range(40)])
    d = diagnose({"train_loss": long_train, "full_valid_loss": long_valid}, n_epochs=20)
    assert d.label == "underfit", d.summary()

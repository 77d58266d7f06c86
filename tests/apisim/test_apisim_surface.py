"""The response-surface model: deterministic, and shaped like real fine-tuning curves."""

from __future__ import annotations

from orchestrator.apisim.surface import (
    Resolved,
    SurfaceInputs,
    auto_batch_size,
    curve,
    eval_interval,
    resolve,
)
from orchestrator.data.checks import default_epochs


def _final_valid(n_epochs: int, batch: int, lr: float, n: int = 449, seed: int = 1) -> float:
    points = curve(SurfaceInputs(Resolved(n_epochs, batch, lr), n, True, seed, "data"))
    final = points[-1].full_valid_loss
    assert final is not None
    return final


def test_same_seed_same_curve_other_seed_other_noise() -> None:
    inputs = SurfaceInputs(Resolved(3, 2, 0.1), 100, True, 42, "data")
    assert curve(inputs) == curve(inputs)
    other = curve(SurfaceInputs(Resolved(3, 2, 0.1), 100, True, 43, "data"))
    assert other != curve(inputs)
    assert abs(other[-1].train_loss - curve(inputs)[-1].train_loss) < 0.5


def test_steps_and_which_steps_report_what() -> None:
    points = curve(SurfaceInputs(Resolved(3, 4, 0.1), 50, True, 0, "d"))
    per_epoch = 13  # ceil(50 / 4)
    assert [p.step for p in points] == list(range(1, 3 * per_epoch + 1))
    every = eval_interval(len(points))
    for p in points:
        assert (p.valid_loss is not None) == (p.step % every == 0 or p.step == len(points))
        assert (p.full_valid_loss is not None) == (p.step % per_epoch == 0)
        assert 0.0 <= p.train_mean_token_accuracy <= 1.0
    no_valid = curve(SurfaceInputs(Resolved(3, 4, 0.1), 50, False, 0, "d"))
    assert all(p.valid_loss is None and p.full_valid_loss is None for p in no_valid)


def test_loss_falls_then_overfits_with_many_epochs() -> None:
    assert _final_valid(3, 1, 0.05) < _final_valid(1, 1, 0.05)  # more training helps...
    assert _final_valid(8, 1, 0.2) > 2 * _final_valid(2, 1, 0.1)  # ...until it over-fits
    points = curve(SurfaceInputs(Resolved(8, 1, 0.2), 449, True, 1, "data"))
    full = [p.full_valid_loss for p in points if p.full_valid_loss is not None]
    assert full.index(min(full)) < len(full) - 1  # validation bottoms out before the end
    assert points[-1].train_loss < 0.2  # while the training loss keeps falling


def test_small_multipliers_and_large_batches_underfit() -> None:
    assert _final_valid(2, 1, 0.02) > _final_valid(2, 1, 0.1)
    assert _final_valid(2, 16, 0.1) > _final_valid(2, 1, 0.1)


def test_high_multipliers_diverge() -> None:
    points = curve(SurfaceInputs(Resolved(3, 1, 2.0), 449, True, 1, "data"))
    assert points[-1].train_loss > 3 * points[0].train_loss / 2
    assert _final_valid(3, 1, 2.0) > 5.0


def test_auto_resolution_follows_the_cookbook_and_legacy_rules() -> None:
    for n in (5, 30, 449, 10_000, 60_000):
        hp = resolve({}, n)
        assert hp.n_epochs == default_epochs(n)
        assert hp.batch_size == auto_batch_size(n) == max(1, min(256, round(0.002 * n)))
    assert resolve({"n_epochs": "auto", "batch_size": 8}, 100).n_epochs == 3
    assert resolve({"batch_size": 500}, 100).batch_size == 100  # at most one batch per epoch
    assert resolve({}, 449).learning_rate_multiplier == 0.05
    assert resolve({}, 20_000).learning_rate_multiplier == 0.2
    assert resolve({"learning_rate_multiplier": 0.3}, 10).learning_rate_multiplier == 0.3

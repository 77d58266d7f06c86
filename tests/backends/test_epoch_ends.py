"""``epoch_ends_of``: each epoch ends once, at the first step by which its passes are done,
whether or not the ``epoch`` metric is a whole number there, however the points are split
into updates."""

from __future__ import annotations

import math

import pytest

from orchestrator.backends.base import EpochEnd, MetricPoint, epoch_ends_of
from orchestrator.backends.remote.events import metric_points, steps_per_epoch


def _openai_points(total: int, n_epochs: int) -> list[MetricPoint]:
    """The points the openai/azure backends make of a job's metrics events, step by step."""
    per_epoch = steps_per_epoch(total, n_epochs)
    points: list[MetricPoint] = []
    for step in range(1, total + 1):
        data = {"step": step, "total_steps": total, "train_loss": 1.0 / step}
        points += metric_points(data, "", per_epoch)[2]
    return points


def _in_updates(points: list[MetricPoint], size: int) -> list[EpochEnd]:
    """The ends reported by updates of ``size`` steps each, in order (as cursors split them)."""
    ends: list[EpochEnd] = []
    last = max(p.step for p in points)
    for start in range(1, last + 1, size):
        ends += epoch_ends_of([p for p in points if start <= p.step < start + size])
    return ends


@pytest.mark.parametrize(("total", "n_epochs"), [(100, 3), (10, 3), (7, 2), (50, 7), (12, 4)])
def test_uneven_epochs_end_where_their_passes_are_done(total: int, n_epochs: int) -> None:
    points = _openai_points(total, n_epochs)
    expected = tuple(EpochEnd(k, math.ceil(k * total / n_epochs)) for k in range(1, n_epochs + 1))
    assert epoch_ends_of(points) == expected
    assert expected[-1].step == total


def test_one_hundred_steps_over_three_epochs() -> None:
    points = _openai_points(100, 3)
    values = {p.step: p.value for p in points if p.name == "epoch"}
    assert (values[33], values[34]) == (0.99, 1.02)  # never a whole number for epoch 1
    assert epoch_ends_of(points) == (EpochEnd(1, 34), EpochEnd(2, 67), EpochEnd(3, 100))


@pytest.mark.parametrize("size", [1, 2, 5, 33, 34, 100])
def test_each_end_is_reported_once_however_the_updates_split(size: int) -> None:
    points = _openai_points(100, 3)
    assert _in_updates(points, size) == [EpochEnd(1, 34), EpochEnd(2, 67), EpochEnd(3, 100)]


@pytest.mark.parametrize("size", [1, 3, 4, 12])
def test_whole_epochs_end_at_their_last_step(size: int) -> None:
    points = [MetricPoint(s, "epoch", s / 4) for s in range(1, 13)]
    assert _in_updates(points, size) == [EpochEnd(1, 4), EpochEnd(2, 8), EpochEnd(3, 12)]


def test_points_in_any_order_and_other_metrics_are_ignored() -> None:
    points = [
        MetricPoint(4, "epoch", 2.0),
        MetricPoint(2, "train_loss", 1.0),
        MetricPoint(2, "epoch", 1.0),
        MetricPoint(1, "epoch", 0.5),
        MetricPoint(3, "epoch", math.nan),
        MetricPoint(3, "train_loss", 2.0),
    ]
    assert epoch_ends_of(points) == (EpochEnd(1, 2), EpochEnd(2, 4))


def test_a_sparse_update_reports_each_epoch_it_passed() -> None:
    """Points every 5 steps of 3-step epochs: each end at the first point past it."""
    points = [MetricPoint(s, "epoch", s / 3) for s in (5, 10, 15)]
    assert epoch_ends_of(points) == (
        EpochEnd(1, 5),  # 5/3 = 1.67, and 0 five steps (the points' spacing) before
        EpochEnd(2, 10),
        EpochEnd(3, 10),
        EpochEnd(4, 15),
        EpochEnd(5, 15),
    )


def test_no_epoch_metric_no_ends() -> None:
    assert epoch_ends_of([MetricPoint(1, "train_loss", 1.0)]) == ()
    assert epoch_ends_of([]) == ()

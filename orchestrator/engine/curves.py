"""A trial's metric curves: ``name -> [(step, value), ...]`` in step order, and lookups."""

from __future__ import annotations

from collections.abc import Iterable

from orchestrator.backends.base import MetricPoint

__all__ = ["Curves", "add_points", "at", "latest"]

Curves = dict[str, list[tuple[int, float]]]


def add_points(curves: Curves, points: Iterable[MetricPoint]) -> list[MetricPoint]:
    """Add the points past each curve's last step; returns those that were new."""
    fresh = []
    for p in points:
        curve = curves.setdefault(p.name, [])
        if curve and p.step <= curve[-1][0]:
            continue
        curve.append((p.step, p.value))
        fresh.append(p)
    return fresh


def latest(curves: Curves, *names: str) -> float | None:
    """The last value of the first of ``names`` that has one."""
    for name in names:
        if curves.get(name):
            return curves[name][-1][1]
    return None


def at(curves: Curves, step: int, *names: str) -> float | None:
    """The last value at or before ``step`` of the first metric that has one."""
    for name in names:
        before = [v for s, v in curves.get(name, ()) if s <= step]
        if before:
            return before[-1]
    return None

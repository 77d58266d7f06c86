"""The Pareto front of a sweep of several objectives, and the policies that pick one trial.

Pure functions over :class:`Point` (a finished trial's objective values and whether it kept
its constraints), so they are tested against brute force; :func:`trial_points` reads them
from Optuna's trials.

- A point *dominates* another when it is at least as good on every objective and better on
  one (each objective in its own direction). The *front* is the feasible points that no
  feasible point dominates: equal points are both on it, an infeasible point never is.
- :func:`pick` chooses one trial by a policy (``ftsweep best --pick``):

  ``best``
      the best primary objective (the first); a tie goes to the point that dominates.
  ``cheapest-within PCT``
      among front points whose primary is within ``PCT`` % of the best primary, the one best
      on the *cost*, the second objective.
  ``knee``
      the front point farthest from the line between the front's two extremes (the best
      and the worst primary), each objective scaled to 0-1 over the front, lower better.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from orchestrator.core.attrs import TrialAttrs

if TYPE_CHECKING:
    import optuna

__all__ = [
    "POLICIES",
    "Pick",
    "Point",
    "dominates",
    "epoch_values",
    "feasible",
    "front_numbers",
    "pareto_front",
    "pick",
    "primary_value",
    "trial_points",
]

#: the policies of :func:`pick` (``cheapest-within`` takes a percentage)
POLICIES = ("best", "cheapest-within", "knee")


@dataclass(frozen=True)
class Point:
    """A finished trial as the front sees it."""

    number: int
    values: tuple[float, ...]
    feasible: bool = True


@dataclass(frozen=True)
class Pick:
    """The trial a policy chose, and why (one line)."""

    number: int
    policy: str
    why: str


def _signs(directions: Sequence[str]) -> tuple[float, ...]:
    return tuple(-1.0 if d == "maximize" else 1.0 for d in directions)


def dominates(a: Sequence[float], b: Sequence[float], directions: Sequence[str]) -> bool:
    """Whether values ``a`` dominate ``b``: no worse on every objective, better on one."""
    signs = _signs(directions)
    better = False
    for x, y, s in zip(a, b, signs, strict=True):
        if s * x > s * y:
            return False
        better = better or s * x < s * y
    return better


def pareto_front(points: Sequence[Point], directions: Sequence[str]) -> list[Point]:
    """The feasible points no feasible point dominates, in the order given."""
    ok = [p for p in points if p.feasible and all(math.isfinite(v) for v in p.values)]
    return [p for p in ok if not any(dominates(q.values, p.values, directions) for q in ok)]


def primary_value(trial: optuna.trial.FrozenTrial) -> float | None:
    """The trial's primary (first) objective value; None when it has none. Unlike
    ``FrozenTrial.value`` it answers in a study of several objectives too."""
    values = trial.values
    return float(values[0]) if values else None


def epoch_values(trial: optuna.trial.FrozenTrial) -> dict[int, float]:
    """The trial's primary objective at each epoch end: its intermediate values, or in a
    study of several objectives those kept in its ``ftsweep.epoch_values``."""
    if trial.intermediate_values:
        return dict(trial.intermediate_values)
    found = trial.user_attrs.get(TrialAttrs.EPOCH_VALUES)
    if not isinstance(found, dict):
        return {}
    return {int(k): float(v) for k, v in found.items()}


def feasible(trial: optuna.trial.FrozenTrial) -> bool:
    """Whether the trial kept every constraint (all its constraint values <= 0)."""
    return all(v <= 0 for v in trial.constraints.values())


def trial_points(trials: Sequence[optuna.trial.FrozenTrial]) -> list[Point]:
    """The completed trials with values, as points."""
    return [
        Point(t.number, tuple(float(v) for v in t.values), feasible(t))
        for t in trials
        if t.state.name == "COMPLETE" and t.values
    ]


def _best_primary(front: Sequence[Point], directions: Sequence[str]) -> Point:
    signs = _signs(directions)
    return min(front, key=lambda p: tuple(s * v for s, v in zip(signs, p.values, strict=True)))


def pick(
    points: Sequence[Point],
    directions: Sequence[str],
    policy: str = "best",
    pct: float = 2.0,
    names: Sequence[str] = (),
) -> Pick | None:
    """The point ``policy`` chooses among ``points`` (None when none is feasible); ``names``
    are the objectives' metric names, for the reason given."""
    names = list(names) or [f"objective {i}" for i in range(len(directions))]
    front = pareto_front(points, directions)
    if not front:
        return None
    top = _best_primary(front, directions)
    if policy == "best" or len(directions) < 2:
        why = f"the best {names[0]} ({top.values[0]:.6g})"
        if policy != "best":
            why += f"; {policy} needs several objectives"
        return Pick(top.number, "best", why)
    if policy == "cheapest-within":
        return _cheapest_within(front, directions, top, pct, names)
    if policy == "knee":
        return _knee(front, directions, top, names)
    raise ValueError(f"unknown policy {policy!r}; known: {', '.join(POLICIES)}")


def _cheapest_within(
    front: Sequence[Point], directions: Sequence[str], top: Point, pct: float, names: list[str]
) -> Pick:
    best = top.values[0]
    slack = abs(best) * pct / 100.0
    near = [p for p in front if abs(p.values[0] - best) <= slack + 1e-12]
    s = _signs(directions)
    chosen = min(near, key=lambda p: (s[1] * p.values[1], s[0] * p.values[0]))
    why = (
        f"the best {names[1]} ({chosen.values[1]:.6g}) of the {len(near)} front trial(s) within "
        f"{pct:g} % of the best {names[0]} ({best:.6g}, trial {top.number}); "
        f"its {names[0]}: {chosen.values[0]:.6g}"
    )
    return Pick(chosen.number, f"cheapest-within {pct:g}", why)


def _knee(front: Sequence[Point], directions: Sequence[str], top: Point, names: list[str]) -> Pick:
    s = _signs(directions)
    oriented = {p.number: [si * v for si, v in zip(s, p.values, strict=True)] for p in front}
    k = len(directions)
    lows = [min(v[i] for v in oriented.values()) for i in range(k)]
    spans = [max(v[i] for v in oriented.values()) - lows[i] for i in range(k)]
    norm = {
        n: [(v[i] - lows[i]) / spans[i] if spans[i] > 0 else 0.0 for i in range(k)]
        for n, v in oriented.items()
    }
    worst = max(front, key=lambda p: (s[0] * p.values[0], p.number))
    a, b = norm[top.number], norm[worst.number]
    if len(front) < 3 or a == b:
        return Pick(
            top.number,
            "knee",
            f"the front has no knee ({len(front)} point(s)): "
            f"the best {names[0]} ({top.values[0]:.6g})",
        )
    line = [bi - ai for ai, bi in zip(a, b, strict=True)]
    length = math.sqrt(sum(x * x for x in line))

    def distance(n: int) -> float:
        d = [pi - ai for pi, ai in zip(norm[n], a, strict=True)]
        t = sum(x * y for x, y in zip(d, line, strict=True)) / (length * length)
        return math.sqrt(sum((x - t * y) ** 2 for x, y in zip(d, line, strict=True)))

    chosen = max(front, key=lambda p: (distance(p.number), -p.number))
    values = ", ".join(f"{n}={v:.6g}" for n, v in zip(names, chosen.values, strict=False))
    why = (
        f"the knee of the {len(front)}-trial front: farthest ({distance(chosen.number):.3f}, "
        f"objectives scaled to 0-1) from the line between trials {top.number} and "
        f"{worst.number}; {values}"
    )
    return Pick(chosen.number, "knee", why)


def front_numbers(study: optuna.Study) -> set[int]:
    """The numbers of the trials on the Pareto front (empty with one objective)."""
    if len(study.directions) < 2:
        return set()
    points = trial_points(study.get_trials(deepcopy=False))
    return {p.number for p in pareto_front(points, [d.name.lower() for d in study.directions])}

"""Parameter importances: the share of the objective's variance each parameter explains.

A main-effect estimate in pure Python. For each parameter the completed trials are grouped by
its value (by rank into about √n equal-count bins when it takes more distinct values than
that), and the variance between the groups' mean objectives, corrected for what chance alone
gives with that many groups (ω², Hays), is its effect; the effects are normalised to sum to 1,
as Optuna's importances are. Ranks make it indifferent to a log or linear scale.

It stands in for Optuna's fANOVA evaluator in the report that ends every sweep: that one fits
a random forest and imports scikit-learn (1.6 s of CPU, more than the rest of the report), and
with the few dozen trials of a sweep its interaction terms are noise. What this estimate does
not see is a parameter that matters only through another one (a pure interaction).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

__all__ = ["param_importances"]


def param_importances(
    params: Sequence[Mapping[str, float]], values: Sequence[float]
) -> dict[str, float]:
    """The importance of each numeric parameter (``params[i]`` is trial ``i``'s, ``values[i]``
    its objective), highest first, summing to 1; empty when no parameter varies between the
    trials with a finite objective or the objective does not vary."""
    rows = [(p, float(v)) for p, v in zip(params, values, strict=True) if math.isfinite(v)]
    if len(rows) < 2:
        return {}
    names = sorted({k for p, _ in rows for k in p})
    ys = [v for _, v in rows]
    mean = sum(ys) / len(ys)
    total = sum((y - mean) ** 2 for y in ys)
    if total <= 0:
        return {}
    omega: dict[str, float] = {}
    eta: dict[str, float] = {}
    for name in names:
        pairs = [
            (float(p[name]), y) for p, y in rows if name in p and math.isfinite(float(p[name]))
        ]
        groups = _groups(pairs)
        if len(groups) < 2:
            continue  # constant here: explains nothing
        n = len(pairs)
        grand = sum(y for _, y in pairs) / n
        between = sum(len(g) * (sum(g) / len(g) - grand) ** 2 for g in groups)
        within = sum((y - sum(g) / len(g)) ** 2 for g in groups for y in g)
        df_within = n - len(groups)
        ms_within = within / df_within if df_within > 0 else 0.0
        omega[name] = max(0.0, (between - (len(groups) - 1) * ms_within) / (total + ms_within))
        eta[name] = between / total
    scores = omega if sum(omega.values()) > 0 else eta  # all within chance: the raw shares
    norm = sum(scores.values())
    if norm <= 0:
        return {}
    return dict(sorted(((k, v / norm) for k, v in scores.items()), key=lambda kv: -kv[1]))


def _groups(pairs: list[tuple[float, float]]) -> list[list[float]]:
    """The objectives grouped by the parameter's value: one group per distinct value when
    there are at most √n of them, else about √n bins of equal count by rank (equal values
    always in one bin)."""
    pairs = sorted(pairs)
    distinct = sorted({x for x, _ in pairs})
    k = max(2, round(math.sqrt(len(pairs))))
    if len(distinct) <= k:
        by_value: dict[float, list[float]] = {}
        for x, y in pairs:
            by_value.setdefault(x, []).append(y)
        return list(by_value.values())
    size = len(pairs) / k
    groups: list[list[float]] = []
    last_x: float | None = None
    for i, (x, y) in enumerate(pairs):
        if x != last_x and (not groups or len(groups) < min(k, 1 + int(i / size))):
            groups.append([])
        groups[-1].append(y)
        last_x = x
    return groups

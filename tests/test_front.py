"""The Pareto front and the policies of `best --pick`, pure: checked against brute force."""

from __future__ import annotations

import itertools
import random

import pytest

from orchestrator.core.errors import UsageError
from orchestrator.results.front import Point, dominates, pareto_front, pick
from orchestrator.results.read import parse_policy

MIN2 = ["minimize", "minimize"]


def _brute(points: list[Point], directions: list[str]) -> set[int]:
    """By definition, with no shared code: a feasible point is on the front unless another
    feasible point is no worse everywhere and strictly better somewhere."""
    sign = [1 if d == "minimize" else -1 for d in directions]
    ok = [p for p in points if p.feasible]
    out = set()
    for p in ok:
        beaten = False
        for q in ok:
            le = all(s * a <= s * b for s, a, b in zip(sign, q.values, p.values, strict=True))
            lt = any(s * a < s * b for s, a, b in zip(sign, q.values, p.values, strict=True))
            beaten = beaten or (le and lt)
        if not beaten:
            out.add(p.number)
    return out


@pytest.mark.parametrize("seed", range(40))
def test_the_front_is_the_brute_force_front_with_ties_and_infeasible_points(seed: int) -> None:
    rng = random.Random(seed)
    k = rng.choice([2, 3])
    directions = [rng.choice(["minimize", "maximize"]) for _ in range(k)]
    grid = [0.0, 0.5, 1.0, 1.5]  # few values: many ties, many equal points
    points = [
        Point(n, tuple(rng.choice(grid) for _ in range(k)), rng.random() > 0.2)
        for n in range(rng.randint(1, 25))
    ]
    front = pareto_front(points, directions)
    assert {p.number for p in front} == _brute(points, directions)
    assert all(p.feasible for p in front)


def test_equal_points_are_both_on_the_front_and_an_infeasible_one_never() -> None:
    points = [Point(0, (1.0, 2.0)), Point(1, (1.0, 2.0)), Point(2, (0.5, 0.5), feasible=False)]
    assert [p.number for p in pareto_front(points, MIN2)] == [0, 1]
    assert not dominates((1.0, 2.0), (1.0, 2.0), MIN2)
    assert dominates((1.0, 1.0), (1.0, 2.0), MIN2)
    assert dominates((2.0, 1.0), (1.0, 1.0), ["maximize", "minimize"])


# loss, cost: 0 is the best loss and dearest; 3 is within 2 % of it and cheaper; 4 is off
FRONT = [
    Point(0, (1.000, 9.0)),
    Point(1, (1.300, 2.0)),
    Point(2, (2.000, 1.0)),
    Point(3, (1.015, 6.0)),
    Point(4, (1.100, 9.5)),  # dominated by 0
    Point(5, (0.900, 0.5), feasible=False),  # would dominate all: infeasible
]


def test_best_is_the_best_primary_among_feasible_trials() -> None:
    chosen = pick(FRONT, MIN2, "best", names=["loss", "cost"])
    assert chosen is not None and chosen.number == 0 and chosen.policy == "best"
    assert "the best loss (1)" in chosen.why


def test_cheapest_within_pct_is_the_cheapest_front_trial_near_the_best_primary() -> None:
    chosen = pick(FRONT, MIN2, "cheapest-within", 2.0, names=["loss", "cost"])
    assert chosen is not None and chosen.number == 3
    assert chosen.policy == "cheapest-within 2"
    assert "2 front trial(s) within 2 % of the best loss (1, trial 0)" in chosen.why
    wide = pick(FRONT, MIN2, "cheapest-within", 40.0)
    assert wide is not None and wide.number == 1  # 1.3 is within 40 % of 1.0
    none_near = pick(FRONT, MIN2, "cheapest-within", 0.0)
    assert none_near is not None and none_near.number == 0  # only the best itself


def test_knee_is_the_front_point_farthest_from_the_line_between_the_extremes() -> None:
    chosen = pick(FRONT, MIN2, "knee", names=["loss", "cost"])
    # scaled to 0-1 over the front (0, 3, 1, 2): the line runs from trial 0 (0, 1) to
    # trial 2 (1, 0); trial 1 at (0.3, 0.125) is farthest from it
    assert chosen is not None and chosen.number == 1 and chosen.policy == "knee"
    assert "knee of the 4-trial front" in chosen.why
    # brute force over the same normalisation
    front = pareto_front(FRONT, MIN2)
    lo = [min(p.values[i] for p in front) for i in range(2)]
    hi = [max(p.values[i] for p in front) for i in range(2)]
    norm = {p.number: [(p.values[i] - lo[i]) / (hi[i] - lo[i]) for i in range(2)] for p in front}
    dist = {n: abs(x + y - 1) / 2**0.5 for n, (x, y) in norm.items()}
    assert chosen.number == max(dist, key=lambda n: dist[n])


def test_policies_on_one_objective_or_no_feasible_trial() -> None:
    one = [Point(0, (2.0,)), Point(1, (1.0,))]
    chosen = pick(one, ["minimize"], "knee")
    assert chosen is not None and chosen.number == 1 and chosen.policy == "best"
    assert pick([Point(0, (1.0, 1.0), feasible=False)], MIN2, "best") is None
    two = pick(FRONT[:2], MIN2, "knee")
    assert two is not None and two.number == 0 and "no knee" in two.why


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("best", ("best", 2.0)),
        ("knee", ("knee", 2.0)),
        ("cheapest-within 5", ("cheapest-within", 5.0)),
        ("cheapest-within=0.5", ("cheapest-within", 0.5)),
        ("cheapest-within", ("cheapest-within", 2.0)),
    ],
)
def test_pick_policies_parse(text: str, parsed: tuple[str, float]) -> None:
    assert parse_policy(text) == parsed


@pytest.mark.parametrize("text", ["cheapest", "best 3", "cheapest-within x", "cheapest-within -1"])
def test_a_bad_pick_policy_is_a_usage_error(text: str) -> None:
    with pytest.raises(UsageError, match="--pick") as info:
        parse_policy(text)
    assert info.value.exit_code == 2


def test_every_permutation_gives_the_same_front() -> None:
    for perm in itertools.permutations(FRONT):
        assert {p.number for p in pareto_front(list(perm), MIN2)} == {0, 1, 2, 3}

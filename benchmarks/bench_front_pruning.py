"""Pruning a quality x cost sweep: the engine's rule against brute force, on the simulator.

Each run is a two-objective study (``full_valid_loss``, ``cost_usd``; both minimised) of
``TRIALS`` configurations drawn by a seeded random sampler from the default space on the
simulator's surface (:mod:`surface_objective`: 100, 1,000 and 10,000 examples), so every
variant sees the same configurations in the same order. A job is charged for the epochs it
trains (the simulator bills trained tokens).

- **brute force**: every configuration trained to its end; its Pareto front is the truth;
- **median, the engine's rule**: :func:`orchestrator.engine.objectives.prune_several` at
  each epoch end (the median pruner on the primary, a trial cheaper than every trial that
  beats it kept), with the projected cost of the whole job, as the engine projects it;
- **median alone**: the pruner's verdict on the primary, with no regard for the front.

Reported: trials pruned, epochs trained (and saved against brute force), and how much of
the brute-force front the pruned sweep's front recovers (configurations on both / on the
brute-force front), pooled over sizes and seeds.

    python benchmarks/bench_front_pruning.py
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import optuna

from benchmarks.surface_objective import Problem, problems
from orchestrator.core.attrs import TrialAttrs
from orchestrator.engine.objectives import prune_several
from orchestrator.results.front import pareto_front, trial_points

SEEDS = tuple(range(10))
TRIALS = 12
DIRECTIONS = ["minimize", "minimize"]


def sweep(problem: Problem, seed: int, variant: str) -> tuple[set[tuple[float, ...]], int, int]:
    """(the front's configurations, trials pruned, epochs trained) of one run."""
    sampler = optuna.samplers.RandomSampler(seed=seed)
    study = optuna.create_study(directions=DIRECTIONS, sampler=sampler)
    pruner = optuna.pruners.MedianPruner(n_startup_trials=2)
    distributions = problem.space.distributions()
    fixed = problem.space.fixed()
    pruned = trained = 0
    for _ in range(TRIALS):
        trial = study.ask(distributions)
        params = {**fixed, **trial.params}
        n = int(params["n_epochs"])
        cost = problem.cost(params)
        steps: dict[str, float] = {}
        stopped = None
        for e in range(1, n + 1):
            value = problem.observed(params, seed, epochs=e)
            steps[str(e)] = value
            trial.set_user_attr(TrialAttrs.EPOCH_VALUES, dict(steps))
            if variant == "brute force" or e == n:
                continue
            verdict = prune_several(study, pruner, trial.number, e, value, [cost], DIRECTIONS)
            if verdict.prune if variant == "median, the engine's rule" else verdict.pruner_says:
                stopped = e
                break
        trained += stopped or n
        if stopped is not None:
            pruned += 1
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        else:
            study.tell(trial, [problem.observed(params, seed), cost])
    by_number = {t.number: t for t in study.trials}
    front = pareto_front(trial_points(study.trials), DIRECTIONS)
    configs = {tuple(sorted(by_number[p.number].params.values())) for p in front}
    return configs, pruned, trained


def main() -> None:
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    variants = ("brute force", "median, the engine's rule", "median alone")
    probs = problems()
    totals = {v: [0, 0, 0, 0] for v in variants}  # pruned, epochs, recovered, front points
    for p in probs:
        for seed in SEEDS:
            truth = set()
            for v in variants:  # brute force first: its front is the truth
                front, pruned, epochs = sweep(p, seed, v)
                truth = truth or front
                t = totals[v]
                t[0] += pruned
                t[1] += epochs
                t[2] += len(front & truth)
                t[3] += len(truth)
    runs = len(probs) * len(SEEDS)
    print(f"{runs} runs ({len(probs)} sizes x {len(SEEDS)} seeds), {TRIALS} trials each")
    base = totals["brute force"][1]
    print(f"{'variant':28} {'pruned':>7} {'epochs':>7} {'saved':>6} {'front recovered':>16}")
    for v in variants:
        pruned, epochs, hit, of = totals[v]
        saved = 1 - epochs / base
        print(f"{v:28} {pruned:>7} {epochs:>7} {saved:>6.0%} {hit:>7}/{of} ({hit / of:.0%})")


if __name__ == "__main__":
    main()

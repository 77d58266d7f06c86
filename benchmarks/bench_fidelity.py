"""Dollars saved by pruning and by epochs as a free fidelity, on the simulator's surface.

Every variant runs the default sampler (``sampler: auto``) for the same number of trials on
the same problems (:mod:`surface_objective`: the default space at 100, 1,000 and 10,000
examples) and seeds. A job is charged for the epochs it trains (the simulator bills trained
tokens); the figure is what it cost until the best configuration found so far was within
2 % of the grid optimum (a run that never got there counts as infinitely dear, so a variant
cannot look cheap by giving up early; the medians are over seeds). The baseline is the same
search with neither, in the same script.

- **pruning**: ``pruner: median`` (2 start-up trials), told the objective at every epoch end
  like the engine does; a pruned job is charged the epochs it ran;
- **epochs as trials**: ``sampler.epochs_as_trials`` — each completed job's earlier epochs
  (within the space) are told as trials of their own, free and not counted.

    python benchmarks/bench_fidelity.py            # 3 sizes x 10 seeds x 16 trials
    python benchmarks/bench_fidelity.py --quick    # 3 sizes x 10 seeds x 8 trials
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import optuna

from benchmarks.common import Figure, median
from benchmarks.surface_objective import Problem, problems
from orchestrator.core.attrs import TrialAttrs
from orchestrator.plan.samplers import default_sampler

__all__ = ["run", "sweep_cost"]

SEEDS = tuple(range(10))
WITHIN = 2.0


def sweep_cost(
    problem: Problem, seed: int, trials: int, *, prune: bool, derive: bool
) -> tuple[float, bool]:
    """Dollars spent until within :data:`WITHIN` % of the optimum, and whether it got there."""
    pruner = (
        optuna.pruners.MedianPruner(n_startup_trials=2) if prune else optuna.pruners.NopPruner()
    )
    e_lo, e_hi = (int(x) for x in problem.space.bounds("n_epochs"))
    # as ftsweep builds ``sampler: auto``: telling earlier epochs, its start trains the most
    sampler = default_sampler(seed, e_hi if derive else None)
    study = optuna.create_study(sampler=sampler, pruner=pruner)
    distributions = problem.space.distributions()
    fixed = problem.space.fixed()
    per_epoch = problem.cost({"n_epochs": 1})
    spent, best_seen, best_true = 0.0, math.inf, math.inf
    for _ in range(trials):
        trial = study.ask(distributions)
        params = {**fixed, **trial.params}
        n = int(params["n_epochs"])
        pruned_at = None
        for e in range(1, n + 1):
            trial.report(problem.observed(params, seed, epochs=e), e)
            if e < n and trial.should_prune():
                pruned_at = e
                break
        spent += per_epoch * (pruned_at or n)
        if pruned_at is not None:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            continue
        value = problem.observed(params, seed)
        study.tell(trial, value)
        seen = [(value, problem.true_value(params))]
        if derive:
            for k in range(e_lo, n):
                v = problem.observed(params, seed, epochs=k)
                study.add_trial(
                    optuna.trial.create_trial(
                        params={**trial.params, "n_epochs": k},
                        distributions=distributions,
                        value=v,
                        user_attrs={TrialAttrs.DERIVED_FROM: trial.number},
                    )
                )
                seen.append((v, problem.true_value(params, epochs=k)))
        for v, true in seen:
            if v < best_seen:
                best_seen, best_true = v, true
        if problem.regret(best_true) <= WITHIN:
            return spent, True
    return spent, False


VARIANTS = {
    "neither": (False, False),
    "pruning": (True, False),
    "epochs as trials": (False, True),
    "both": (True, True),
}


def run(quick: bool) -> list[Figure]:
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    trials = 8 if quick else 16
    probs = problems()
    dollars: dict[str, dict[int, float]] = {}
    #: each run's cost in units of one epoch over its dataset, so every size weighs the same
    epochs_billed: dict[str, list[float]] = {}
    reached: dict[str, int] = {}
    print(f"median $ to within {WITHIN:g} % ({len(SEEDS)} seeds, {trials} trials; inf: most never)")
    print(f"{'variant':18} " + " ".join(f"{p.n_train:>10}" for p in probs) + "   reached")
    for name, (prune, derive) in VARIANTS.items():
        dollars[name], epochs_billed[name], reached[name] = {}, [], 0
        for p in probs:
            runs = [sweep_cost(p, s, trials, prune=prune, derive=derive) for s in SEEDS]
            # a run that never got within 2 % has no cost of reaching it: infinite
            costs = [c if ok else math.inf for c, ok in runs]
            dollars[name][p.n_train] = median(costs)
            epochs_billed[name] += [c / p.cost({"n_epochs": 1}) for c in costs]
            reached[name] += sum(ok for _, ok in runs)
        cells = " ".join(f"{dollars[name][p.n_train]:>10.2f}" for p in probs)
        print(f"{name:18} {cells}   {reached[name]}/{len(probs) * len(SEEDS)}")
    base = median(epochs_billed["neither"])
    figures = []
    for name, target in (("epochs as trials", 0.30), ("pruning", None), ("both", None)):
        value = median(epochs_billed[name])
        saving = 1 - value / base
        per_size = ", ".join(
            f"{n}: ${dollars[name][n]:.2f} vs ${dollars['neither'][n]:.2f}" for n in dollars[name]
        )
        figures.append(
            Figure(
                f"fidelity: $ to within 2 % with {name} vs without",
                value,
                base,
                "x one epoch's $",
                f">= {target:.0%} fewer dollars" if target else "(saving reported)",
                saving >= target if target else None,
                note=f"median over {len(probs)} sizes x {len(SEEDS)} seeds, {trials} trials; "
                f"saving {saving:.0%}; reached {reached[name]} vs {reached['neither']} of "
                f"{len(probs) * len(SEEDS)}; median $ per size {per_size}",
            )
        )
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    for f in run(args.quick):
        print(
            f"{f.name}: {f.value:.2f} vs {f.baseline:.2f} {f.unit} "
            f"(ratio {f.ratio_or_computed():.2f}; "
            f"target {f.target}; met {f.met}) — {f.note}"
        )


if __name__ == "__main__":
    main()

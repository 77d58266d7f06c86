"""Which sampler finds a good configuration in the few trials a fine-tuning sweep affords.

Each sampler runs ``TRIALS`` sequential trials on the simulator's response surface
(:mod:`surface_objective`) for every dataset size and every seed; the median regret (in % of
the grid optimum) after 8, 16 and 32 trials and the median trials until within 2 % are printed.
The baseline is random search, run in the same script on the same problems and seeds.

    python benchmarks/bench_search.py            # 3 dataset sizes x 10 seeds x 32 trials
    python benchmarks/bench_search.py --quick    # 3 sizes x 10 seeds x 16 trials, fewer samplers
    python benchmarks/bench_search.py --quick --seeds 100:130   # the same on 30 other seeds

The last row is the default search as ``ftsweep run`` does it: ``sampler: auto`` with each
completed job's earlier epochs told as trials of their own (``sampler.epochs_as_trials``).
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import optuna

from benchmarks.common import Figure, median, timed
from benchmarks.surface_objective import Problem, problems
from orchestrator.attrs import TrialAttrs
from orchestrator.engine.samplers import StartThen
from orchestrator.engine.study import DEFAULT_SAMPLER_LABEL, default_sampler

__all__ = ["SAMPLERS", "run", "search"]

SEEDS = tuple(range(10))
WITHIN = 2.0  # % of the optimum
TARGET_TRIALS = 8

SamplerFactory = Callable[[int], optuna.samplers.BaseSampler]


def _qmc(seed: int) -> optuna.samplers.BaseSampler:
    return optuna.samplers.QMCSampler(scramble=True, seed=seed, warn_independent_sampling=False)


def _start_then(n: int, then: Callable[[int, int], optuna.samplers.BaseSampler]) -> SamplerFactory:
    return lambda seed: StartThen(_qmc(seed), then(seed + 1, n), n)


def _tpe(seed: int, n: int) -> optuna.samplers.BaseSampler:
    return optuna.samplers.TPESampler(n_startup_trials=n, multivariate=True, seed=seed)


def _gp(seed: int, n: int) -> optuna.samplers.BaseSampler:
    return optuna.samplers.GPSampler(n_startup_trials=n, seed=seed)


#: name -> (factory, in quick mode too)
SAMPLERS: dict[str, tuple[SamplerFactory, bool]] = {
    DEFAULT_SAMPLER_LABEL: (default_sampler, True),
    "random": (lambda s: optuna.samplers.RandomSampler(seed=s), True),
    "tpe (optuna default)": (lambda s: optuna.samplers.TPESampler(seed=s), True),
    "qmc (sobol, scrambled)": (_qmc, False),
    "qmc (sobol, unscrambled)": (
        lambda s: optuna.samplers.QMCSampler(seed=s, warn_independent_sampling=False),
        False,
    ),
    "tpe multivariate, 4 random": (lambda s: _tpe(s, 4), False),
    "gp (optuna default)": (lambda s: optuna.samplers.GPSampler(seed=s), False),
    "qmc 4 then tpe": (_start_then(4, _tpe), False),
    "qmc 4 then gp": (_start_then(4, _gp), False),
}


def search(
    problem: Problem, factory: SamplerFactory, seed: int, trials: int, derive: bool = False
) -> list[float]:
    """Regret (%) of the best observed configuration after each of ``trials`` trials.

    ``derive``: as ``sampler.epochs_as_trials`` does, each trial's earlier epochs (within the
    space) are told as trials of their own, at no cost and not counted in ``trials``."""
    study = optuna.create_study(sampler=factory(seed), direction="minimize")
    distributions = problem.space.distributions()
    fixed = problem.space.fixed()
    e_lo = int(problem.space.bounds("n_epochs")[0])
    best_seen, best_true = math.inf, math.inf
    regrets = []
    for _ in range(trials):
        trial = study.ask(distributions)
        params = {**fixed, **trial.params}
        value = problem.observed(params, seed)
        study.tell(trial, value)
        seen = [(value, problem.true_value(params))]
        if derive and "n_epochs" in distributions:
            for k in range(e_lo, int(params["n_epochs"])):
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
        regrets.append(problem.regret(best_true))
    return regrets


def _to_within(regrets: list[float]) -> float:
    return next((i + 1 for i, r in enumerate(regrets) if r <= WITHIN), math.inf)


def measure(
    name: str, sizes: tuple[int, ...], trials: int, derive: bool = False
) -> dict[int, list[list[float]]]:
    """Dataset size -> one regret list per seed, for sampler ``name``."""
    out = {}
    for p in problems(sizes):
        factory = SAMPLERS[name][0]
        if derive and name == DEFAULT_SAMPLER_LABEL:  # as ftsweep builds it then
            most = int(p.space.bounds("n_epochs")[1])
            factory = lambda seed, most=most: default_sampler(seed, most)  # noqa: E731
        out[p.n_train] = [search(p, factory, seed, trials, derive) for seed in SEEDS]
    return out


#: the default search: ``sampler: auto``, which also tells earlier epochs as trials
DEFAULT_SEARCH = f"{DEFAULT_SAMPLER_LABEL} + epochs as trials"


def run(quick: bool) -> list[Figure]:
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    sizes = (100, 1000, 10000)
    trials = 16 if quick else 32
    rows = [(n, False) for n, (_, in_quick) in SAMPLERS.items() if in_quick or not quick]
    rows += [("random", True), (DEFAULT_SAMPLER_LABEL, True)]
    checkpoints = [k for k in (8, 16, 32) if k <= trials]
    head = " ".join(f"{'@' + str(k):>7}" for k in checkpoints)
    print(f"median regret (% of the grid optimum), {len(SEEDS)} seeds; 'to 2%': median trials")
    print(f"{'search':44} {'size':>6} {head} {'to 2%':>6}")
    pooled: dict[str, list[float]] = {}
    for name, derive in rows:
        label = f"{name} + epochs as trials" if derive else name
        with timed() as t:
            results = measure(name, sizes, trials, derive)
        for size, runs in results.items():
            cells = " ".join(f"{median([r[k - 1] for r in runs]):6.2f}%" for k in checkpoints)
            reach = median([_to_within(r) for r in runs])
            pooled.setdefault(label, []).extend(r[TARGET_TRIALS - 1] for r in runs)
            print(f"{label:44} {size:>6} {cells} {reach:>6}")
        print(
            f"{'':44} {'all':>6} @8 {median(pooled[label]):.3f}%  ({t.cpu:.1f} s CPU)",
            flush=True,
        )
    baseline = median(pooled["random"])
    note = f"{len(sizes)} dataset sizes x {len(SEEDS)} seeds on the simulator's surface"

    def figure(label: str, what: str, target: str, met: bool | None) -> Figure:
        value = median(pooled[label])
        return Figure(
            f"search: median regret @8 trials, {what} vs random",
            value,
            baseline,
            "% regret",
            target,
            met,
            note=note,
        )

    value = median(pooled[DEFAULT_SEARCH])
    return [
        figure(DEFAULT_SEARCH, "the default search", "<= 0.5x random's", value <= 0.5 * baseline),
        figure(DEFAULT_SAMPLER_LABEL, "the default sampler alone", "(no epochs told)", None),
        figure("tpe (optuna default)", "optuna's tpe (the old default)", "(reference)", None),
    ]


def main() -> None:
    global SEEDS
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--seeds", help="FIRST:STOP, another set of seeds (default 0:10)")
    args = parser.parse_args()
    if args.seeds:
        first, stop = (int(x) for x in args.seeds.split(":"))
        SEEDS = tuple(range(first, stop))
    for f in run(args.quick):
        ratio = f.ratio_or_computed()
        print(
            f"{f.name}: {f.value:.3f} {f.unit} vs {f.baseline:.3f} "
            f"(ratio {ratio:.2f}; target {f.target}; met {f.met})"
        )


if __name__ == "__main__":
    main()

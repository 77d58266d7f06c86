"""Which sampler finds a good configuration in the few trials a fine-tuning sweep affords.

Each sampler runs ``TRIALS`` sequential trials on the simulator's response surface
(:mod:`surface_objective`) for every dataset size and every seed; the median regret (in % of
the grid optimum) after 8, 16 and 32 trials and the median trials until within 2 % are printed.
The baseline is random search, run in the same script on the same problems and seeds.

    python benchmarks/bench_search.py            # 3 dataset sizes x 10 seeds x 32 trials
    python benchmarks/bench_search.py --quick    # 3 sizes x 10 seeds x 16 trials, fewer samplers
    python benchmarks/bench_search.py --quick --seeds 100:130   # the same on 30 other seeds
    python benchmarks/bench_search.py --quick --variants [--gp]  # what was tried for auto

Besides regret at equal trials, regret at equal *epochs trained* (:data:`EPOCH_BUDGET`, what
random search trains in 8 trials) is printed: the default trains every job at the space's
most epochs, a third more than random's average. Pooled figures are the median over every
(dataset size, seed) run: 3 sizes x the seeds given (30 runs for seeds 0-9).

The last row is the default search as ``ftsweep run`` does it: ``sampler: auto`` with each
completed job's earlier epochs told as trials of their own (``sampler.epochs_as_trials``).
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import optuna

from benchmarks.common import Figure, median, timed
from benchmarks.surface_objective import Problem, problems
from orchestrator.core.attrs import TrialAttrs
from orchestrator.plan.samplers import DEFAULT_SAMPLER_LABEL, StartThen, default_sampler

__all__ = ["SAMPLERS", "at_epochs", "run", "search", "search_epochs"]

SEEDS = tuple(range(10))
WITHIN = 2.0  # % of the optimum
TARGET_TRIALS = 8

#: a sampler from the run's seed and, when earlier epochs are told as trials, the space's
#: most epochs (None otherwise): what ``default_sampler`` takes
SamplerFactory = Callable[[int, int | None], optuna.samplers.BaseSampler]
Then = Callable[[int, int], optuna.samplers.BaseSampler]


def _qmc(seed: int) -> optuna.samplers.BaseSampler:
    with warnings.catch_warnings():  # "experimental" since Optuna 3.0
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.QMCSampler(scramble=True, seed=seed, warn_independent_sampling=False)


def _start_then(n: int, then: Then, pin_then: bool = False) -> SamplerFactory:
    """A scrambled Sobol start of ``n`` finished trials, then ``then``; telling earlier
    epochs, the start (and with ``pin_then`` every trial) trains the most epochs."""

    def factory(seed: int, most: int | None) -> optuna.samplers.BaseSampler:
        pinned = {"n_epochs": most} if most is not None else None
        return StartThen(_qmc(seed), then(seed + 1, n), n, pinned, pin_then=pin_then)

    return factory


def _tpe(**options: Any) -> Then:
    return lambda seed, n: optuna.samplers.TPESampler(n_startup_trials=n, seed=seed, **options)


def _gp(seed: int, n: int) -> optuna.samplers.BaseSampler:
    return optuna.samplers.GPSampler(n_startup_trials=n, seed=seed)


def _cmaes(seed: int, n: int) -> optuna.samplers.BaseSampler:
    return optuna.samplers.CmaEsSampler(
        n_startup_trials=n, seed=seed, warn_independent_sampling=False
    )


class _RidgeStart(StartThen):
    """``--variants`` only (not adopted): the start's (batch size, multiplier) points are
    spread evenly along ``multiplier / sqrt(batch)`` (the surface's ridge, the square-root
    scaling rule): the first Sobol coordinate sets that product over its whole range, the
    second the place along the line of points that have it."""

    def sample_relative(
        self, study: optuna.Study, trial: Any, search_space: dict[str, Any]
    ) -> dict[str, Any]:
        sampled = super().sample_relative(study, trial, search_space)
        lr, bs = search_space.get("learning_rate_multiplier"), search_space.get("batch_size")
        if self._for(trial) is not self.start or lr is None or bs is None:
            return sampled
        if "learning_rate_multiplier" not in sampled or "batch_size" not in sampled:
            return sampled
        x0, x1, y0, y1 = (math.log(v) for v in (lr.low, lr.high, bs.low, bs.high))
        s = (math.log(sampled["learning_rate_multiplier"]) - x0) / (x1 - x0)
        t = (math.log(sampled["batch_size"]) - y0) / (y1 - y0) if y1 > y0 else 0.5
        z = (x0 - y1 / 2) + s * ((x1 - y0 / 2) - (x0 - y1 / 2))  # log(multiplier / sqrt(batch))
        lo, hi = max(x0, z + y0 / 2), min(x1, z + y1 / 2)
        x = lo + t * (hi - lo)
        b = min(bs.high, max(bs.low, round(math.exp(2 * (x - z)))))
        x = min(x1, max(x0, z + math.log(b) / 2))
        return {**sampled, "learning_rate_multiplier": math.exp(x), "batch_size": b}


def _ridge_then(n: int) -> SamplerFactory:
    def factory(seed: int, most: int | None) -> optuna.samplers.BaseSampler:
        pinned = {"n_epochs": most} if most is not None else None
        return _RidgeStart(_qmc(seed), _tpe()(seed + 1, n), n, pinned)

    return factory


def _plain(make: Callable[[int], optuna.samplers.BaseSampler]) -> SamplerFactory:
    return lambda seed, most: make(seed)


#: name -> (factory, in quick mode too); each is measured alone and, in its own rows, with
#: earlier epochs told as trials (``derive``: :data:`DERIVED`)
SAMPLERS: dict[str, tuple[SamplerFactory, bool]] = {
    DEFAULT_SAMPLER_LABEL: (default_sampler, True),
    "random": (_plain(lambda s: optuna.samplers.RandomSampler(seed=s)), True),
    "tpe (optuna default)": (_plain(lambda s: optuna.samplers.TPESampler(seed=s)), True),
    "cmaes (optuna default)": (
        _plain(lambda s: optuna.samplers.CmaEsSampler(seed=s, warn_independent_sampling=False)),
        True,
    ),
    "qmc (sobol, scrambled)": (_plain(_qmc), False),
    "qmc (sobol, unscrambled)": (
        _plain(lambda s: optuna.samplers.QMCSampler(seed=s, warn_independent_sampling=False)),
        False,
    ),
    "tpe, 4 random": (_plain(lambda s: _tpe()(s, 4)), False),
    "gp (optuna default)": (_plain(lambda s: optuna.samplers.GPSampler(seed=s)), False),
    "qmc 4 then tpe": (_start_then(4, _tpe()), False),
    "qmc 4 then gp": (_start_then(4, _gp), False),
    "qmc 10 then cmaes": (_start_then(10, _cmaes), False),
}
#: the rows with earlier epochs told as trials, in quick mode too
DERIVED: tuple[str, ...] = ("random", "cmaes (optuna default)", DEFAULT_SAMPLER_LABEL)
#: Optuna's CmaEsSampler needs the ``cmaes`` package (the ``dev`` extra); without it the
#: CMA-ES rows are left out
HAS_CMAES = importlib.util.find_spec("cmaes") is not None
if not HAS_CMAES:
    SAMPLERS = {k: v for k, v in SAMPLERS.items() if "cmaes" not in k}
    DERIVED = tuple(k for k in DERIVED if "cmaes" not in k)

#: ``--variants``: what was measured while choosing the default, all with earlier epochs told
#: as trials (the start, and with "every job" every trial, at the most epochs); "qmc N"
#: counts finished trials, derived ones included (each job of 2-4 epochs finishes 3)
VARIANTS: dict[str, SamplerFactory] = {
    "random": _plain(lambda s: optuna.samplers.RandomSampler(seed=s)),
    "qmc 10 then tpe (the previous auto)": _start_then(10, _tpe()),
    "qmc 4 then tpe": _start_then(4, _tpe()),
    "qmc 8 then tpe": _start_then(8, _tpe()),
    "qmc 15 then tpe": _start_then(15, _tpe()),
    "qmc 10 then tpe univariate": _start_then(10, _tpe(multivariate=False)),
    "qmc 10 then tpe group": _start_then(10, _tpe(multivariate=True, group=True)),
    "qmc 10 then tpe n_ei_candidates=8": _start_then(10, _tpe(n_ei_candidates=8)),
    "qmc 10 then tpe n_ei_candidates=100": _start_then(10, _tpe(n_ei_candidates=100)),
    "qmc 10 then tpe consider_endpoints": _start_then(10, _tpe(consider_endpoints=True)),
    "qmc 10 along the ridge then tpe": _ridge_then(10),
    "qmc 8 along the ridge then tpe": _ridge_then(8),
    "qmc 10 then cmaes": _start_then(10, _cmaes),
    "cmaes": _plain(
        lambda s: optuna.samplers.CmaEsSampler(seed=s, warn_independent_sampling=False)
    ),
    "qmc 10 then tpe, every job most epochs": _start_then(10, _tpe(), pin_then=True),
    "qmc 8 then tpe, every job most epochs": _start_then(8, _tpe(), pin_then=True),
    "qmc 6 then tpe, every job most epochs": _start_then(6, _tpe(), pin_then=True),
    "qmc 15 then tpe, every job most epochs": _start_then(15, _tpe(), pin_then=True),
}
if not HAS_CMAES:
    VARIANTS = {k: v for k, v in VARIANTS.items() if "cmaes" not in k}
#: ``--variants --gp`` adds these: Optuna's GP needs torch (the ``local`` extra) and minutes
#: of CPU per row
GP_VARIANTS: dict[str, SamplerFactory] = {
    "qmc 8 then gp, every job most epochs": _start_then(8, _gp, pin_then=True),
}


def search(
    problem: Problem, factory: SamplerFactory, seed: int, trials: int, derive: bool = False
) -> list[float]:
    """Regret (%) of the best observed configuration after each of ``trials`` trials
    (:func:`search_epochs` without the epochs)."""
    return search_epochs(problem, factory, seed, trials, derive)[0]


def search_epochs(
    problem: Problem, factory: SamplerFactory, seed: int, trials: int, derive: bool = False
) -> tuple[list[float], list[int]]:
    """Regret (%) of the best observed configuration after each of ``trials`` trials, and
    the epochs trained in all after each (what a sweep pays for).

    ``derive``: as ``sampler.epochs_as_trials`` does, each trial's earlier epochs (within the
    space) are told as trials of their own, at no cost and not counted in ``trials``; the
    sampler is then built with the space's most epochs, as ``ftsweep`` builds ``auto``."""
    distributions = problem.space.distributions()
    fixed = problem.space.fixed()
    e_lo, e_hi = (int(x) for x in problem.space.bounds("n_epochs"))
    derive = derive and "n_epochs" in distributions
    study = optuna.create_study(
        sampler=factory(seed, e_hi if derive else None), direction="minimize"
    )
    best_seen, best_true = math.inf, math.inf
    regrets: list[float] = []
    epochs: list[int] = []
    for _ in range(trials):
        trial = study.ask(distributions)
        params = {**fixed, **trial.params}
        epochs.append((epochs[-1] if epochs else 0) + int(params["n_epochs"]))
        value = problem.observed(params, seed)
        study.tell(trial, value)
        seen = [(value, problem.true_value(params))]
        if derive:
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
    return regrets, epochs


def at_epochs(regrets: list[float], epochs: list[int], budget: int) -> float:
    """The regret once ``budget`` epochs are trained: after the last trial that fits in it."""
    fits = [r for r, e in zip(regrets, epochs, strict=True) if e <= budget]
    return fits[-1] if fits else math.inf


def _to_within(regrets: list[float]) -> float:
    return next((i + 1 for i, r in enumerate(regrets) if r <= WITHIN), math.inf)


def measure(
    factory: SamplerFactory, sizes: tuple[int, ...], trials: int, derive: bool = False
) -> dict[int, list[tuple[list[float], list[int]]]]:
    """Dataset size -> one (regrets, epochs trained) pair per seed."""
    return {
        p.n_train: [search_epochs(p, factory, seed, trials, derive) for seed in SEEDS]
        for p in problems(sizes)
    }


#: equal epochs trained: what random search trains in 8 trials on average (the space's
#: 2-4 epochs: 3 a job); the default trains every job at the most (4), so a third more
EPOCH_BUDGET = TARGET_TRIALS * 3


#: the default search: ``sampler: auto``, which also tells earlier epochs as trials
DEFAULT_SEARCH = f"{DEFAULT_SAMPLER_LABEL} + epochs as trials"
SIZES = (100, 1000, 10000)


def _table(rows: list[tuple[str, SamplerFactory, bool]], trials: int) -> dict[str, list[float]]:
    """Print each row's medians per size; label -> the regrets @8 trials of all its runs,
    and label + " @epochs" -> the regrets at :data:`EPOCH_BUDGET` epochs trained."""
    checkpoints = [k for k in (8, 16, 32) if k <= trials]
    head = " ".join(f"{'@' + str(k):>7}" for k in checkpoints)
    print(
        f"median regret (% of the grid optimum) over seeds {SEEDS[0]}-{SEEDS[-1]} "
        f"({len(SEEDS)}), each size apart; @N: after N trials; @{EPOCH_BUDGET}ep: once "
        f"{EPOCH_BUDGET} epochs are trained; 'to 2%': median trials"
    )
    print(f"{'search':50} {'size':>6} {head} {'@' + str(EPOCH_BUDGET) + 'ep':>7} {'to 2%':>6}")
    pooled: dict[str, list[float]] = {}
    for label, factory, derive in rows:
        with timed() as t:
            results = measure(factory, SIZES, trials, derive)
        per_size_16 = []
        by_epochs = pooled.setdefault(f"{label} @epochs", [])
        for size, runs in results.items():
            cells = " ".join(f"{median([r[k - 1] for r, _ in runs]):6.2f}%" for k in checkpoints)
            at = [at_epochs(r, e, EPOCH_BUDGET) for r, e in runs]
            by_epochs.extend(at)
            reach = median([_to_within(r) for r, _ in runs])
            pooled.setdefault(label, []).extend(r[TARGET_TRIALS - 1] for r, _ in runs)
            per_size_16.append(median([r[min(16, trials) - 1] for r, _ in runs]))
            print(f"{label:50} {size:>6} {cells} {median(at):6.2f}% {reach:>6}")
        ratio = median(pooled[label]) / median(pooled["random"]) if "random" in pooled else 1.0
        ep = median(by_epochs)
        ep_ratio = ep / median(pooled["random @epochs"]) if "random" in pooled else 1.0
        print(
            f"{'':50} {'all':>6} pooled over {len(SIZES)} sizes x {len(SEEDS)} seeds "
            f"({len(by_epochs)} runs): median @8 trials {median(pooled[label]):.3f}% "
            f"({ratio:.2f}x random), @{EPOCH_BUDGET} epochs {ep:.3f}% ({ep_ratio:.2f}x random), "
            f"@{min(16, trials)} median of sizes {median(per_size_16):.2f}%  "
            f"({t.cpu:.1f} s CPU)",
            flush=True,
        )
    return pooled


def variants(trials: int = 16, gp: bool = False) -> None:
    """``--variants``: the searches measured while choosing the default (all with earlier
    epochs told as trials), against plain random search."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    plain_random = VARIANTS["random"]
    rows = [("random", plain_random, False)]
    chosen = {**VARIANTS, **(GP_VARIANTS if gp else {})}
    if gp and importlib.util.find_spec("torch") is None:
        raise SystemExit("--gp: Optuna's GPSampler needs torch (pip install 'ftsweep[local]')")
    rows += [(f"{name} + epochs", f, True) for name, f in chosen.items()]
    rows += [(f"{DEFAULT_SAMPLER_LABEL} + epochs", default_sampler, True)]
    _table(rows, trials)


def run(quick: bool) -> list[Figure]:
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    trials = 16 if quick else 32
    rows = [(n, f, False) for n, (f, in_quick) in SAMPLERS.items() if in_quick or not quick]
    rows += [(f"{n} + epochs as trials", SAMPLERS[n][0], True) for n in DERIVED]
    # random first: the others' ratios are to it
    rows.sort(key=lambda row: row[0] != "random")
    pooled = _table(rows, trials)
    baseline = median(pooled["random"])
    note = (
        f"median of {len(SIZES)} dataset sizes x seeds {SEEDS[0]}-{SEEDS[-1]} pooled "
        f"({len(SIZES) * len(SEEDS)} runs), the simulator's own curves"
    )

    def figure(
        label: str, what: str, target: str, met: bool | None, at: str = "@8 trials"
    ) -> Figure:
        suffix = " @epochs" if at != "@8 trials" else ""
        return Figure(
            f"search: median regret {at}, {what} vs random",
            median(pooled[label + suffix]),
            median(pooled["random" + suffix]),
            "% regret",
            target,
            met,
            note=note,
        )

    value = median(pooled[DEFAULT_SEARCH])
    same = median(pooled[DEFAULT_SEARCH + " @epochs"])
    figures = [
        figure(DEFAULT_SEARCH, "the default search", "<= 0.5x random's", value <= 0.5 * baseline),
        figure(
            DEFAULT_SEARCH,
            "the default search",
            "<= 0.5x random's",
            same <= 0.5 * median(pooled["random @epochs"]),
            at=f"@{EPOCH_BUDGET} epochs trained",
        ),
        figure(DEFAULT_SAMPLER_LABEL, "the default sampler alone", "(no epochs told)", None),
        figure("tpe (optuna default)", "optuna's tpe (the old default)", "(reference)", None),
    ]
    cmaes = "cmaes (optuna default) + epochs as trials"
    if cmaes in pooled:
        figures.append(figure(cmaes, "cma-es + epochs as trials", "(reference)", None))
    return figures


def main() -> None:
    global SEEDS
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--seeds", help="FIRST:STOP, another set of seeds (default 0:10)")
    parser.add_argument(
        "--variants",
        action="store_true",
        help="the searches measured while choosing the default, all with epochs as trials",
    )
    parser.add_argument("--gp", action="store_true", help="with --variants: the GP rows too")
    args = parser.parse_args()
    if args.seeds:
        first, stop = (int(x) for x in args.seeds.split(":"))
        SEEDS = tuple(range(first, stop))
    if args.variants:
        variants(16 if args.quick else 32, args.gp)
        return
    for f in run(args.quick):
        ratio = f.ratio_or_computed()
        print(
            f"{f.name}: {f.value:.3f} {f.unit} vs {f.baseline:.3f} "
            f"(ratio {ratio:.2f}; target {f.target}; met {f.met})"
        )


if __name__ == "__main__":
    main()

"""The default search against random on the local ``tiny`` model: real training, few seeds.

``bench_search.py`` measures the searches on the simulator's surface; this measures the
default search (``sampler: auto`` with each completed job's earlier epochs told as trials of
their own, exactly as ``ftsweep run`` builds it for the local backend) against Optuna's
random search on real training: the built-in ``tiny`` model (148k parameters) fine-tuned
in-process (``orchestrator.backends.local.trainer.run_training``, one CPU thread) on the
seeded ``reverse`` toy task, 64 training and 16 validation examples, in the default space
resolved for ``local`` at 64 examples (``n_epochs`` 2-4, ``batch_size`` 1-3,
``learning_rate_multiplier`` 0.02-0.2, ``prompt_loss_weight`` 0.01-0.1).

The objective is what a sweep optimises by default: ``full_valid_loss`` at the job's last
epoch end (a derived trial: at its epoch's end). Training is deterministic on CPU, so each
value is what the sweep would see; there is no noise-free value and no grid optimum (a grid
would take hours here). Regret is therefore measured against **the best value of every job
this run trained** (both searches, every seed, derived epochs included), in % of it: it
says which search got closer to the best anyone found, not how far either is from the true
optimum. Identical requests are trained once (a cache keyed on the configuration).

Each search is also compared **at equal epochs trained**: per seed, both are cut at the
fewer epochs the two trained in their trials (the default trains every job at the space's
most epochs, random 3 on average), and the regret there is reported beside the one at equal
trials.

    python benchmarks/bench_search_local.py                  # 10 seeds x 8 trials (~3 min CPU)
    python benchmarks/bench_search_local.py --seeds 10:20    # 10 other seeds

``run_all.py --quick`` skips it (a row saying so: it takes minutes of CPU); ``run_all.py``
without ``--quick`` runs it.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import optuna

from benchmarks.common import Figure, cpu_seconds, median, timed
from orchestrator.backends.registry import load
from orchestrator.config import SpaceSpec
from orchestrator.core.attrs import TrialAttrs
from orchestrator.plan.samplers import default_sampler
from orchestrator.plan.space import SearchSpace, resolve_space

__all__ = ["TinyProblem", "run", "search"]

SEEDS = tuple(range(10))
TRIALS = 8
N_TRAIN, N_VALID = 64, 16
#: the sweep's default objective
METRIC = "full_valid_loss"


class TinyProblem:
    """The reverse task on ``tiny``: one training job per distinct request, cached."""

    def __init__(self, work: Path) -> None:
        from orchestrator.backends.local.tasks import write_task

        self.train, self.valid = write_task(
            "reverse", work / "data", n_train=N_TRAIN, n_valid=N_VALID, seed=0
        )
        self.space: SearchSpace = resolve_space(SpaceSpec(), N_TRAIN, load("local"), "bench")
        self._cache: dict[tuple[Any, ...], dict[int, float]] = {}
        self.jobs = 0

    def curve(self, params: dict[str, Any]) -> dict[int, float]:
        """Epoch -> the objective at that epoch's end, for a job trained with ``params``."""
        from orchestrator.backends.base import Hyperparameters
        from orchestrator.backends.local.options import LocalOptions
        from orchestrator.backends.local.trainer import TrainingConfig, run_training

        hp = Hyperparameters(
            n_epochs=int(params["n_epochs"]),
            batch_size=int(params["batch_size"]),
            learning_rate_multiplier=float(params["learning_rate_multiplier"]),
            prompt_loss_weight=float(params["prompt_loss_weight"]),
        )
        key = (hp.n_epochs, hp.batch_size, hp.learning_rate_multiplier, hp.prompt_loss_weight)
        if key in self._cache:
            return self._cache[key]
        options = LocalOptions.parse(
            {"torch_threads": 1, "save_model": False, "valid_every": 10**6}
        )
        points: dict[int, float] = {}

        class Sink:
            def emit(self, step: int, values: Any) -> None:
                if METRIC in values:
                    points[round(values["epoch"])] = float(values[METRIC])

        run_training(TrainingConfig("tiny", self.train, hp, self.valid, 0, options), Sink())
        self.jobs += 1
        self._cache[key] = points
        return points


def search(
    problem: TinyProblem, sampler: optuna.samplers.BaseSampler, trials: int, derive: bool
) -> tuple[list[float], list[int]]:
    """The best objective seen after each trial (derived epochs included), and the epochs
    trained in all after each."""
    study = optuna.create_study(sampler=sampler, direction="minimize")
    distributions = problem.space.distributions()
    fixed = problem.space.fixed()
    e_lo = int(problem.space.bounds("n_epochs")[0])
    best: list[float] = []
    epochs: list[int] = []
    for _ in range(trials):
        trial = study.ask(distributions)
        params = {**fixed, **trial.params}
        epochs.append((epochs[-1] if epochs else 0) + int(params["n_epochs"]))
        curve = problem.curve(params)
        value = curve[int(params["n_epochs"])]
        study.tell(trial, value)
        seen = [value]
        if derive:
            for k in range(e_lo, int(params["n_epochs"])):
                if k not in curve:
                    continue
                study.add_trial(
                    optuna.trial.create_trial(
                        params={**trial.params, "n_epochs": k},
                        distributions=distributions,
                        value=curve[k],
                        user_attrs={TrialAttrs.DERIVED_FROM: trial.number},
                    )
                )
                seen.append(curve[k])
        best.append(min([*seen, *best[-1:]]))
    return best, epochs


def _within(run: tuple[list[float], list[int]], budget: int) -> float:
    """The best seen once ``budget`` epochs are trained (after the last trial within it)."""
    fits = [b for b, e in zip(*run, strict=True) if e <= budget]
    return fits[-1] if fits else math.inf


def run(quick: bool = False, seeds: tuple[int, ...] | None = None) -> list[Figure]:
    if quick:  # run_all.py --quick stays within minutes: this one is run by hand
        return [
            Figure(
                "search on local tiny: not run in --quick",
                math.nan,
                None,
                "",
                "(python benchmarks/bench_search_local.py)",
                None,
                note="minutes of CPU: see docs/search.md",
            )
        ]
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore")
    seeds = SEEDS if seeds is None else seeds
    results: dict[str, list[tuple[list[float], list[int]]]] = {"random": [], "default": []}
    cpu0 = cpu_seconds()
    with tempfile.TemporaryDirectory() as tmp, timed() as t:
        problem = TinyProblem(Path(tmp))
        most = int(problem.space.bounds("n_epochs")[1])
        for seed in seeds:
            rnd = search(problem, optuna.samplers.RandomSampler(seed=seed), TRIALS, False)
            auto = search(problem, default_sampler(seed, most), TRIALS, True)
            results["random"].append(rnd)
            results["default"].append(auto)
            cpu = cpu_seconds() - cpu0
            print(
                f"seed {seed}: best after {TRIALS} trials: random {rnd[0][-1]:.4f} "
                f"({rnd[1][-1]} epochs), default {auto[0][-1]:.4f} ({auto[1][-1]} epochs) "
                f"({problem.jobs} jobs so far, {cpu:.0f} s CPU)",
                flush=True,
            )
    reference = min(v for runs in results.values() for r, _ in runs for v in r)
    reference = min(reference, *(min(c.values()) for c in problem._cache.values() if c))

    def regret(value: float) -> float:
        return 100 * (value - reference) / reference

    med = {k: median([regret(r[-1]) for r, _ in runs]) for k, runs in results.items()}
    # equal epochs trained, seed by seed: both searches cut at the fewer epochs of the two
    # after TRIALS trials (the default trains every job at the most, random 3 on average)
    budgets = [
        min(a[1][-1], b[1][-1]) for a, b in zip(results["random"], results["default"], strict=True)
    ]
    same = {
        k: [regret(_within(r, n)) for r, n in zip(runs, budgets, strict=True)]
        for k, runs in results.items()
    }
    med_same = {k: median(v) for k, v in same.items()}
    print(f"reference (best of the {problem.jobs} jobs trained): {METRIC} {reference:.4f}")
    for k, runs in results.items():
        cells = ", ".join(f"{regret(r[-1]):.1f}" for r, _ in runs)
        print(f"{k:8} regret @{TRIALS} trials (%): median {med[k]:.2f}  per seed: {cells}")
        cells = ", ".join(f"{v:.1f}" for v in same[k])
        print(f"{k:8} regret at equal epochs (%): median {med_same[k]:.2f}  per seed: {cells}")
    ratio = med["default"] / med["random"] if med["random"] else math.nan
    ratio_same = med_same["default"] / med_same["random"] if med_same["random"] else math.nan
    print(
        f"ratio @{TRIALS} trials {ratio:.2f}, at equal epochs {ratio_same:.2f} "
        f"({len(seeds)} seeds, {problem.jobs} jobs, {t.cpu:.0f} s CPU)"
    )
    return [
        Figure(
            f"search on local tiny: median regret @{TRIALS} trials, the default vs random",
            med["default"],
            med["random"],
            "% regret",
            "<= 0.5x random's",
            med["default"] <= 0.5 * med["random"],
            note=(
                f"{len(seeds)} seeds; regret vs the best of all {problem.jobs} jobs trained "
                f"({METRIC} {reference:.4f}), not a grid optimum"
            ),
        ),
        Figure(
            "search on local tiny: median regret at equal epochs trained, the default vs random",
            med_same["default"],
            med_same["random"],
            "% regret",
            "<= 0.5x random's",
            med_same["default"] <= 0.5 * med_same["random"],
            note=(
                f"{len(seeds)} seeds; per seed both cut at the fewer epochs the two trained "
                f"in {TRIALS} trials (median {median([float(b) for b in budgets]):.0f})"
            ),
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", help="FIRST:STOP (default 0:10)")
    args = parser.parse_args()
    seeds = None
    if args.seeds:
        first, stop = (int(x) for x in args.seeds.split(":"))
        seeds = tuple(range(first, stop))
    for f in run(seeds=seeds):
        print(
            f"{f.name}: {f.value:.2f} {f.unit} vs {f.baseline:.2f} (target {f.target}; met {f.met})"
        )


if __name__ == "__main__":
    main()

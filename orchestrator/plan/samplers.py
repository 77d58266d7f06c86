"""The sweep's sampler and pruner, built from the sweep file and the resolved space.

:func:`make_sampler` and :func:`make_pruner` are called at plan time too (``space``,
``estimate`` and ``run`` alike), so a sampler that needs a missing package or pruner options
Optuna refuses are a usage error (exit 2) before any store exists.

The default search (``sampler: auto``) is a space-filling start, then a model-based sampler.

Optuna's TPE and GP samplers draw their first ten trials at random, so at the 6-16 trials a
fine-tuning sweep affords they are mostly random search. :class:`StartThen` draws those
start-up trials from a scrambled Sobol sequence (:class:`optuna.samplers.QMCSampler`), which
covers the space more evenly, and hands over to the model-based sampler once ``n_start``
trials have finished (earlier epochs told as trials of their own count, as they do for TPE).
``pinned`` values (the most epochs, when earlier epochs are told as trials) hold for the
start's trials, and with ``pin_then`` for the model's too.
The measurements behind the choice are in ``docs/search.md``.
"""

from __future__ import annotations

import importlib
import importlib.util
import math
import secrets
import warnings
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import optuna
from optuna.samplers import BaseSampler

from orchestrator.core.errors import SpecError
from orchestrator.plan.space import SearchSpace, pinned_epochs
from orchestrator.stores.optuna_internals import trial_id

if TYPE_CHECKING:
    from optuna.distributions import BaseDistribution
    from optuna.trial import FrozenTrial, TrialState

    from orchestrator.config import SweepSpec

__all__ = [
    "DEFAULT_SAMPLER_LABEL",
    "DEFAULT_START_TRIALS",
    "DEFAULT_START_TRIALS_DERIVED",
    "StartThen",
    "check_sampler_package",
    "default_sampler",
    "make_pruner",
    "make_sampler",
    "started_trials",
]


def started_trials(study: optuna.Study) -> int:
    """Finished trials (complete or pruned), derived ones included: what Optuna's TPE counts
    toward its own ``n_startup_trials``."""
    states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    return len(study.get_trials(deepcopy=False, states=states))


class StartThen(BaseSampler):
    """``start`` for the first ``n_start`` finished trials of the study, then ``then``.

    Which of the two samples a trial is decided once, when it is asked (``before_trial``),
    and kept for every parameter of that trial.
    """

    def __init__(
        self,
        start: BaseSampler,
        then: BaseSampler,
        n_start: int,
        pinned: Mapping[str, Any] | None = None,
        *,
        pin_then: bool = False,
    ) -> None:
        self.start, self.then, self.n_start = start, then, n_start
        #: values the start's trials take whatever ``start`` draws (the most epochs, when
        #: every earlier epoch of a job is told as a trial of its own)
        self.pinned = dict(pinned or {})
        #: whether ``then``'s trials take the pinned values too (``then`` still models them
        #: from every trial, derived ones included: it proposes, say, 2 epochs, and the job
        #: trains 4, measuring that proposal on the way)
        self.pin_then = pin_then
        self._chosen: dict[int, BaseSampler] = {}

    def _pins(self, chosen: BaseSampler) -> Mapping[str, Any]:
        return self.pinned if chosen is self.start or self.pin_then else {}

    def _for(self, trial: FrozenTrial) -> BaseSampler:
        return self._chosen.get(trial_id(trial), self.then)

    def reseed_rng(self) -> None:
        self.start.reseed_rng()
        self.then.reseed_rng()

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        chosen = self.start if started_trials(study) < self.n_start else self.then
        self._chosen[trial_id(trial)] = chosen
        chosen.before_trial(study, trial)

    def infer_relative_search_space(
        self, study: optuna.Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        return self._for(trial).infer_relative_search_space(study, trial)

    def sample_relative(
        self,
        study: optuna.Study,
        trial: FrozenTrial,
        search_space: dict[str, BaseDistribution],
    ) -> dict[str, Any]:
        chosen = self._for(trial)
        sampled = chosen.sample_relative(study, trial, search_space)
        pins = self._pins(chosen)
        sampled.update({k: v for k, v in pins.items() if k in search_space})
        return sampled

    def sample_independent(
        self,
        study: optuna.Study,
        trial: FrozenTrial,
        param_name: str,
        param_distribution: BaseDistribution,
    ) -> Any:
        chosen = self._for(trial)
        pins = self._pins(chosen)
        if param_name in pins:
            return pins[param_name]
        return chosen.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(
        self,
        study: optuna.Study,
        trial: FrozenTrial,
        state: TrialState,
        values: Sequence[float] | None,
    ) -> None:
        chosen = self._chosen.pop(trial_id(trial), self.then)
        chosen.after_trial(study, trial, state, values)


def _grid(space: SearchSpace) -> dict[str, list[Any]]:
    grid: dict[str, list[Any]] = {}
    for d in space.dimensions:
        if d.kind == "choice":
            grid[d.name] = list(d.choices)
        elif d.kind == "int":
            assert d.low is not None and d.high is not None
            lo, hi = int(d.low), int(d.high)
            if hi - lo < 6:
                grid[d.name] = list(range(lo, hi + 1))
            else:
                grid[d.name] = sorted({round(lo * (hi / lo) ** (i / 3)) for i in range(4)})
        elif d.kind == "float":
            assert d.low is not None and d.high is not None
            flo, fhi = d.low, d.high
            if d.log:
                grid[d.name] = [flo * (fhi / flo) ** (i / 2) for i in range(3)]
            else:
                grid[d.name] = [flo + (fhi - flo) * i / 2 for i in range(3)]
    return grid


#: ``sampler: auto``: scrambled Sobol points for the trials TPE would draw at random (its
#: ``n_startup_trials``), then TPE (measured in ``benchmarks/bench_search.py``; see
#: ``docs/search.md``)
DEFAULT_START_TRIALS = 10
#: the same when earlier epochs are told as trials (they count, as they do for TPE): with
#: 2-4 epochs each job finishes 3 trials, so TPE takes over after 3 jobs instead of 4
DEFAULT_START_TRIALS_DERIVED = 8
#: the name ``benchmarks/bench_search.py`` gives the default's configuration
DEFAULT_SAMPLER_LABEL = "auto (qmc start, then tpe)"


def default_sampler(
    seed: int | None, most_epochs: int | None = None
) -> optuna.samplers.BaseSampler:
    """``sampler: auto``: scrambled Sobol points until :data:`DEFAULT_START_TRIALS` trials
    have finished (derived ones included), then TPE. A seed seeds both, reproducibly.

    ``most_epochs`` (given when earlier epochs are told as trials): every job trains that
    many epochs (the space's most), the start's and TPE's alike, so each also measures every
    smaller epoch count; TPE still models the epochs from all those trials (a proposal of 2
    epochs is measured on the way to 4). The start is then
    :data:`DEFAULT_START_TRIALS_DERIVED` finished trials."""
    import optuna

    if seed is None:  # unseeded, as Optuna would (it warns about it; nothing is wrong)
        seed = secrets.randbelow(2**31)
    with warnings.catch_warnings():  # QMCSampler is "experimental" since 3.0: noise to users
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        start = optuna.samplers.QMCSampler(
            scramble=True, seed=seed, warn_independent_sampling=False
        )
    derived = most_epochs is not None
    n_start = DEFAULT_START_TRIALS_DERIVED if derived else DEFAULT_START_TRIALS
    then = optuna.samplers.TPESampler(n_startup_trials=n_start, seed=seed + 1)
    pinned = {"n_epochs": most_epochs} if derived else None
    return StartThen(start, then, n_start, pinned, pin_then=derived)


def _importable(package: str) -> bool:
    """Whether ``package`` imports (found is not enough: a broken install fails in a trial)."""
    if importlib.util.find_spec(package) is None:
        return False
    try:
        importlib.import_module(package)
    except ImportError:
        return False
    return True


def check_sampler_package(spec: SweepSpec, source: str) -> None:
    """Raise :class:`~orchestrator.core.errors.SpecError` (exit 2, naming ``sampler.name``)
    when the sweep file's sampler needs a package that does not import."""
    name = spec.sampler.name
    needs = {"cmaes": "cmaes", "gp": "torch"}.get(name)
    if needs and not _importable(needs):
        raise SpecError(
            source, "sampler.name", f"{name} needs the {needs!r} package: pip install {needs}"
        )


def make_sampler(
    spec: SweepSpec, space: SearchSpace, source: str, seed: int | None = None
) -> optuna.samplers.BaseSampler:
    """The sweep file's sampler over ``space``, seeded with ``seed`` (default the file's).
    Raises :class:`~orchestrator.core.errors.SpecError` (exit 2, naming ``sampler.name``)
    when it needs a package that is not installed."""
    import optuna

    name = spec.sampler.name
    seed = spec.sampler.seed if seed is None else seed
    if name == "auto":
        return default_sampler(seed, pinned_epochs(space, spec.sampler))
    check_sampler_package(spec, source)
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "grid":
        return optuna.samplers.GridSampler(_grid(space), seed=seed)
    if name == "qmc":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            # scrambled: unscrambled Sobol points are the same for every seed (the seed
            # would change only the first trial)
            return optuna.samplers.QMCSampler(
                scramble=True,
                seed=secrets.randbelow(2**31) if seed is None else seed,
                warn_independent_sampling=False,
            )
    if name == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed)
    return optuna.samplers.GPSampler(seed=seed)


def make_pruner(spec: SweepSpec, space: SearchSpace, source: str) -> optuna.pruners.BasePruner:
    """Pruners see one intermediate value per epoch (step = epoch number); hyperband's
    ``max_resource`` is the most epochs of the space."""
    import optuna

    p, opts = spec.pruner.name, dict(spec.pruner.options)
    max_epochs = space.bounds("n_epochs")[1]
    try:
        if p == "none":
            return optuna.pruners.NopPruner()
        if p == "median":
            opts.setdefault("n_startup_trials", 2)
            return optuna.pruners.MedianPruner(**opts)
        if p == "percentile":
            opts.setdefault("percentile", 25.0)
            opts.setdefault("n_startup_trials", 2)
            return optuna.pruners.PercentilePruner(**opts)
        if p == "successive_halving":
            return optuna.pruners.SuccessiveHalvingPruner(**opts)
        if p == "hyperband":
            opts.setdefault("min_resource", 1)
            opts.setdefault("max_resource", math.ceil(max_epochs))
            return optuna.pruners.HyperbandPruner(**opts)
        return optuna.pruners.ThresholdPruner(**opts)
    except (TypeError, ValueError) as exc:
        raise SpecError(source, "pruner.options", str(exc)) from None

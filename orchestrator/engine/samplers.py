"""A space-filling start, then a model-based sampler: the default search (``sampler: auto``).

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

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import optuna
from optuna.samplers import BaseSampler

if TYPE_CHECKING:
    from optuna.distributions import BaseDistribution
    from optuna.trial import FrozenTrial, TrialState

__all__ = ["StartThen", "started_trials"]


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
        return self._chosen.get(trial._trial_id, self.then)

    def reseed_rng(self) -> None:
        self.start.reseed_rng()
        self.then.reseed_rng()

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        chosen = self.start if started_trials(study) < self.n_start else self.then
        self._chosen[trial._trial_id] = chosen
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
        chosen = self._chosen.pop(trial._trial_id, self.then)
        chosen.after_trial(study, trial, state, values)

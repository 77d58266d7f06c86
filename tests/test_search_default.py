"""``sampler: auto`` telling earlier epochs as trials: every job trains the space's most
epochs (the start's and TPE's), TPE still models every trial, and a seeded search with
derived trials reproduces."""

from __future__ import annotations

from typing import Any

import optuna

from orchestrator.core.attrs import TrialAttrs
from orchestrator.plan.samplers import DEFAULT_START_TRIALS, StartThen, default_sampler

SPACE = {
    "n_epochs": optuna.distributions.IntDistribution(2, 4),
    "batch_size": optuna.distributions.IntDistribution(1, 40, log=True),
    "learning_rate_multiplier": optuna.distributions.FloatDistribution(0.02, 0.2, log=True),
}


def _loss(params: dict[str, Any], epochs: int) -> float:
    # a ridge: best where epochs x multiplier / sqrt(batch) is about 0.1
    progress = epochs * params["learning_rate_multiplier"] / params["batch_size"] ** 0.5
    return float(abs(progress - 0.1) + 0.5)


def _sweep(sampler: optuna.samplers.BaseSampler, jobs: int, derive: bool) -> optuna.Study:
    """``jobs`` trials as the engine runs them, each job's earlier epochs told when
    ``derive``."""
    study = optuna.create_study(sampler=sampler)
    for _ in range(jobs):
        trial = study.ask(SPACE)
        params = trial.params
        study.tell(trial, _loss(params, params["n_epochs"]))
        if derive:
            for k in range(2, params["n_epochs"]):
                study.add_trial(
                    optuna.trial.create_trial(
                        params={**params, "n_epochs": k},
                        distributions=SPACE,
                        value=_loss(params, k),
                        user_attrs={TrialAttrs.DERIVED_FROM: trial.number},
                    )
                )
    return study


def _trained(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return [t for t in study.trials if TrialAttrs.DERIVED_FROM not in t.user_attrs]


def test_telling_earlier_epochs_every_job_trains_the_most_epochs() -> None:
    sampler = default_sampler(3, most_epochs=4)
    assert isinstance(sampler, StartThen) and sampler.pin_then
    study = _sweep(sampler, 8, derive=True)
    trained = _trained(study)
    assert [t.params["n_epochs"] for t in trained] == [4] * 8
    assert len(study.trials) == 3 * 8  # each job also measured 2 and 3 epochs
    # TPE proposed the later ones (the start ends once DEFAULT_START_TRIALS have finished)
    jobs_in_start = -(-DEFAULT_START_TRIALS // 3)
    assert jobs_in_start < 8
    lrms = [t.params["learning_rate_multiplier"] for t in trained]
    assert len(set(lrms)) == 8


def test_without_derived_trials_tpe_searches_the_epochs() -> None:
    sampler = default_sampler(3)
    assert isinstance(sampler, StartThen) and sampler.pinned == {}
    study = _sweep(sampler, DEFAULT_START_TRIALS + 6, derive=False)
    assert len({t.params["n_epochs"] for t in _trained(study)}) > 1


def test_a_seeded_search_with_derived_trials_reproduces() -> None:
    def proposals(seed: int) -> list[dict[str, Any]]:
        study = _sweep(default_sampler(seed, most_epochs=4), 7, derive=True)
        return [t.params for t in study.trials]

    assert proposals(5) == proposals(5)
    assert proposals(5) != proposals(6)


def test_pinning_then_applies_only_with_pin_then() -> None:
    start = optuna.samplers.RandomSampler(seed=0)
    then = optuna.samplers.RandomSampler(seed=1)
    only_start = StartThen(start, then, 2, {"n_epochs": 4})
    study = _sweep(only_start, 12, derive=False)
    assert {t.params["n_epochs"] for t in study.trials[:2]} == {4}
    assert len({t.params["n_epochs"] for t in study.trials[2:]}) > 1
    every = StartThen(start, then, 2, {"n_epochs": 4}, pin_then=True)
    study = _sweep(every, 12, derive=False)
    assert {t.params["n_epochs"] for t in study.trials} == {4}

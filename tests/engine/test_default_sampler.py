"""The default search (``sampler: auto``): a scrambled Sobol start, then TPE; user override;
seeded reproducibility, on real Optuna studies."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
import pytest

from orchestrator.config import SweepSpec
from orchestrator.core.attrs import TrialAttrs
from orchestrator.plan.samplers import (
    DEFAULT_START_TRIALS,
    StartThen,
    default_sampler,
    make_sampler,
)
from orchestrator.plan.space import Dimension, SearchSpace
from orchestrator.testing import instant as fakes
from tests.engine.test_loop import _run, _spec, instant  # noqa: F401  (the fixture)

SPACE = {
    "n_epochs": optuna.distributions.IntDistribution(2, 4),
    "batch_size": optuna.distributions.IntDistribution(1, 40, log=True),
    "learning_rate_multiplier": optuna.distributions.FloatDistribution(0.02, 0.2, log=True),
}


def _objective(params: dict[str, Any]) -> float:
    return float(
        abs(params["learning_rate_multiplier"] - 0.07)
        + 0.01 * params["batch_size"]
        + 0.1 * params["n_epochs"]
    )


def _proposals(sampler: optuna.samplers.BaseSampler, n: int) -> list[dict[str, Any]]:
    study = optuna.create_study(sampler=sampler)
    out = []
    for _ in range(n):
        trial = study.ask(SPACE)
        out.append(trial.params)
        study.tell(trial, _objective(trial.params))
    return out


def _spec_of(**sampler: Any) -> SweepSpec:
    return SweepSpec.model_validate(
        {
            "name": "s",
            "data": {"train": __file__},
            "backend": {"name": "openai", "model": "gpt-4o-mini"},
            **({"sampler": sampler} if sampler else {}),
        }
    )


SEARCH = SearchSpace((Dimension("n_epochs", "int", low=2, high=4),), 100)


def test_auto_is_the_default_and_names_override_it() -> None:
    assert _spec_of().sampler.name == "auto" and _spec_of().sampler.derives_epochs
    assert not _spec_of(name="tpe").sampler.derives_epochs
    assert _spec_of(name="tpe", epochs_as_trials=True).sampler.derives_epochs
    assert not _spec_of(epochs_as_trials=False).sampler.derives_epochs
    assert isinstance(make_sampler(_spec_of(), SEARCH, "s.yaml"), StartThen)
    chosen = make_sampler(_spec_of(name="tpe", seed=3), SEARCH, "s.yaml")
    assert type(chosen) is optuna.samplers.TPESampler
    chosen = make_sampler(_spec_of(name="random"), SEARCH, "s.yaml")
    assert type(chosen) is optuna.samplers.RandomSampler


def test_the_start_is_the_scrambled_sobol_sequence_then_tpe_takes_over() -> None:
    n = DEFAULT_START_TRIALS
    auto = _proposals(default_sampler(7), n + 3)
    sobol = _proposals(
        optuna.samplers.QMCSampler(scramble=True, seed=7, warn_independent_sampling=False), n + 3
    )
    assert auto[:n] == sobol[:n]
    assert auto[n:] != sobol[n:]  # TPE from there on


def test_a_seeded_default_search_is_reproducible() -> None:
    n = DEFAULT_START_TRIALS + 3
    assert _proposals(default_sampler(11), n) == _proposals(default_sampler(11), n)
    assert _proposals(default_sampler(11), 3) != _proposals(default_sampler(12), 3)


def test_derived_trials_count_toward_the_start_as_they_do_for_tpe() -> None:
    study = optuna.create_study(sampler=default_sampler(0))
    params = {"n_epochs": 2, "batch_size": 4, "learning_rate_multiplier": 0.05}
    for i in range(DEFAULT_START_TRIALS):
        study.add_trial(
            optuna.trial.create_trial(
                params={**params, "batch_size": 1 + i},
                distributions=SPACE,
                value=float(i),
                user_attrs={TrialAttrs.DERIVED_FROM: 0},
            )
        )
    sampler = study.sampler
    assert isinstance(sampler, StartThen)
    trial = study.ask(SPACE)
    assert sampler._chosen[trial._trial_id] is sampler.then


@pytest.mark.parametrize("seed", [5])
def test_a_seeded_sweep_on_the_default_proposes_the_same_trials_again(
    instant: Path,  # noqa: F811
    tmp_path: Path,
    seed: int,
) -> None:
    first, _ = _run(_spec(tmp_path, name="a", trials=4, sampler={"seed": seed}))
    fakes.WORLD.__init__()  # type: ignore[misc]
    second, _ = _run(_spec(tmp_path, name="b", trials=4, sampler={"seed": seed}))
    assert [t.params for t in first.study.trials] == [t.params for t in second.study.trials]
    trained = [t for t in first.study.trials if TrialAttrs.DERIVED_FROM not in t.user_attrs]
    assert len({tuple(sorted(t.params.items())) for t in trained}) == 4
    # auto tells the jobs' earlier epochs too (the space has 2 to 4 epochs), so its start
    # trains the most epochs: each job also measures 2 and 3
    assert {t.params["n_epochs"] for t in trained} == {4}
    assert len(first.study.trials) - len(trained) == 2 * 4


def test_the_start_trains_the_most_epochs_only_when_earlier_epochs_are_told() -> None:
    space = SearchSpace((Dimension("n_epochs", "int", low=2, high=5),), 100)
    told = make_sampler(_spec_of(), space, "s.yaml")
    assert isinstance(told, StartThen) and told.pinned == {"n_epochs": 5}
    untold = make_sampler(_spec_of(epochs_as_trials=False), space, "s.yaml")
    assert isinstance(untold, StartThen) and untold.pinned == {}
    fixed = SearchSpace((Dimension("n_epochs", "fixed", value=3),), 100)
    assert make_sampler(_spec_of(), fixed, "s.yaml").pinned == {}  # type: ignore[attr-defined]


def test_sampler_qmc_is_scrambled_so_its_seed_changes_the_sequence() -> None:
    """``sampler: qmc`` with two seeds proposes two different sequences (unscrambled Sobol
    points differ only in the first trial, whatever the seed)."""
    spec = _spec_of(name="qmc", seed=1)
    other = _spec_of(name="qmc", seed=2)
    one = _proposals(make_sampler(spec, SEARCH, "s.yaml"), 6)
    two = _proposals(make_sampler(other, SEARCH, "s.yaml"), 6)
    assert one[1:] != two[1:]
    assert one == _proposals(make_sampler(_spec_of(name="qmc", seed=1), SEARCH, "s.yaml"), 6)

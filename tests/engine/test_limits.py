"""What counts toward a sweep's ``trials`` (orchestrator/engine/limits.py), on a real SQLite
study holding every kind of trial."""

from __future__ import annotations

from pathlib import Path

import optuna
from optuna.distributions import IntDistribution
from optuna.trial import TrialState, create_trial

from orchestrator.core.attrs import TrialAttrs
from orchestrator.engine.limits import counted, running_jobs


def _study(tmp_path: Path) -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name="s", storage=f"sqlite:///{tmp_path / 'o.db'}")
    dists = {"n": IntDistribution(1, 9)}
    kinds: list[tuple[TrialState, dict[str, object]]] = [
        (TrialState.COMPLETE, {}),  # 0 counts
        (TrialState.PRUNED, {}),  # 1 counts
        (TrialState.FAIL, {}),  # 2 counts: its configuration failed
        (TrialState.FAIL, {TrialAttrs.ENVIRONMENT_FAILURE: True}),  # 3 tried again
        (TrialState.FAIL, {TrialAttrs.NOT_STARTED: True}),  # 4 never started
        (TrialState.COMPLETE, {TrialAttrs.DERIVED_FROM: 0}),  # 5 another job's epoch
    ]
    for i, (state, attrs) in enumerate(kinds):
        study.add_trial(
            create_trial(
                state=state,
                value=1.0 if state is TrialState.COMPLETE else None,
                params={"n": i + 1},
                distributions=dists,
                user_attrs=attrs,
            )
        )
    study.ask().set_user_attr(TrialAttrs.WORKER, "host:1")  # 6 running: counts
    waits = study.ask()  # 7 running, waiting for a twin: counts, trains nothing
    waits.set_user_attr(TrialAttrs.SAME_AS, 6)
    study.enqueue_trial({"n": 3})  # 8 waiting: not asked yet
    return study


def test_finished_and_running_trials_count_but_not_retried_unstarted_or_derived_ones(
    tmp_path: Path,
) -> None:
    trials = _study(tmp_path).get_trials(deepcopy=False)
    assert [t.state.name for t in trials][-1] == "WAITING"
    assert counted(trials) == 5  # 0, 1, 2, 6, 7
    assert counted(trials, before=3) == 3
    assert counted(trials, before=7) == 4


def test_only_running_trials_with_a_job_fill_the_providers_cap(tmp_path: Path) -> None:
    trials = _study(tmp_path).get_trials(deepcopy=False)
    assert running_jobs(trials) == 1  # 6; 7 waits for it

"""Several objectives (quality x cost): the sweep file's blocks, a two-objective sweep against
`ftsweep apisim` that still prunes, its Pareto front against brute force, `best --pick`, and
the engine's pruning rule that keeps a trial which could still land on the front."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest
from mlflow import MlflowClient

from orchestrator import apisim
from orchestrator.core.attrs import TrialAttrs
from orchestrator.engine.objectives import prune_several
from tests.engine.conftest import SweepFactory
from tests.engine.test_loop import (
    _run,
    instant,  # noqa: F401  (the fixture)
)
from tests.engine.test_loop import _spec as _instant_spec
from tests.engine.test_remote_sweeps import _spec, _study, remote_runs  # noqa: F401

#: simulated seconds per second: slow enough that an epoch (40 steps of half a simulated
#: second at batch size 1) takes a few polls, so a pruned job is cancelled before it ends
SPEED = 100.0

TWO = [
    {"metric": "full_valid_loss", "direction": "minimize"},
    {"metric": "cost_usd", "direction": "minimize"},
]


def _brute_front(trials: list[optuna.trial.FrozenTrial]) -> set[int]:
    """The front by definition: the feasible completed trials that no other one dominates."""
    done = [t for t in trials if t.state.name == "COMPLETE"]
    ok = [t for t in done if all(v <= 0 for v in t.constraints.values())]
    return {
        t.number
        for t in ok
        if not any(
            all(a <= b for a, b in zip(o.values, t.values, strict=True))
            and any(a < b for a, b in zip(o.values, t.values, strict=True))
            for o in ok
        )
    }


@pytest.fixture
def slow_sim(tmp_path: Path) -> Iterator[apisim.SimServer]:
    server = apisim.start(state=tmp_path / "apisim", speed=SPEED)
    yield server
    server.close()


def test_a_two_objective_sweep_against_apisim_prunes_and_reports_its_front(
    cli,
    tmp_path: Path,
    slow_sim: apisim.SimServer,
    remote_runs: Path,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server = slow_sim
    spec = _spec(
        tmp_path,
        "openai",
        server,
        monkeypatch,
        trials=6,
        parallel=1,
        objectives=TWO,
        constraints={"cost_usd": {"max": 100.0}},
        space={
            "n_epochs": {"low": 2, "high": 4},
            "batch_size": 1,
            "learning_rate_multiplier": {"low": 0.02, "high": 2.0, "log": True},
        },
        pruner={"name": "median", "options": {"n_startup_trials": 2}},
        sampler={"name": "random", "seed": 3},
    )
    r = cli("run", spec, "--json-events")
    assert r.code == 0, r.err
    events = [json.loads(line) for line in r.out.splitlines() if line.startswith("{")]
    study = _study(remote_runs, "rehearsal-openai")
    assert [d.name for d in study.directions] == ["MINIMIZE", "MINIMIZE"]
    trials = study.trials
    states = [t.state.name for t in trials]
    # the rule pruned (its job cancelled: PRUNED; on a machine slow enough that the job
    # ended before its cancel, COMPLETE with the prune recorded)
    assert any(TrialAttrs.PRUNED_AT in t.user_attrs for t in trials), states
    assert states.count("COMPLETE") >= 3, states
    for t in trials:
        if t.state.name == "COMPLETE":
            told = t.user_attrs[TrialAttrs.OBJECTIVES]
            assert t.values == [told["full_valid_loss"], told["cost_usd"]]
            assert t.values[1] == t.user_attrs[TrialAttrs.COST] > 0
            assert t.constraints == {"cost_usd": pytest.approx(t.values[1] - 100.0)}
    front = _brute_front(trials)
    assert front
    # the live view's last event names the front
    (finished,) = [e for e in events if "pareto_front" in e]
    assert finished["pareto_front"] == sorted(front)
    # the report: every trial marked, the front as brute force finds it
    rows = json.loads(cli("report", spec, "--format", "json").out)
    assert {row["trial"] for row in rows if row["front"]} == front
    assert all(row["derived"] is False and row["job_trial"] == row["trial"] for row in rows)
    table = cli("report", spec).out
    assert "objective:cost_usd" in table.splitlines()[0] and "front" in table.splitlines()[0]
    # best: the policy named, its trial on the front
    best = json.loads(cli("best", spec, "--pick", "cheapest-within 2").out)
    assert best["trial"] in front
    assert best["policy"] == "cheapest-within 2"
    assert "within 2 % of the best full_valid_loss" in best["why"]
    assert set(best["front"]) == front
    default = json.loads(cli("best", spec).out)
    assert default["policy"] == "cheapest-within 2 (the default with several objectives)"
    # MLflow: the parent holds the front, each child says whether it is on it
    client = MlflowClient(tracking_uri=f"sqlite:///{remote_runs / 'mlflow.db'}")
    exp = client.get_experiment_by_name("rehearsal-openai")
    runs = client.search_runs([exp.experiment_id])
    parent = next(x for x in runs if "mlflow.parentRunId" not in x.data.tags)
    assert {int(n) for n in parent.data.tags["ftsweep.pareto_front"].split(",")} == front
    artifact = client.download_artifacts(
        parent.info.run_id, "report/pareto_front.json", str(tmp_path)
    )
    assert {row["trial"] for row in json.loads(Path(artifact).read_text())} == front
    for child in (x for x in runs if "mlflow.parentRunId" in x.data.tags):
        on = int(child.data.tags["ftsweep.trial"]) in front
        assert child.data.tags["ftsweep.pareto_front"] == str(on).lower()
    html = cli("report", spec, "--format", "html").out
    assert "Pareto front" in html and "<svg" in html


# -- the sweep file's blocks: exit 2, naming the field ----------------------------------------
@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (
            {"objective": {"metric": "full_valid_loss"}, "objectives": TWO},
            "objectives: give objective or objectives, not both",
        ),
        (
            {"objectives": [TWO[0], {"metric": "cost_usd", "direction": "smaller"}]},
            "objectives.1.direction: input should be 'minimize' or 'maximize'",
        ),
        ({"objectives": [TWO[0], TWO[0]]}, "objectives.1.metric: 'full_valid_loss' is named twice"),
        (
            {"objectives": [TWO[0], {"metric": "bleu"}]},
            "objectives.1.metric: 'bleu' is not reported by backend 'instant'",
        ),
        (
            {"objectives": [TWO[1], TWO[0]]},
            "objectives.0.metric: the primary objective is measured at epoch ends",
        ),
        ({"objectives": []}, "objectives: list should have at least 1 item"),
        ({"constraints": {"cost_usd": {"max": 1, "min": 0}}}, "constraints.cost_usd: give one of"),
        ({"constraints": {"cost_usd": {"below": 1}}}, "constraints.cost_usd.below: unknown field"),
        ({"constraints": {"tokens": {"max": 1}}}, "constraints.tokens: 'tokens' is not reported"),
        (
            {"objectives": TWO, "pruner": {"name": "hyperband"}},
            "pruner.name: hyperband cannot prune a sweep of several objectives",
        ),
        ({"objectives": TWO, "sampler": {"name": "cmaes"}}, "sampler.name: cmaes optimises one"),
    ],
)
def test_bad_objectives_and_constraints_exit_2_naming_the_field(
    cli,
    instant: Path,  # noqa: F811
    tmp_path: Path,
    fields: dict[str, Any],
    message: str,
) -> None:
    spec = _instant_spec(tmp_path, options={"price_per_epoch": 1.0}, **fields)
    r = cli("space", spec)
    assert r.code == 2, r.err
    assert f"{spec}: {message}" in r.err, r.err
    assert len(r.err.strip().splitlines()) == 1 and "Traceback" not in r.err


def test_resuming_with_another_number_of_objectives_is_a_one_line_error(
    cli,
    instant: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    one = _instant_spec(tmp_path, trials=1, options={"price_per_epoch": 1.0})
    assert cli("run", one).code == 0
    two = _instant_spec(tmp_path, trials=2, objectives=TWO, options={"price_per_epoch": 1.0})
    r = cli("run", two)
    assert r.code == 2, r.err
    assert (
        "objectives: study 'inst' was started with 1 objective(s) (minimize), the file names 2"
        in r.err
    )
    assert "Traceback" not in r.err


# -- the pruning rule -------------------------------------------------------------------------
def _done(study: optuna.Study, loss_at: dict[int, float], cost: float) -> None:
    study.add_trial(
        optuna.trial.create_trial(
            values=[loss_at[max(loss_at)], cost],
            user_attrs={TrialAttrs.EPOCH_VALUES: {str(k): v for k, v in loss_at.items()}},
        )
    )


def test_the_rule_prunes_on_the_primary_but_keeps_a_trial_cheaper_than_all_that_beat_it() -> None:
    study = optuna.create_study(directions=["minimize", "minimize"])
    pruner = optuna.pruners.MedianPruner(n_startup_trials=2)
    _done(study, {1: 1.0, 2: 0.8}, cost=4.0)
    _done(study, {1: 1.2, 2: 0.9}, cost=4.0)
    _done(study, {1: 2.0, 2: 1.5}, cost=1.0)
    directions = ["minimize", "minimize"]
    # worse than the median (1.2) at epoch 1; beaten by trials 0 and 1
    dear = prune_several(study, pruner, 99, 1, 1.5, [4.0], directions)
    assert dear.prune and dear.pruner_says and dear.beaten_by == (0, 1)
    cheap = prune_several(study, pruner, 99, 1, 1.5, [2.0], directions)
    assert not cheap.prune and cheap.pruner_says  # cheaper than every trial that beats it
    unknown = prune_several(study, pruner, 99, 1, 1.5, [None], directions)
    assert unknown.prune  # a cost nobody can project saves nothing
    good = prune_several(study, pruner, 99, 1, 1.1, [9.0], directions)
    assert not good.prune and not good.pruner_says  # better than the median: the pruner's own
    # the same question Optuna's median pruner answers in a single-objective study
    single = optuna.create_study(pruner=pruner)
    for loss_at in ({1: 1.0, 2: 0.8}, {1: 1.2, 2: 0.9}, {1: 2.0, 2: 1.5}):
        single.add_trial(optuna.trial.create_trial(value=loss_at[2], intermediate_values=loss_at))
    for value in (1.5, 1.1):
        trial = single.ask()
        trial.report(value, 1)
        assert trial.should_prune() == (value == 1.5)


def test_one_row_per_job_in_the_report_and_every_trial_with_all(
    cli,
    instant: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    spec = _instant_spec(
        tmp_path,
        trials=3,
        sampler={"name": "random", "seed": 1, "epochs_as_trials": True},
        pruner={"name": "median", "options": {"n_startup_trials": 2}},
    )
    assert cli("run", spec).code == 0
    every = json.loads(cli("report", spec, "--format", "json").out)
    jobs = [row for row in every if not row["derived"]]
    derived = [row for row in every if row["derived"]]
    assert len(jobs) == 3 and derived  # 2-4 epochs: earlier epochs told as trials
    assert all(row["job_trial"] == row["derived_from"] for row in derived)
    assert all(row["job_trial"] == row["trial"] for row in jobs)
    table = cli("report", spec).out.splitlines()
    assert len(table) == 1 + len(jobs)  # the header, then one row per job
    assert "epochs" in table[0].split()
    shown = {int(line.split()[0]) for line in table[1:]}
    assert shown == {row["trial"] for row in jobs}
    complete = next(row for row in jobs if row["state"] == "COMPLETE" and row["n_epochs"] > 2)
    line = next(x for x in table[1:] if x.split()[0] == str(complete["trial"]))
    assert f"epochs 1..{complete['n_epochs']}:" in line and "(best @" in line
    assert len(cli("report", spec, "--all").out.splitlines()) == 1 + len(every)


def test_space_says_what_a_sweep_of_several_objectives_searches_with(
    cli,
    instant: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    spec = _instant_spec(
        tmp_path,
        objectives=TWO,
        constraints={"cost_usd": {"max": 3}},
        options={"price_per_epoch": 1.0},
        sampler={"name": "auto"},
        pruner={"name": "median"},
    )
    r = cli("space", spec)
    assert r.code == 0, r.err
    assert (
        "objectives: minimize full_valid_loss, minimize cost_usd; sampler auto: a scrambled "
        "Sobol start, then TPE (multi-objective); constraints: cost_usd <= 3; pruner median "
        "on full_valid_loss, keeping the front"
    ) in r.out


def test_cost_usd_needs_a_priced_backend_and_duration_s_does_not(
    cli,
    make_sweep: SweepFactory,
) -> None:
    dollars = make_sweep(name="mo-local", objectives=TWO)
    r = cli("space", dollars)
    assert r.code == 2
    assert "objectives.1.metric: 'cost_usd' needs a priced backend" in r.err
    seconds = make_sweep(
        name="mo-local", objectives=[TWO[0], {"metric": "duration_s", "direction": "minimize"}]
    )
    r = cli("space", seconds)
    assert r.code == 0, r.err
    assert "objectives: minimize full_valid_loss, minimize duration_s" in r.out


def test_derived_epochs_and_wall_time_as_objectives_with_a_constraint(
    instant: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    spec = _instant_spec(
        tmp_path,
        trials=3,
        parallel=1,
        objectives=[TWO[0], {"metric": "duration_s", "direction": "minimize"}],
        constraints={"full_valid_loss": {"max": 3.0}},
        sampler={"name": "random", "seed": 1, "epochs_as_trials": True},
    )
    result, _ = _run(spec)
    trials = result.study.trials
    jobs = [t for t in trials if TrialAttrs.DERIVED_FROM not in t.user_attrs]
    derived = [t for t in trials if TrialAttrs.DERIVED_FROM in t.user_attrs]
    assert len(jobs) == 3 and derived
    for t in jobs:
        assert t.state.name == "COMPLETE"
        assert t.values[1] == t.user_attrs[TrialAttrs.DURATION] > 0  # the fake clock's seconds
        assert t.constraints == {"full_valid_loss": pytest.approx(t.values[0] - 3.0)}
        assert not t.intermediate_values  # kept aside: Optuna's MO samplers refuse them
        assert t.user_attrs[TrialAttrs.EPOCH_VALUES]
    for t in derived:
        parent = trials[t.user_attrs[TrialAttrs.DERIVED_FROM]]
        k, n = t.params["n_epochs"], parent.params["n_epochs"]
        assert t.values[0] == parent.user_attrs[TrialAttrs.EPOCH_VALUES][str(k)]
        assert t.values[1] == pytest.approx(parent.values[1] * k / n)  # its share of the job
        assert t.constraints == {"full_valid_loss": pytest.approx(t.values[0] - 3.0)}

"""Several objectives (quality x cost): the sweep file's blocks, a two-objective sweep against
`ftsweep apisim` that still prunes, its Pareto front against brute force, `best --pick`, and
the engine's pruning rule that keeps a trial which could still land on the front."""

from __future__ import annotations

import json
from pathlib import Path
from collections.abc import Iterator
from typing import Any

import optuna
import pytest
import yaml
from mlflow import MlflowClient

from orchestrator.core.attrs import TrialAttrs
from orchestrator.results.front import Point, dominates, pareto_front
from orchestrator import apisim
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
    r = cli("run", spec)
    assert r.code == 0, r.err
    study = _study(remote_runs, "rehearsal-openai")
    assert [d.name for d in study.directions] == ["MINIMIZE", "MINIMIZE"]
    trials = study.trials
    states = [t.state.name for t in trials]
    assert states.count("PRUNED") >= 1, states
    assert states.count("COMPLETE") >= 3, states
    for t in trials:
        if t.state.name == "COMPLETE":
            told = t.user_attrs[TrialAttrs.OBJECTIVES]
            assert t.values == [told["full_valid_loss"], told["cost_usd"]]
            assert t.values[1] == t.user_attrs[TrialAttrs.COST] > 0
            assert t.constraints == {"cost_usd": pytest.approx(t.values[1] - 100.0)}
    front = _brute_front(trials)
    assert front
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
    artifact = client.download_artifacts(parent.info.run_id, "report/pareto_front.json", str(tmp_path))
    assert {row["trial"] for row in json.loads(Path(artifact).read_text())} == front
    for child in (x for x in runs if "mlflow.parentRunId" in x.data.tags):
        on = int(child.data.tags["ftsweep.trial"]) in front
        assert child.data.tags["ftsweep.pareto_front"] == str(on).lower()
    html = cli("report", spec, "--format", "html").out
    assert "Pareto front" in html and "<svg" in html

"""``ftsweep learning-curve``: the best configuration of a finished tiny sweep trained on
12.5-100 % of its data, on CPU, tracked in MLflow; the power-law fit; the budget refusal
before any upload; a sweep that never ran."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import optuna
import pytest
import yaml
from mlflow import MlflowClient

from orchestrator import apisim
from orchestrator.backends.base import Hyperparameters, TrainingRequest
from orchestrator.backends.local.tasks import write_task
from orchestrator.core.attrs import TrialAttrs
from orchestrator.workflows.learning_curve import fit_power_law
from tests.apisim.fixtures import openai_env, request_log
from tests.conftest import Result
from tests.recipe.conftest import Finished

Cli = Callable[..., Result]


def test_the_learning_curve_of_a_tiny_sweep(cli: Cli, tiny_sweep: Finished) -> None:
    plot = tiny_sweep.folder / "curve.png"
    r = cli("learning-curve", tiny_sweep.spec, "--out", plot, "--json")
    assert r.code == 0, r.err
    curve = json.loads(r.out)
    points = curve["points"]
    assert [p["n_examples"] for p in points] == [20, 40, 80, 160]
    assert [p["batch_size"] for p in points] == [1, 1, 2, 4]  # its share of the examples
    assert all(p["status"] == "succeeded" and p["loss"] > 0 for p in points)
    study = optuna.load_study(
        study_name="tiny-recipe", storage=f"sqlite:///{tiny_sweep.runs / 'optuna.db'}"
    )
    # all the data, the same configuration and seed: the sweep's own best trial again
    assert points[-1]["loss"] == pytest.approx(study.best_value, rel=1e-6)
    assert curve["answer"].startswith("more data: ")
    assert "doubling to 320 examples" in curve["answer"] or "not worth it" in curve["answer"]
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    client = MlflowClient(tracking_uri=f"sqlite:///{tiny_sweep.runs / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("tiny-recipe")
    assert experiment is not None
    parents = client.search_runs(
        [experiment.experiment_id], "tags.`ftsweep.kind` = 'learning-curve'"
    )
    parent = next(p for p in parents if "mlflow.parentRunId" not in p.data.tags)
    assert parent.info.run_id == curve["mlflow_run_id"] and parent.info.status == "FINISHED"
    assert parent.data.tags["ftsweep.answer"] == curve["answer"]
    assert {a.path for a in client.list_artifacts(parent.info.run_id)} >= {
        "learning_curve.png",
        "learning_curve.json",
    }
    children = client.search_runs(
        [experiment.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'"
    )
    assert sorted(c.data.tags["ftsweep.fraction"] for c in children) == [
        "0.125",
        "0.25",
        "0.5",
        "1",
    ]
    for child in children:
        history = client.get_metric_history(child.info.run_id, "full_valid_loss")
        assert len(history) == 3  # one per epoch, logged in batches
    # the sweep's study is untouched: no new trial
    assert len(study.trials) == 1


def test_a_sweep_that_never_ran(cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FTSWEEP_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.delenv("FTSWEEP_OPTUNA_STORAGE", raising=False)
    write_task("reverse", tmp_path / "data", n_train=40, n_valid=10)
    spec = tmp_path / "s.yaml"
    spec.write_text(
        "name: never\ndata: {train: data/reverse.train.jsonl}\n"
        "backend: {name: local, model: tiny}\n"
    )
    r = cli("learning-curve", spec)
    assert (r.code, r.out) == (1, "")
    assert r.err.startswith("error: sweep 'never' has not run yet") and "ftsweep run" in r.err
    assert not (tmp_path / "runs").exists()


def test_over_budget_it_refuses_before_any_upload(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = apisim.start(state=tmp_path / "apisim", speed=0.0)
    try:
        runs = tmp_path / "runs"
        monkeypatch.setenv("FTSWEEP_RUNS_DIR", str(runs))
        monkeypatch.delenv("FTSWEEP_OPTUNA_STORAGE", raising=False)
        monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
        for var, value in openai_env(server).items():
            monkeypatch.setenv(var, value)
        train, valid = write_task("tickets", tmp_path / "data", n_train=40, n_valid=12, fmt="chat")
        spec = tmp_path / "paid.yaml"
        spec.write_text(
            yaml.safe_dump(
                {
                    "name": "paid",
                    "data": {"train": str(train), "valid": str(valid)},
                    "backend": {"name": "openai", "model": "gpt-4o-mini"},
                    "budget_usd": 0.001,
                }
            )
        )
        runs.mkdir()
        study = optuna.create_study(study_name="paid", storage=f"sqlite:///{runs / 'optuna.db'}")
        hp = Hyperparameters(3, 2, 0.1)
        request = TrainingRequest.make(
            study="paid", trial=0, model="gpt-4o-mini", hyperparameters=hp, train_file=train
        )
        study.add_trial(
            optuna.trial.create_trial(
                state=optuna.trial.TrialState.COMPLETE,
                value=0.5,
                params={"n_epochs": 3},
                distributions={"n_epochs": optuna.distributions.IntDistribution(2, 4)},
                user_attrs={TrialAttrs.REQUEST: request.to_json()},
            )
        )
        r = cli("learning-curve", spec)
        assert (r.code, r.out) == (1, "")
        assert "over the budget of $0.00: nothing was started" in r.err
        assert request_log(server) == []  # no upload, no job: not even a request
        r = cli("learning-curve", spec, "--budget", "0.0000001", "--fractions", "1")
        assert r.code == 1 and "nothing was started" in r.err
    finally:
        server.close()


def test_the_power_law_fit_recovers_a_known_curve() -> None:
    law = [(n, 3.0 * n**-0.5 + 1.0) for n in (20, 40, 80, 160)]
    fit = fit_power_law(law)
    assert fit is not None
    assert fit.b == pytest.approx(0.5, rel=0.1) and fit.c == pytest.approx(1.0, rel=0.1)
    assert fit.doubling_gain == pytest.approx(3 * (160**-0.5 - 320**-0.5), rel=0.1)
    assert fit.verdict("valid_loss").startswith("more data: worth it: doubling to 320")


def test_a_flat_curve_is_not_worth_more_data() -> None:
    fit = fit_power_law([(20, 2.0), (40, 2.0001), (80, 1.9999), (160, 2.0)])
    assert fit is not None and fit.verdict("valid_loss").startswith("more data: not worth it")
    assert fit_power_law([(20, 2.0)]) is None


def test_a_learning_curve_on_a_paid_rehearsal_within_budget(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = apisim.start(state=tmp_path / "apisim", speed=600.0)
    try:
        runs = tmp_path / "runs"
        monkeypatch.setenv("FTSWEEP_RUNS_DIR", str(runs))
        monkeypatch.delenv("FTSWEEP_OPTUNA_STORAGE", raising=False)
        monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
        for var, value in openai_env(server).items():
            monkeypatch.setenv(var, value)
        train, valid = write_task("tickets", tmp_path / "data", n_train=40, n_valid=12, fmt="chat")
        spec = tmp_path / "paid.yaml"
        spec.write_text(
            yaml.safe_dump(
                {
                    "name": "paid-curve",
                    "data": {"train": str(train), "valid": str(valid)},
                    "backend": {
                        "name": "openai",
                        "model": "gpt-4o-mini",
                        "options": {"poll_interval": [0.05, 0.3]},
                    },
                    "trials": 1,
                    "budget_usd": 5,
                    "sampler": {"name": "random", "seed": 0},
                }
            )
        )
        assert cli("run", spec).code == 0
        before = len(request_log(server, "jobs.create"))
        r = cli("learning-curve", spec, "--fractions", "0.5,1", "--json")
        assert r.code == 0, r.err
        curve = json.loads(r.out)
        assert [p["n_examples"] for p in curve["points"]] == [20, 40]
        assert all(p["status"] == "succeeded" and p["loss"] is not None for p in curve["points"])
        assert all(0 < p["cost_usd"] < 5 for p in curve["points"])
        assert len(request_log(server, "jobs.create")) == before + 2
        assert curve["answer"].startswith("more data: ")
    finally:
        server.close()

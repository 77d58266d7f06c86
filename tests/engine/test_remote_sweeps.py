"""Full sweeps on the openai and azure backends against `ftsweep apisim`, through the real SDK."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from mlflow import MlflowClient

from orchestrator import apisim
from orchestrator.apisim.server import SimServer
from orchestrator.backends.local.tasks import write_task
from tests.apisim.fixtures import OPENAI_KEY, azure_env, openai_env, request_log
from tests.reliability.stores import seed_mlflow

SPEED = 600.0  # simulated seconds per second


@pytest.fixture
def sim(tmp_path: Path) -> Callable[..., SimServer]:
    servers: list[SimServer] = []

    def start(faults: dict[str, Any] | None = None) -> SimServer:
        server = apisim.start(
            state=tmp_path / "apisim",
            speed=SPEED,
            faults=apisim.Faults.from_dict(faults) if faults else None,
        )
        servers.append(server)
        return server

    yield start  # type: ignore[misc]
    for server in servers:
        server.close()


@pytest.fixture
def remote_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    root = tmp_path / "mlruns"
    monkeypatch.setenv("FTSWEEP_RUNS_DIR", str(root))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    seed_mlflow(root)
    yield root


def _spec(
    tmp_path: Path, backend: str, server: SimServer, monkeypatch: pytest.MonkeyPatch, **fields: Any
) -> Path:
    env = openai_env(server) if backend == "openai" else azure_env(server)
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    train, valid = write_task("tickets", tmp_path / "data", n_train=40, n_valid=12, fmt="chat")
    spec: dict[str, Any] = {
        "name": f"rehearsal-{backend}",
        "data": {"train": str(train), "valid": str(valid)},
        "backend": {
            "name": backend,
            "model": "gpt-4o-mini",
            "options": {"poll_interval": [0.05, 0.3]},
        },
        "trials": 4,
        "parallel": 2,
        "sampler": {"name": "random", "seed": 0},
    }
    spec.update(fields)
    path = tmp_path / f"{backend}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def _study(root: Path, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{root / 'optuna.db'}")


@pytest.mark.parametrize("backend", ["openai", "azure"])
def test_full_sweep_against_apisim(
    cli, tmp_path: Path, sim, remote_runs: Path, monkeypatch: pytest.MonkeyPatch, backend: str
) -> None:
    server = sim()
    spec = _spec(tmp_path, backend, server, monkeypatch)
    r = cli("run", spec)
    assert r.code == 0, r.err
    study = _study(remote_runs, f"rehearsal-{backend}")
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 4
    for t in study.trials:
        assert t.user_attrs["ftsweep.cost_usd"] > 0  # reconciled from trained_tokens
        assert t.user_attrs["ftsweep.fine_tuned_model"]
    assert len(request_log(server, "jobs.create")) == 4
    assert len(request_log(server, "files.create")) == 2  # train + valid, uploaded once
    client = MlflowClient(tracking_uri=f"sqlite:///{remote_runs / 'mlflow.db'}")
    exp = client.get_experiment_by_name(f"rehearsal-{backend}")
    runs = client.search_runs([exp.experiment_id])
    children = [x for x in runs if "mlflow.parentRunId" in x.data.tags]
    assert len(runs) == 5 and len(children) == 4
    for child in children:
        assert child.data.tags["ftsweep.backend"] == backend
        assert child.data.metrics["cost_usd"] > 0
        assert client.get_metric_history(child.info.run_id, "train_loss")
    report = json.loads(cli("report", spec, "--format", "json").out)
    assert {row["job_id"] for row in report} == {
        t.user_attrs["ftsweep.job_id"] for t in study.trials
    }
    # the key reached no log, tag, artifact or report
    blobs = [p.read_bytes() for p in remote_runs.rglob("*") if p.is_file()]
    key = OPENAI_KEY if backend == "openai" else azure_env(server)["AZURE_OPENAI_API_KEY"]
    assert not any(key.encode() in b for b in blobs)
    assert key not in r.out + r.err


def test_faults_fail_trials_with_the_provider_message_and_create_each_job_once(
    cli, tmp_path: Path, sim, remote_runs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    faults = {
        "max_running": 1,
        "requests": [
            {
                "op": "jobs.create",
                "status": 429,
                "code": "daily_rate_limit_exceeded",
                "retry_after": 1,
                "times": 2,
            },
            {"op": "jobs.retrieve", "status": 500, "times": 3},
            {"op": "jobs.events", "status": 503, "times": 2, "skip": 4},
        ],
        "jobs": [
            {
                "nth": 2,
                "code": "invalid_training_file",
                "message": "Example 3 has a message with invalid content.",
            }
        ],
    }
    server = sim(faults)
    spec = _spec(tmp_path, "openai", server, monkeypatch, trials=4)
    r = cli("run", spec)
    assert r.code == 0, r.err
    study = _study(remote_runs, "rehearsal-openai")
    states = [t.state.name for t in study.trials]
    assert states.count("FAIL") == 1 and states.count("COMPLETE") == 3, states
    failed = next(t for t in study.trials if t.state.name == "FAIL")
    assert "Example 3 has a message with invalid content." in failed.user_attrs["ftsweep.error"]
    creates = [e for e in request_log(server, "jobs.create") if e["status"] < 300]
    assert len(creates) == 4  # the 429s were refused creates; each trial created one job
    from openai import OpenAI

    jobs = OpenAI(api_key=OPENAI_KEY, base_url=server.url + "/v1").fine_tuning.jobs.list(limit=50)
    keys = [job.metadata["ftsweep_key"] for job in jobs]
    assert len(keys) == len(set(keys)) == 4
    assert {t.user_attrs["ftsweep.job_id"] for t in study.trials} == {job.id for job in jobs}


def test_half_the_estimated_cost_stops_launching(
    cli, tmp_path: Path, sim, remote_runs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = sim()
    spec = _spec(
        tmp_path, "openai", server, monkeypatch, trials=6, parallel=1, space={"n_epochs": 3}
    )
    est = json.loads(cli("estimate", spec, "--json").out)
    budget = est["cost_sweep"][1] / 2
    r = cli("run", spec, "--budget", str(budget))
    assert r.code == 0, r.err
    assert "budget:" in r.err
    study = _study(remote_runs, "rehearsal-openai")
    spent = sum(t.user_attrs.get("ftsweep.cost_usd", 0.0) for t in study.trials)
    started = [t for t in study.trials if "ftsweep.job_id" in t.user_attrs]
    assert 0 < len(started) < 6
    assert spent <= budget + 1e-9
    assert len(request_log(server, "jobs.create")) == len(started)


@pytest.mark.parametrize("command", ["space", "run"])
def test_prompt_loss_weight_is_rejected_before_any_upload(
    cli, tmp_path: Path, sim, remote_runs: Path, monkeypatch: pytest.MonkeyPatch, command: str
) -> None:
    server = sim()
    spec = _spec(tmp_path, "openai", server, monkeypatch, space={"prompt_loss_weight": 0.1})
    r = cli(command, spec)
    assert r.code == 2
    assert r.err.strip() == (
        f"error: {spec}: space.prompt_loss_weight: backend 'openai' does not accept "
        "prompt_loss_weight (only the local trainer does); remove it"
    )
    assert request_log(server) == []


@pytest.mark.parametrize("name", ["openai", "azure"])
def test_shipped_sweep_files_rehearse_against_apisim(
    cli, tmp_path: Path, remote_runs: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    """sweeps/openai.yaml and sweeps/azure.yaml as shipped, the base URL from the environment."""
    server = apisim.start(state=tmp_path / "apisim", speed=3000.0)
    try:
        env = openai_env(server) if name == "openai" else azure_env(server)
        for var, value in env.items():
            monkeypatch.setenv(var, value)
        spec = Path(__file__).resolve().parents[2] / "sweeps" / f"{name}.yaml"
        r = cli("run", spec)
        assert r.code == 0, r.err
        study = _study(remote_runs, f"support-{name}")
        # the default search also tells earlier epochs as trials: they train nothing
        trials = [t for t in study.trials if "ftsweep.derived_from" not in t.user_attrs]
        assert trials and all(t.state.name in ("COMPLETE", "PRUNED") for t in trials)
        assert len(request_log(server, "jobs.create")) == len(trials)
        client = MlflowClient(tracking_uri=f"sqlite:///{remote_runs / 'mlflow.db'}")
        exp = client.get_experiment_by_name(f"support-{name}")
        assert len(client.search_runs([exp.experiment_id])) == len(trials) + 1
    finally:
        server.close()


def test_a_failing_cancel_and_a_failing_mlflow_write_stay_in_their_trial(
    tmp_path: Path, remote_runs: Path, monkeypatch: pytest.MonkeyPatch, request: Any
) -> None:
    """One job fails, the first two cancels are refused (409), one MLflow write fails once:
    every trial still ends, the failed one FAIL, the others COMPLETE or PRUNED."""
    from mlflow.exceptions import MlflowException

    from orchestrator.tracking import Tracker
    from orchestrator.workflows.sweep import run_sweep

    faults = {
        "requests": [{"op": "jobs.cancel", "status": 409, "code": "conflict", "times": 2}],
        "jobs": [{"nth": 2, "code": "invalid_training_file", "message": "Bad example 3."}],
    }
    # slow enough that epochs arrive one poll at a time, so the pruner can stop jobs
    server = apisim.start(
        state=tmp_path / "apisim", speed=10.0, faults=apisim.Faults.from_dict(faults)
    )
    request.addfinalizer(server.close)
    spec = _spec(
        tmp_path,
        "openai",
        server,
        monkeypatch,
        trials=4,
        space={"n_epochs": 3},
        pruner={"name": "threshold", "options": {"upper": 0.0}},  # every trial at epoch 1
    )

    class FlakyClient(MlflowClient):
        failed = 0

        def log_batch(self, run_id: str, metrics: Any = (), *a: Any, **kw: Any) -> Any:
            if metrics and metrics[0].step > 0 and not FlakyClient.failed:
                FlakyClient.failed += 1
                raise MlflowException("database is locked", error_code="TEMPORARILY_UNAVAILABLE")
            return super().log_batch(run_id, metrics, *a, **kw)

    uri = f"sqlite:///{remote_runs / 'mlflow.db'}"
    remote_runs.mkdir(parents=True, exist_ok=True)
    tracker = Tracker(
        uri,
        "rehearsal-openai",
        remote_runs / "artifacts",
        client=FlakyClient(tracking_uri=uri),
        sleep=lambda s: None,
    )
    result = run_sweep(spec, tracker=tracker)
    states = [t.state.name for t in result.study.trials]
    assert states.count("FAIL") == 1, states
    assert set(states) <= {"FAIL", "COMPLETE", "PRUNED"} and "PRUNED" in states, states
    assert FlakyClient.failed == 1
    cancels = request_log(server, "jobs.cancel")
    assert [e["status"] for e in cancels][:2] == [409, 409] and len(cancels) >= 3
    runs = MlflowClient(tracking_uri=uri).search_runs([result.experiment_id])
    assert len(runs) == 5  # one parent, one run per trial: the failure made no second one
    status = {"COMPLETE": "FINISHED", "PRUNED": "KILLED", "FAIL": "FAILED"}
    for run in runs:
        if "mlflow.parentRunId" in run.data.tags:
            trial = result.study.trials[int(run.data.tags["ftsweep.trial"])]
            assert run.info.status == status[trial.state.name]
            assert run.data.tags["ftsweep.state"] == trial.state.name


def test_a_key_revoked_during_the_sweep_stops_it_without_charging_a_trial(
    cli, tmp_path: Path, sim, remote_runs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pre-flight check passes and the first trial trains; then every job create answers
    401. The sweep stops at once with one line and exit 1: the second trial is not FAIL (it is
    left RUNNING, so the next run re-attaches and submits it), no third trial is asked."""
    revoked = {"op": "jobs.create", "status": 401, "code": "invalid_api_key", "times": 0, "skip": 1}
    server = sim({"requests": [revoked]})
    spec = _spec(tmp_path, "openai", server, monkeypatch, trials=3, parallel=1)
    r = cli("run", spec)
    assert r.code == 1
    assert r.err.strip().splitlines()[-1] == (
        "error: openai rejected the credentials (HTTP 401 invalid_api_key): check OPENAI_API_KEY"
    )
    states = [t.state.name for t in _study(remote_runs, "rehearsal-openai").trials]
    assert states == ["COMPLETE", "RUNNING"]

"""Kill ``ftsweep learning-curve`` (SIGKILL of the CLI process) once its first job exists at
the provider, run it again, and check that it re-attached instead of training anything twice
and that the study, MLflow and the provider tell the same story; and Ctrl-C, which leaves the
job running and names the command that re-attaches to it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.request import Request, urlopen

import optuna
import pytest
import yaml
from mlflow import MlflowClient

from orchestrator import apisim
from orchestrator.apisim.server import SimServer
from orchestrator.backends.base import Hyperparameters, TrainingRequest
from orchestrator.backends.local.tasks import write_task
from orchestrator.core.attrs import TrialAttrs
from tests.apisim.fixtures import OPENAI_KEY, openai_env, request_log
from tests.reliability.stores import seed_mlflow

ROOT = Path(__file__).resolve().parents[2]
STUDY = "killed.curve.t0"


@pytest.fixture
def frozen_sim(tmp_path: Path) -> Iterator[SimServer]:
    """A simulator whose clock stands still (jobs wait, queued) until a test moves it;
    uploads are processed at once."""
    faults = apisim.Faults.from_dict({"file_processing_seconds": 0})
    server = apisim.start(state=tmp_path / "apisim", speed=0.0, faults=faults)
    yield server
    server.close()


def _clock(server: SimServer, speed: float) -> None:
    body = json.dumps({"speed": speed}).encode()
    request = Request(f"{server.url}/_sim/clock", data=body, method="POST")
    request.add_header("Content-Type", "application/json")
    with urlopen(request):  # loopback only
        pass


def _finished_sweep(tmp_path: Path, runs: Path) -> Path:
    """A sweep file and its study with one completed trial (its best: 3 epochs, batch 2)."""
    train, valid = write_task("tickets", tmp_path / "data", n_train=40, n_valid=12, fmt="chat")
    spec = tmp_path / "killed.yaml"
    options = {"poll_interval": [0.05, 0.3], "max_wait": 5}
    spec.write_text(
        yaml.safe_dump(
            {
                "name": "killed",
                "data": {"train": str(train), "valid": str(valid)},
                "backend": {"name": "openai", "model": "gpt-4o-mini", "options": options},
                "budget_usd": 5,
            }
        )
    )
    study = optuna.create_study(study_name="killed", storage=f"sqlite:///{runs / 'optuna.db'}")
    request = TrainingRequest.make(
        study="killed",
        trial=0,
        model="gpt-4o-mini",
        hyperparameters=Hyperparameters(3, 2, 0.1),
        train_file=train,
        valid_file=valid,
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
    return spec


def _command(spec: Path, fractions: str, *more: str) -> list[str]:
    args = ["learning-curve", str(spec), "--fractions", fractions, *more]
    return [sys.executable, "-m", "orchestrator", *args]


def _env(server: SimServer, runs: Path) -> dict[str, str]:
    """The CLI's environment: the simulator's key and address, the stores under ``runs``."""
    env = {**os.environ, **openai_env(server), "PYTHONPATH": str(ROOT)}
    env["FTSWEEP_RUNS_DIR"] = str(runs)
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("FTSWEEP_OPTUNA_STORAGE", None)
    return env


def _wait_for_a_job(server: SimServer, process: subprocess.Popen[Any]) -> None:
    deadline = time.monotonic() + 180
    while not request_log(server, "jobs.create"):
        assert process.poll() is None, process.communicate()[1]
        assert time.monotonic() < deadline, "no job was submitted"
        time.sleep(0.05)


def test_a_killed_learning_curve_reattaches(tmp_path: Path, frozen_sim: SimServer) -> None:
    runs = tmp_path / "mlruns"
    seed_mlflow(runs)
    env = _env(frozen_sim, runs)
    spec = _finished_sweep(tmp_path, runs)
    command = _command(spec, "0.5,1", "--json")

    first = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        _wait_for_a_job(frozen_sim, first)  # the first job exists at the provider: kill -9
        first.send_signal(signal.SIGKILL)
    finally:
        first.wait(timeout=60)
    assert first.returncode == -signal.SIGKILL
    killed = optuna.load_study(study_name=STUDY, storage=f"sqlite:///{runs / 'optuna.db'}")
    assert [t.state.name for t in killed.trials] == ["RUNNING"]  # its job is at the provider

    _clock(frozen_sim, 600.0)  # the provider's jobs move again
    again = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert "100% of the data: re-attached to job" in again.stderr
    curve = json.loads(again.stdout)
    assert [p["n_examples"] for p in curve["points"]] == [20, 40]
    assert all(p["status"] == "succeeded" and p["loss"] is not None for p in curve["points"])

    # the provider: one job per fraction, none submitted twice, none left running
    jobs = _curve_jobs(frozen_sim)
    assert len(request_log(frozen_sim, "jobs.create")) == len(jobs) == 2
    keys = [j.metadata["ftsweep_key"] for j in jobs]
    assert len(set(keys)) == 2 and all(j.status == "succeeded" for j in jobs)
    # the study: one trial per fraction, each with its job
    study = optuna.load_study(study_name=STUDY, storage=f"sqlite:///{runs / 'optuna.db'}")
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]
    assert {t.user_attrs[TrialAttrs.JOB_ID] for t in study.trials} == {j.id for j in jobs}
    assert {p["job_id"] for p in curve["points"]} == {j.id for j in jobs}
    _assert_mlflow_agrees(runs, study, curve)
    blobs = [p.read_bytes() for p in runs.rglob("*") if p.is_file()]
    assert not any(OPENAI_KEY.encode() in b for b in blobs)  # the key is in no store or log


def _curve_jobs(server: SimServer) -> list[Any]:
    from openai import OpenAI

    client = OpenAI(api_key=OPENAI_KEY, base_url=server.url + "/v1")
    jobs = list(client.fine_tuning.jobs.list(limit=100))
    return [j for j in jobs if (j.metadata or {}).get("ftsweep_study") == STUDY]


def _assert_mlflow_agrees(runs: Path, study: optuna.Study, curve: dict[str, Any]) -> None:
    """One parent run, finished, with one finished child per trial; no run RUNNING; every
    metric step logged once."""
    client = MlflowClient(tracking_uri=f"sqlite:///{runs / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("killed")
    assert experiment is not None
    every = client.search_runs([experiment.experiment_id], max_results=1000)
    assert [r.info.status for r in every if r.info.status == "RUNNING"] == []
    [parent] = [r for r in every if "mlflow.parentRunId" not in r.data.tags]
    assert parent.info.run_id == curve["mlflow_run_id"] and parent.info.status == "FINISHED"
    assert parent.data.tags["ftsweep.kind"] == "learning-curve"
    assert parent.data.tags["ftsweep.answer"] == curve["answer"]
    children = [r for r in every if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(children) == len(every) - 1
    by_trial = {int(r.data.tags["ftsweep.trial"]): r for r in children}
    assert len(by_trial) == len(children) == len(study.trials)  # one run per trial
    assert sorted(r.data.tags["ftsweep.fraction"] for r in children) == ["0.5", "1"]
    for trial in study.trials:
        run = by_trial[trial.number]
        assert run.info.status == "FINISHED" and run.data.tags["ftsweep.state"] == "COMPLETE"
        assert run.data.metrics["objective"] == trial.value
        assert [m.value for m in client.get_metric_history(run.info.run_id, "objective")] == [
            trial.value
        ]
        for name in ("train_loss", "valid_loss", "epoch"):
            steps = [m.step for m in client.get_metric_history(run.info.run_id, name)]
            assert steps, name
            twice = [s for s, n in Counter(steps).items() if n > 1]
            assert twice == [], f"trial {trial.number}: {name} steps {twice[:5]} logged twice"
        steps = sorted(m.step for m in client.get_metric_history(run.info.run_id, "train_loss"))
        assert steps == list(range(steps[0], steps[-1] + 1))  # none lost either


def test_ctrl_c_leaves_the_job_running_for_the_next_run(
    tmp_path: Path, frozen_sim: SimServer
) -> None:
    runs = tmp_path / "mlruns"
    seed_mlflow(runs)
    env = _env(frozen_sim, runs)
    spec = _finished_sweep(tmp_path, runs)
    command = _command(spec, "1")
    first = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        _wait_for_a_job(frozen_sim, first)  # the job exists at the provider: Ctrl-C
        time.sleep(0.5)  # past the submit's return: the job id is known
        first.send_signal(signal.SIGINT)
        _, err = first.communicate(timeout=60)
    finally:
        if first.poll() is None:
            first.kill()
    [job] = _curve_jobs(frozen_sim)
    assert first.returncode == 130, err
    assert f"1 job(s) still running at openai (trial 0: job {job.id})" in err
    assert f"`ftsweep learning-curve {spec}` re-attaches to them" in err
    assert "ftsweep run" not in err
    assert job.status not in ("succeeded", "failed", "cancelled")  # not cancelled: paid for

    _clock(frozen_sim, 600.0)
    again = subprocess.run(
        [*command, "--json"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert again.returncode == 0, again.stderr
    [point] = json.loads(again.stdout)["points"]
    assert point["status"] == "succeeded" and point["job_id"] == job.id
    assert len(request_log(frozen_sim, "jobs.create")) == 1

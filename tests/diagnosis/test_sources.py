"""``ftsweep diagnose`` on a job at a provider (apisim, through the real ``openai`` SDK) and
on an MLflow run of a real MLflow store."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from orchestrator import apisim
from orchestrator.apisim.server import SimServer
from orchestrator.backends.local.tasks import write_task
from orchestrator.backends.remote.resultfile import read_result_csv
from tests.apisim.fixtures import AZURE_KEY, AZURE_VERSION, OPENAI_KEY, azure_env, openai_env
from tests.conftest import Result

Cli = Callable[..., Result]
CORPUS = Path(__file__).parent / "corpus"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[SimServer]:
    sim = apisim.start(state=tmp_path / "apisim", speed=600.0)
    yield sim
    sim.close()


@pytest.fixture
def runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "mlruns"
    monkeypatch.setenv("FTSWEEP_RUNS_DIR", str(root))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return root


def _sdk_job(provider: str, server: SimServer, train: Path, valid: Path) -> Any:
    """A job created with the SDK directly, as a user would (not by ftsweep)."""
    from openai import AzureOpenAI, OpenAI

    client = (
        OpenAI(api_key=OPENAI_KEY, base_url=server.url + "/v1")
        if provider == "openai"
        else AzureOpenAI(azure_endpoint=server.url, api_key=AZURE_KEY, api_version=AZURE_VERSION)
    )
    with train.open("rb") as f:
        train_id = client.files.create(file=f, purpose="fine-tune").id
    with valid.open("rb") as f:
        valid_id = client.files.create(file=f, purpose="fine-tune").id
    job = client.fine_tuning.jobs.create(
        model="gpt-4o-mini",
        training_file=train_id,
        validation_file=valid_id,
        hyperparameters={"n_epochs": 3, "batch_size": 2, "learning_rate_multiplier": 0.5},
    )
    deadline = time.monotonic() + 120
    while job.status not in ("succeeded", "failed", "cancelled"):
        assert time.monotonic() < deadline, f"job {job.id} still {job.status}"
        time.sleep(0.2)
        job = client.fine_tuning.jobs.retrieve(job.id)
    assert job.status == "succeeded", job.error
    return client, job


@pytest.mark.parametrize("provider", ["openai", "azure"])
def test_a_job_id_through_the_sdk(
    provider: str,
    server: SimServer,
    runs: Path,
    tmp_path: Path,
    cli: Cli,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    env = openai_env(server) if provider == "openai" else azure_env(server)
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    train, valid = write_task("tickets", tmp_path / "data", n_train=40, n_valid=12, fmt="chat")
    spec = tmp_path / "openai.yaml"
    spec.write_text(
        yaml.safe_dump(
            {
                "name": "rehearsal",
                "data": {"train": str(train), "valid": str(valid)},
                "backend": {"name": provider, "model": "gpt-4o-mini"},
            }
        )
    )
    client, job = _sdk_job(provider, server, train, valid)

    r = cli("diagnose", job.id, "--spec", spec, "--json")
    assert r.code == 0, r.err
    data = json.loads(r.out)
    assert data["source"] == {"kind": "job", "id": job.id, "status": "succeeded"}
    assert data["label"] in {"overfit", "underfit", "diverged", "good"}
    assert data["curve"]["epochs"] == 3
    assert OPENAI_KEY not in r.out + r.err and AZURE_KEY not in r.out + r.err

    # the job's result file, downloaded with the SDK, tells the same story
    content = client.files.content(job.result_files[0]).read()
    path = tmp_path / "results.csv"
    path.write_bytes(content)
    curves = read_result_csv(path)
    assert len(curves["train_loss"]) == data["curve"]["steps"]
    by_file = json.loads(cli("diagnose", path, "--json").out)
    assert by_file["label"] == data["label"]
    assert by_file["evidence"] == data["evidence"]

    missing = cli("diagnose", "ftjob-doesnotexist", "--spec", spec)
    assert (missing.code, missing.out) == (2, "")
    assert missing.err == f"error: {spec}: no job ftjob-doesnotexist at backend {provider}\n"


def _mlflow_run(store: Path, curve: str, tags: dict[str, str], params: dict[str, str]) -> str:
    """A run in a real MLflow store, logged the way ftsweep logs a trial (one batch)."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric

    store.mkdir(parents=True, exist_ok=True)
    client = MlflowClient(tracking_uri=f"sqlite:///{store / 'mlflow.db'}")
    exp = client.create_experiment("outside", artifact_location=str(store / "artifacts"))
    run = client.create_run(exp, tags=tags)
    metrics = [
        Metric(name, value, 0, step)
        for name, points in read_result_csv(CORPUS / f"{curve}.csv").items()
        for step, value in points
    ]
    client.log_batch(run.info.run_id, metrics=metrics[:1000])
    client.log_batch(run.info.run_id, metrics=metrics[1000:])
    for key, value in params.items():
        client.log_param(run.info.run_id, key, value)
    client.set_terminated(run.info.run_id)
    return str(run.info.run_id)


def test_an_mlflow_run(runs: Path, cli: Cli) -> None:
    run_id = _mlflow_run(
        runs, "reverse-lr3-e40-b8", {}, {"n_epochs": "40", "learning_rate_multiplier": "3.0"}
    )
    r = cli("diagnose", run_id)
    assert r.code == 0, r.err
    lines = r.out.splitlines()
    assert lines[:3] == [
        "label: overfit",
        "advice: stop earlier: n_epochs=25 had the lowest validation loss",
        "evidence: min_valid_loss=1.544, final_valid_loss=1.688, rise=0.0936, best_epoch=25",
    ]
    assert lines[3] == f"curve: 800 steps, 40 epoch(s) (mlflow {run_id}, FINISHED)"
    data = json.loads(cli("diagnose", run_id, "--json").out)
    assert data["hyperparameters"] == {"n_epochs": 40, "learning_rate_multiplier": 3.0}


def test_a_pruned_trial_is_pruned_at_its_epoch(runs: Path, cli: Cli) -> None:
    tags = {"ftsweep.state": "PRUNED", "ftsweep.pruned_at_epoch": "2"}
    run_id = _mlflow_run(runs, "reverse-lr1-e4-b8", tags, {"n_epochs": "4"})
    data = json.loads(cli("diagnose", run_id, "--json").out)
    assert data["label"] == "unknown"
    assert data["recommendation"].startswith("pruned at epoch 2 of 4: worse than the other")
    assert data["stopped"] == {"reason": "pruned", "epoch": 2}
    assert data["source"]["status"] == "PRUNED"


def test_an_unknown_run_and_a_parent_run(runs: Path, cli: Cli) -> None:
    _mlflow_run(runs, "reverse-lr1-e1-b8", {}, {})
    uri = f"sqlite:///{runs / 'mlflow.db'}"
    r = cli("diagnose", "f" * 32, "--tracking-uri", uri)
    assert (r.code, r.out, r.err) == (2, "", f"error: no MLflow run {'f' * 32} in {uri}\n")
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    parent = client.create_run(client.get_experiment_by_name("outside").experiment_id)
    r = cli("diagnose", parent.info.run_id)
    assert r.code == 2
    assert "has no loss curves (a sweep's parent run? pass a trial's run)" in r.err

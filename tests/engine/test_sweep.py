"""`ftsweep run` end to end on the tiny local model: MLflow, Optuna and the report agree."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
from mlflow import MlflowClient

from tests.engine.conftest import SweepFactory


def _mlflow(runs_dir: Path) -> MlflowClient:
    return MlflowClient(tracking_uri=f"sqlite:///{runs_dir / 'mlflow.db'}")


def test_run_logs_parent_and_children_and_report_agrees(
    cli, make_sweep: SweepFactory, runs_dir: Path
) -> None:
    spec = make_sweep(trials=3, parallel=2)
    r = cli("run", spec)
    assert r.code == 0, r.err
    assert "best: trial" in r.out
    assert "workflowType=machine_learning" in r.err

    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{runs_dir / 'optuna.db'}")
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 3

    client = _mlflow(runs_dir)
    exp = client.get_experiment_by_name("tiny")
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1 and len(children) == 3
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parents[0].info.run_id}
    parent = parents[0]
    assert parent.data.params["n_train_examples"] == "48"
    assert [i.dataset.digest for i in parent.inputs.dataset_inputs]  # datasets with fingerprints
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id, "report")}
    assert {"report/trials.csv", "report/report.html"} <= artifacts
    page = Path(client.download_artifacts(parent.info.run_id, "report/report.html")).read_text()
    for title in ("Optimization history", "Parallel coordinates", "Training curves"):
        assert f"<h2>{title}</h2><div class='plot'><svg" in page  # the plots, inline

    report = json.loads(cli("report", spec, "--format", "json").out)
    by_trial = {row["trial"]: row for row in report}
    for child in children:
        n = int(child.data.tags["ftsweep.trial"])
        trial = study.trials[n]
        row = by_trial[n]
        assert child.data.params["batch_size"] == str(row["batch_size"])
        assert int(row["batch_size"]) == trial.params["batch_size"]
        assert child.data.tags["ftsweep.state"] == row["state"] == "COMPLETE"
        assert child.data.tags["ftsweep.diagnosis"] == row["diagnosis"]
        assert child.data.tags["ftsweep.job_id"] == row["job_id"]
        assert abs(row["value"] - trial.value) < 1e-12
        history = client.get_metric_history(child.info.run_id, "train_loss")
        steps = [m.step for m in history]
        assert len(steps) == len(set(steps)) > 5  # every step once
        assert client.get_metric_history(child.info.run_id, "full_valid_loss")
        assert "loss_curve.svg" in {a.path for a in client.list_artifacts(child.info.run_id)}
    best = json.loads(cli("best", spec).out)
    assert best["value"] == study.best_value
    assert best["trial"] == study.best_trial.number
    assert [row["best"] for row in report].count(True) == 1
    versions = client.search_model_versions("name = 'tiny'")
    assert len(versions) == 1 and versions[0].run_id == best["mlflow_run_id"]
    _check_ui(spec, exp.experiment_id)


def _check_ui(spec: Path, experiment_id: str) -> None:
    """`ftsweep ui` serves the sweep's store and prints the link to its runs."""
    import socket
    import subprocess
    import sys
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "orchestrator", "ui", str(spec), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        link = proc.stdout.readline().strip()
        assert link.startswith(f"http://127.0.0.1:{port}/#/experiments/{experiment_id}/runs?")
        assert "workflowType=machine_learning" in link
        # the link comes once the server answers: no waiting here
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as health:
            assert health.status == 200
        body = json.dumps({"experiment_ids": [experiment_id]}).encode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/ajax-api/2.0/mlflow/runs/search",
            data=body,
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            runs = json.load(response)["runs"]
        assert len(runs) == 4  # the parent and three trials, as the UI lists them
    finally:
        proc.terminate()
        proc.wait(timeout=60)  # it gives its server 10 s, then kills it


def test_ui_refuses_a_port_something_else_listens_on(
    cli, make_sweep: SweepFactory, runs_dir: Path
) -> None:
    import socket

    spec = make_sweep(trials=1)
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        r = cli("ui", spec, "--port", str(port))
    assert r.code == 2
    assert r.out == ""  # no link to whatever listens there
    assert r.err.strip().startswith(f"error: port {port} on 127.0.0.1 is already in use")
    assert r.err.strip().endswith("pick another with --port")


def test_rerun_resumes_without_retraining(cli, make_sweep: SweepFactory, runs_dir: Path) -> None:
    spec = make_sweep(trials=2)
    assert cli("run", spec).code == 0
    jobs_before = sorted((runs_dir / "backends/local/jobs").iterdir())
    r = cli("run", spec, "--trials", "3")
    assert r.code == 0, r.err
    jobs_after = sorted((runs_dir / "backends/local/jobs").iterdir())
    assert len(jobs_before) == 2 and len(jobs_after) == 3
    status = cli("status", spec)
    assert "3 complete" in status.out

"""The MLflow UI as a user sees it, in headless Chromium, after a finished sweep: the runs page
lists the parent and its trials in the model-training view, and a trial's page shows its
objective and diagnosis. Screenshots are kept under test-artifacts/."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

from mlflow import MlflowClient

from orchestrator.tracking import run_link
from tests.browser import chromium, page_text
from tests.engine.conftest import SweepFactory


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_the_mlflow_ui_shows_the_sweep(cli, make_sweep: SweepFactory, runs_dir: Path) -> None:
    chromium()  # skip (or fail under CI) before training anything
    spec = make_sweep(name="uisweep", trials=2)
    assert cli("run", spec).code == 0
    client = MlflowClient(tracking_uri=f"sqlite:///{runs_dir / 'mlflow.db'}")
    exp = client.get_experiment_by_name("uisweep")
    runs = client.search_runs([exp.experiment_id])
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(children) == 2
    best = next(r for r in children if r.data.tags.get("ftsweep.best") == "true")

    port = _free_port()
    ui = subprocess.Popen(
        [sys.executable, "-m", "orchestrator", "ui", str(spec), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert ui.stdout is not None
        link = ui.stdout.readline().strip()  # printed once the server answers
        assert link.startswith(f"http://127.0.0.1:{port}/")

        runs_page = page_text(link, screenshot="mlflow-runs.png")
        assert "Model training" in runs_page and "Evaluations" not in runs_page
        assert "uisweep" in runs_page  # the parent
        for child in children:
            assert child.info.run_name in runs_page  # t000 ep=... bs=... lr=...
        assert "2 matching runs" in runs_page or "3 matching runs" in runs_page

        url = run_link(f"http://127.0.0.1:{port}", exp.experiment_id, best.info.run_id)
        run_page = page_text(url, screenshot="mlflow-best-trial.png", size="1600,1400")
        assert best.info.run_name in run_page
        assert "Evaluations" not in run_page  # the model-training view, not GenAI's
        assert "Parent run uisweep" in run_page
        diagnosis = best.data.tags["ftsweep.diagnosis"]
        assert f"ftsweep.diagnosis : {diagnosis}" in run_page
        assert f"COMPLETE: {diagnosis}" in run_page  # the description: the full diagnosis
        assert f"objective {best.data.metrics['objective']}" in run_page
        for name in ("n_epochs", "batch_size", "learning_rate_multiplier"):
            assert f"{name} {best.data.params[name]}" in run_page
    finally:
        ui.terminate()
        ui.wait(timeout=60)

"""What users see after a finished sweep, in headless Chromium: the MLflow UI's runs page
lists the parent and its trials in the model-training view, a trial's page shows its objective
and diagnosis, and the HTML report opens offline with every plot. Screenshots are kept under
test-artifacts/ (one sweep is trained for all of it)."""

from __future__ import annotations

import re
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
    spec = make_sweep(name="uisweep", trials=3)
    assert cli("run", spec).code == 0
    client = MlflowClient(tracking_uri=f"sqlite:///{runs_dir / 'mlflow.db'}")
    exp = client.get_experiment_by_name("uisweep")
    runs = client.search_runs([exp.experiment_id])
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(children) == 3
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
        assert "4 matching runs" in runs_page  # the parent and its three trials

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
    _check_html_report(cli, spec, runs_dir, best.data.tags["ftsweep.trial"])


def _check_html_report(cli, spec: Path, runs_dir: Path, best_trial: str) -> None:
    out = runs_dir.parent / "report.html"
    r = cli("report", spec, "--format", "html", "--out", out)
    assert r.code == 0, r.err
    page = out.read_text()
    # self-contained: nothing fetched from anywhere (SVG's xmlns is a name, not a fetch)
    assert not re.search(r"<(script|link|img|iframe)\b", page, flags=re.I)
    assert not re.search(r"""(src|href)\s*=\s*['"]?(https?:)?//""", page, flags=re.I)
    sections = re.split(r"<h2>", page)
    plots = {
        "Optimization history",
        "Parameter importances",
        "Parallel coordinates",
        "Slice plots",
        "Training curves",
    }
    for title in plots:
        body = next(s for s in sections if s.startswith(title + "</h2>"))
        assert "<svg" in body, f"{title}: no plot"
    assert re.search(rf"<tr class='best'><td>{best_trial}</td>", page)
    assert "Next sweep" in page and "Summary" in page
    text = page_text(out.resolve().as_uri(), screenshot="report.png", size="1300,4200")
    assert "Sweep uisweep" in text and "best full_valid_loss" in text

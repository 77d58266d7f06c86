"""The end of a sweep, as ``ftsweep run`` does it in a fresh process: neither matplotlib nor
scikit-learn (Optuna's fANOVA importances) is imported, where importing and driving them was
most of a sweep's once-per-sweep CPU (issue 25), and what they drew is still there: each
trial's loss curve in its MLflow run, every plot of the report on the parent run."""

from __future__ import annotations

import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

from mlflow import MlflowClient

from orchestrator.testing import instant as fakes
from tests.engine.test_loop import _spec
from tests.reliability.stores import seed_mlflow

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("matplotlib", "sklearn", "optuna.importance", "optuna.visualization")
PROBE = (
    "import sys, runpy\n"
    "sys.argv = ['ftsweep', 'run', sys.argv[1]]\n"
    "try:\n"
    "    runpy.run_module('orchestrator', run_name='__main__')\n"
    "finally:\n"
    f"    print('HEAVY', sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
)


def test_a_sweep_ends_without_matplotlib_or_scikit_learn(tmp_path: Path) -> None:
    site, runs = tmp_path / "site", tmp_path / "mlruns"
    fakes.install(site)
    seed_mlflow(runs)  # an empty, migrated store: the test is about the end, not migrations
    spec = _spec(tmp_path, options={"poll_seconds": 0.0}, trials=3, parallel=1)
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI",)}
    env.pop("FTSWEEP_OPTUNA_STORAGE", None)
    env["FTSWEEP_RUNS_DIR"] = str(runs)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(site)])
    out = subprocess.run(
        [sys.executable, "-c", PROBE, str(spec)], env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "HEAVY []" in out.stdout, out.stdout

    client = MlflowClient(tracking_uri=f"sqlite:///{runs / 'mlflow.db'}")
    exp = client.get_experiment_by_name("inst")
    runs_ = client.search_runs([exp.experiment_id])
    parent = next(r for r in runs_ if "mlflow.parentRunId" not in r.data.tags)
    children = [r for r in runs_ if "mlflow.parentRunId" in r.data.tags]
    assert len(children) == 3
    for child in children:
        assert child.data.tags["ftsweep.loss_curve"] == "loss_curve.svg"
        path = client.download_artifacts(child.info.run_id, "loss_curve.svg", str(tmp_path))
        svg = ET.fromstring(Path(path).read_text().split("\n", 1)[1])
        titles = {t.text for t in svg.iter("{http://www.w3.org/2000/svg}text")}
        assert f"trial {child.data.tags['ftsweep.trial']} (COMPLETE)" in titles
    page = client.download_artifacts(parent.info.run_id, "report/report.html", str(tmp_path))
    html = Path(page).read_text()
    for title in ("Optimization history", "Parameter importances", "Training curves"):
        assert f"<h2>{title}</h2><div class='plot'><svg" in html, title
    best = [c.info.run_id for c in children if c.data.tags.get("ftsweep.best") == "true"]
    versions = client.search_model_versions("name = 'inst'")
    assert [v.run_id for v in versions] == best and len(best) == 1  # registered, as before

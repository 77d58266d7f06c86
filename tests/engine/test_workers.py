"""Several `ftsweep run` processes share one study (a journal file here; PostgreSQL scaled out)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import optuna
from mlflow import MlflowClient
from optuna.storages.journal import JournalFileBackend

from tests.engine.conftest import SweepFactory


def test_two_workers_share_the_study_and_train_nothing_twice(
    make_sweep: SweepFactory, runs_dir: Path, tmp_path: Path
) -> None:
    journal = tmp_path / "study.journal"
    spec = make_sweep(
        name="shared", trials=4, n_train=240, n_valid=24, storage={"optuna": f"journal:{journal}"}
    )
    cmd = [sys.executable, "-m", "orchestrator", "run", str(spec)]
    env = {**os.environ}
    workers = [
        subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    for w in workers:
        _, err = w.communicate(timeout=300)
        assert w.returncode == 0, err

    storage = optuna.storages.JournalStorage(JournalFileBackend(str(journal)))
    study = optuna.load_study(study_name="shared", storage=storage)
    done = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert len(done) == 4
    trained = [t for t in done if "ftsweep.job_id" in t.user_attrs]
    configs = {t.user_attrs["ftsweep.config_hash"] for t in done}
    assert len(trained) == len(configs)  # each configuration trained once
    assert len(list((runs_dir / "backends/local/jobs").iterdir())) == len(trained)
    assert len({t.user_attrs["ftsweep.worker"] for t in trained}) == 2  # both trained

    client = MlflowClient(tracking_uri=f"sqlite:///{runs_dir / 'mlflow.db'}")
    exp = client.get_experiment_by_name("shared")
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1
    assert all(
        r.data.tags["mlflow.parentRunId"] == parents[0].info.run_id
        for r in runs
        if r not in parents
    )

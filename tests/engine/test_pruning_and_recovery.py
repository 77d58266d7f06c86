"""Pruning cancels jobs and saves steps; a killed `ftsweep run` is resumed without retraining."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
from mlflow import MlflowClient

from tests.engine.conftest import SweepFactory

SPACE = {
    "n_epochs": 4,
    "batch_size": 8,
    "learning_rate_multiplier": {"low": 0.01, "high": 3.0, "log": True},
    "prompt_loss_weight": 0.1,
}


def _study(runs_dir: Path, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{runs_dir / 'optuna.db'}")


def _steps(study: optuna.Study) -> int:
    return sum(int(t.user_attrs.get("ftsweep.steps", 0)) for t in study.trials)


def test_pruned_jobs_are_cancelled_and_use_fewer_steps(
    cli, make_sweep: SweepFactory, runs_dir: Path
) -> None:
    # epochs long enough (150 steps) that a pruned job is cancelled before it ends
    common = {
        "space": SPACE,
        "trials": 4,
        "sampler": {"name": "random", "seed": 3},
        "n_train": 1200,
        "n_valid": 24,
    }
    spec = make_sweep(
        name="pruned", pruner={"name": "median", "options": {"n_startup_trials": 1}}, **common
    )
    assert cli("run", spec).code == 0
    pruned_study = _study(runs_dir, "pruned")
    states = [t.state.name for t in pruned_study.trials]
    assert "PRUNED" in states, states
    for t in pruned_study.trials:
        if t.state.name == "PRUNED":
            assert t.user_attrs["ftsweep.job_status"] == "cancelled"
            status = json.loads(
                (
                    runs_dir
                    / "backends/local/jobs"
                    / t.user_attrs["ftsweep.job_id"]
                    / "status.json"
                ).read_text()
            )
            assert status["status"] == "cancelled"

    baseline = make_sweep(name="unpruned", **common)
    assert cli("run", baseline).code == 0
    full_study = _study(runs_dir, "unpruned")
    assert [t.state.name for t in full_study.trials] == ["COMPLETE"] * 4
    assert _steps(pruned_study) < _steps(full_study)


def test_kill_9_then_rerun_reattaches_and_trains_nothing_twice(
    make_sweep: SweepFactory, runs_dir: Path
) -> None:
    spec = make_sweep(
        name="crash", trials=2, n_train=1200, n_valid=24, space={**SPACE, "n_epochs": 3}
    )
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "orchestrator", "run", str(spec)]
    first = subprocess.Popen(
        cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env
    )
    assert first.stderr is not None
    deadline = time.monotonic() + 120
    for line in first.stderr:  # wait until trial 0 has logged an epoch
        if "trial 0 epoch 1" in line or time.monotonic() > deadline:
            break
    first.send_signal(signal.SIGKILL)
    first.wait()
    study = _study(runs_dir, "crash")
    assert study.trials[0].state.name == "RUNNING"
    job = study.trials[0].user_attrs["ftsweep.job_id"]

    second = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert second.returncode == 0, second.stderr
    assert f"trial 0: re-attached to job {job}" in second.stderr
    study = _study(runs_dir, "crash")
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]
    assert study.trials[0].user_attrs["ftsweep.job_id"] == job
    assert len(list((runs_dir / "backends/local/jobs").iterdir())) == 2  # nothing trained twice

    client = MlflowClient(tracking_uri=f"sqlite:///{runs_dir / 'mlflow.db'}")
    run_id = study.trials[0].user_attrs["ftsweep.mlflow_run_id"]
    steps = [m.step for m in client.get_metric_history(run_id, "train_loss")]
    assert sorted(steps) == list(range(1, max(steps) + 1))  # none lost, none twice
    assert len(client.get_metric_history(run_id, "full_valid_loss")) == 3

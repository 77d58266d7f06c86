"""Diagnosis on real curves from the tiny local model."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
from mlflow import MlflowClient

from orchestrator.analysis.diagnosis import diagnose
from orchestrator.backends.base import Hyperparameters, TrainingRequest
from orchestrator.backends.local import LocalBackend, LocalOptions
from orchestrator.backends.local.tasks import write_task
from orchestrator.testing import poll_until
from tests.engine.conftest import SweepFactory


def _curves(tmp_path: Path, task: str, hp: Hyperparameters, n_train: int) -> dict:
    train, valid = write_task(task, tmp_path / task, n_train=n_train, n_valid=40)
    backend = LocalBackend(tmp_path / "work", LocalOptions(torch_threads=1))
    request = TrainingRequest.make(
        study="diag",
        trial=0,
        model="tiny",
        hyperparameters=hp,
        train_file=train,
        valid_file=valid,
        seed=0,
    )
    polled = poll_until(backend, backend.submit(request))
    assert polled.last.status.value == "succeeded", polled.last.error
    names = {p.name for p in polled.points}
    return {name: polled.series(name) for name in names}


def test_random_labels_are_diagnosed_as_overfit(tmp_path: Path, tiny_model: Path) -> None:
    hp = Hyperparameters(
        n_epochs=24, batch_size=8, learning_rate_multiplier=3.0, prompt_loss_weight=0.1
    )
    curves = _curves(tmp_path, "random_labels", hp, n_train=160)
    d = diagnose(curves, hp.n_epochs, hp.as_dict())
    assert d.label == "overfit", d.summary()
    assert d.best_epoch is not None and d.best_epoch < 24
    assert f"n_epochs={d.best_epoch}" in d.recommendation


def test_one_epoch_is_diagnosed_as_underfit(tmp_path: Path, tiny_model: Path) -> None:
    hp = Hyperparameters(
        n_epochs=1, batch_size=8, learning_rate_multiplier=1.0, prompt_loss_weight=0.1
    )
    curves = _curves(tmp_path, "reverse", hp, n_train=400)
    d = diagnose(curves, hp.n_epochs, hp.as_dict())
    assert d.label == "underfit", d.summary()
    assert "n_epochs > 1" in d.recommendation


def test_diagnose_rereads_a_sweeps_trials_from_mlflow_and_the_backend(
    cli, make_sweep: SweepFactory, runs_dir: Path
) -> None:
    """`ftsweep diagnose` on a trial's MLflow run and on its job gives the sweep's own
    diagnosis; the sweep's advice names the trial far worse than the best at the same epoch."""
    spec = make_sweep(
        name="diag",
        trials=2,
        enqueue=[
            {"n_epochs": 3, "batch_size": 4, "learning_rate_multiplier": 3.0},
            {"n_epochs": 3, "batch_size": 12, "learning_rate_multiplier": 0.5},
        ],
    )
    r = cli("run", spec)
    assert r.code == 0, r.err
    study = optuna.load_study(study_name="diag", storage=f"sqlite:///{runs_dir / 'optuna.db'}")
    best, slow = study.trials
    assert study.best_trial.number == best.number
    # at epoch 3 the slow trial's loss is far above the best one's: under-trained relative to it
    assert slow.intermediate_values[3] > best.intermediate_values[3] * 1.2
    assert (
        f"next: trial {slow.number} is under-trained relative to trial {best.number}: at epoch 3"
        in r.out
    )
    assert "trial 0 had batch_size=4, learning_rate_multiplier=3" in r.out

    client = MlflowClient(tracking_uri=f"sqlite:///{runs_dir / 'mlflow.db'}")
    exp = client.get_experiment_by_name("diag")
    children = [
        run
        for run in client.search_runs([exp.experiment_id])
        if "mlflow.parentRunId" in run.data.tags
    ]
    assert len(children) == 2
    for child in children:
        tags = child.data.tags
        by_run = cli("diagnose", child.info.run_id, "--json")
        assert by_run.code == 0, by_run.err
        data = json.loads(by_run.out)
        assert data["label"] == tags["ftsweep.diagnosis"]
        assert data["recommendation"] == tags["ftsweep.recommendation"]
        assert data["source"] == {"kind": "mlflow", "id": child.info.run_id, "status": "COMPLETE"}
        assert data["hyperparameters"]["n_epochs"] == 3
        by_job = cli("diagnose", tags["ftsweep.job_id"], "--spec", spec, "--json")
        assert by_job.code == 0, by_job.err
        job = json.loads(by_job.out)
        assert job["label"] == tags["ftsweep.diagnosis"]
        assert job["source"] == {"kind": "job", "id": tags["ftsweep.job_id"], "status": "succeeded"}
        assert job["curve"]["epochs"] == 3
    missing = cli("diagnose", "job-does-not-exist", "--spec", spec)
    assert (missing.code, missing.out) == (2, "")
    assert missing.err == f"error: {spec}: no job job-does-not-exist at backend local\n"


def test_a_cancelled_local_job_is_stopped_at_its_epoch(
    cli, make_sweep: SweepFactory, runs_dir: Path
) -> None:
    from orchestrator.plan.sweep import plan_sweep

    spec = make_sweep(name="cancel", n_train=400)
    plan = plan_sweep(spec)
    backend = plan.make_backend(runs_dir / "backends" / "local")
    hp = Hyperparameters(n_epochs=20, batch_size=4, learning_rate_multiplier=1.0)
    handle = backend.submit(plan.request(hp, trial=0))
    first_epoch = poll_until(backend, handle, lambda p: bool(p.series("full_valid_loss")))
    backend.cancel(handle)
    polled = poll_until(backend, handle, polled=first_epoch)
    assert polled.last.status.value == "cancelled"
    done = len(polled.series("full_valid_loss"))
    assert 1 <= done < 20

    r = cli("diagnose", handle.job_id, "--spec", spec, "--json")
    assert r.code == 0, r.err
    data = json.loads(r.out)
    assert data["stopped"] == {"reason": "cancelled", "epoch": done}
    assert data["label"] == "unknown"
    assert data["recommendation"] == (
        f"cancelled at epoch {done}: stopped before the end, so not diagnosed"
    )

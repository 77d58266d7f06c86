"""Diagnosis on real curves from the tiny local model."""

from __future__ import annotations

from pathlib import Path

from orchestrator.backends.base import Hyperparameters, TrainingRequest
from orchestrator.backends.local import LocalBackend, LocalOptions
from orchestrator.backends.local.tasks import write_task
from orchestrator.diagnosis import diagnose
from orchestrator.testing import poll_until


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

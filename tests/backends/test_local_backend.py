"""The local backend end to end: real worker subprocesses training the tiny model."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator.backends.base import Hyperparameters, JobStatus, TrainingRequest
from orchestrator.backends.local import LocalBackend, LocalOptions
from orchestrator.backends.local.jobfiles import JobFolder
from orchestrator.backends.local.tasks import write_task
from orchestrator.core.errors import DataError, UnsupportedParameterError
from orchestrator.testing import Polled, poll_until
from tests.backends.conftest import LOCAL_OPTIONS, _kill_leftovers

OVERFIT_EPOCHS = 20
LEARN_EPOCHS = 10


def _backend(workdir: Path) -> LocalBackend:
    return LocalBackend(workdir, LocalOptions.parse(LOCAL_OPTIONS))


def _epoch_curve(polled: Polled, name: str) -> list[float]:
    """``name`` at each epoch's end, in epoch order."""
    return [v for _, v in polled.series(name)]


@pytest.fixture(scope="module")
def curves(
    tiny_model: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Polled]]:
    """Two jobs run side by side: random labels (must over-fit), reverse (must learn)."""
    root = tmp_path_factory.mktemp("curves")
    backend = _backend(root / "work")
    noise = write_task("random_labels", root, n_train=80, n_valid=40, seed=0)
    reverse = write_task("reverse", root, n_train=400, n_valid=40, seed=0)
    handles = {
        "random_labels": backend.submit(
            TrainingRequest("overfit", "tiny", Hyperparameters(OVERFIT_EPOCHS, 8, 3.0, 0.1), *noise)
        ),
        "reverse": backend.submit(
            TrainingRequest(
                "learn",
                "tiny",
                Hyperparameters(LEARN_EPOCHS, 16, 5.0, 0.1),
                *reverse,
                options={"checkpoints": 2},
            )
        ),
    }
    try:
        yield {task: poll_until(backend, h, timeout_s=300) for task, h in handles.items()}
    finally:
        _kill_leftovers(root / "work")


def test_random_labels_over_fit(curves: dict[str, Polled]) -> None:
    polled = curves["random_labels"]
    assert polled.last.status is JobStatus.SUCCEEDED, polled.last.error
    valid = _epoch_curve(polled, "full_valid_loss")
    assert len(valid) == OVERFIT_EPOCHS
    best = valid.index(min(valid))
    # the minimum comes early and the curve climbs clearly after it
    assert best < OVERFIT_EPOCHS // 2, valid
    assert valid[-1] > min(valid) + 0.15, valid
    assert min(valid[best + 1 :]) >= min(valid)
    # while the training loss keeps falling: memorisation
    train = [v for _, v in polled.series("train_loss")]
    steps_per_epoch = len(train) // OVERFIT_EPOCHS
    assert sum(train[-steps_per_epoch:]) / steps_per_epoch < min(valid) - 0.3


def test_reverse_words_is_learned(curves: dict[str, Polled]) -> None:
    polled = curves["reverse"]
    assert polled.last.status is JobStatus.SUCCEEDED, polled.last.error
    loss = _epoch_curve(polled, "full_valid_loss")
    accuracy = _epoch_curve(polled, "full_valid_mean_token_accuracy")
    assert len(loss) == len(accuracy) == LEARN_EPOCHS
    assert loss[-1] < loss[0] - 0.3, loss
    assert min(loss) == min(loss[-3:]), loss
    assert accuracy[-1] > accuracy[0] + 0.03, accuracy


def test_metric_points_are_complete(curves: dict[str, Polled]) -> None:
    polled = curves["reverse"]
    total = polled.last.total_steps
    assert total == LEARN_EPOCHS * 400 // 16
    for name in ("train_loss", "train_mean_token_accuracy", "epoch"):
        assert [s for s, _ in polled.series(name)] == list(range(1, total + 1))
    epochs = dict(polled.series("epoch"))
    full_steps = [s for s, _ in polled.series("full_valid_loss")]
    assert [epochs[s] for s in full_steps] == [float(e) for e in range(1, LEARN_EPOCHS + 1)]
    periodic = [s for s, _ in polled.series("valid_loss")]
    assert 10 <= len(periodic) <= 21 and periodic[-1] == total
    assert polled.last.trained_tokens and polled.last.trained_tokens > 0
    model_dir = Path(polled.last.fine_tuned_model or "")
    assert (model_dir / "config.json").is_file() and (model_dir / "tokenizer.json").is_file()


LAUNCHER = """
import json, sys, time
from pathlib import Path
from orchestrator.backends.base import Hyperparameters, TrainingRequest
from orchestrator.backends.local import LocalBackend, LocalOptions
workdir, train, valid = sys.argv[1:]
backend = LocalBackend(Path(workdir), LocalOptions(torch_threads=1))
hp = Hyperparameters(6, 4, 1.0, 0.1)
handle = backend.submit(TrainingRequest("survivor", "tiny", hp, Path(train), Path(valid)))
print(json.dumps({"job_id": handle.job_id}), flush=True)
time.sleep(600)
"""


def test_job_survives_kill_9_of_its_launcher(
    tiny_model: Path, local_workdir: Path, reverse_small: tuple[Path, Path]
) -> None:
    launcher = subprocess.Popen(
        [sys.executable, "-c", LAUNCHER, str(local_workdir), *map(str, reverse_small)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert launcher.stdout is not None
        job_id = json.loads(launcher.stdout.readline())["job_id"]
    finally:
        launcher.kill()  # SIGKILL: no cleanup of any kind in the launcher
        launcher.wait()
    backend = _backend(local_workdir)
    handle = backend.find("survivor")
    assert handle is not None and handle.job_id == job_id
    polled = poll_until(backend, handle, timeout_s=120)
    assert polled.last.status is JobStatus.SUCCEEDED, polled.last.error
    total = polled.last.total_steps
    assert total == 6 * 24 // 4
    assert [s for s, _ in polled.series("train_loss")] == list(range(1, total + 1))
    assert len(polled.series("full_valid_loss")) == 6


def test_a_worker_that_dies_is_reported_failed(
    local_case: object, local_workdir: Path, reverse_small: tuple[Path, Path]
) -> None:
    backend = _backend(local_workdir)
    request = TrainingRequest("doomed", "tiny", Hyperparameters(2000, 4, 1.0), *reverse_small)
    handle = backend.submit(request)
    before = poll_until(backend, handle, lambda p: bool(p.points), timeout_s=120)
    record = JobFolder(local_workdir / "jobs" / handle.job_id).read_pid()
    assert record is not None
    os.killpg(record.pid, signal.SIGKILL)
    after = poll_until(backend, handle, timeout_s=10, polled=before)
    assert after.last.status is JobStatus.FAILED
    assert "without reporting a result" in (after.last.error or "")
    assert "SIGKILL" in (after.last.error or "")
    # a fresh backend (no child process in hand) reads the same verdict
    again = _backend(local_workdir).poll(handle, None)
    assert again.status is JobStatus.FAILED and list(again.points) == after.points


def test_a_bad_model_fails_with_a_clear_error(
    local_workdir: Path, reverse_small: tuple[Path, Path]
) -> None:
    backend = _backend(local_workdir)
    request = TrainingRequest(
        "bad-model", "./no/such/model", Hyperparameters(1, 4, 1.0), *reverse_small
    )
    polled = poll_until(backend, backend.submit(request), timeout_s=60)
    assert polled.last.status is JobStatus.FAILED
    assert "./no/such/model" in (polled.last.error or "")
    assert polled.points == []


def test_submit_rejects_bad_requests_before_starting_anything(
    local_workdir: Path, reverse_small: tuple[Path, Path]
) -> None:
    backend = _backend(local_workdir)
    train = reverse_small[0]
    hp = Hyperparameters(1, 4, 1.0)
    with pytest.raises(DataError, match="no such file"):
        backend.submit(TrainingRequest("k1", "tiny", hp, train.with_name("missing.jsonl")))
    with pytest.raises(UnsupportedParameterError, match="unknown option 'lr'"):
        backend.submit(TrainingRequest("k2", "tiny", hp, train, options={"lr": 1}))
    with pytest.raises(UnsupportedParameterError, match="prompt_loss_weight"):
        backend.submit(TrainingRequest("k3", "tiny", Hyperparameters(1, 4, 1.0, 1.5), train))
    assert not (local_workdir / "jobs").exists()


def test_checkpoints_of_the_last_epochs_are_kept(curves: dict[str, Polled]) -> None:
    polled = curves["reverse"]
    checkpoints = polled.last.checkpoints
    assert [c.epoch for c in checkpoints] == [LEARN_EPOCHS - 2, LEARN_EPOCHS - 1]
    full_valid = dict(polled.series("full_valid_loss"))
    for c in checkpoints:
        assert c.metrics["full_valid_loss"] == full_valid[c.step]
        assert (Path(c.model_id) / "config.json").is_file()
    assert len(list(Path(checkpoints[0].model_id).parent.iterdir())) == 2
    # by default (checkpoints: auto) a full fine-tune keeps only its best earlier epoch
    noise = curves["random_labels"]
    valid = _epoch_curve(noise, "full_valid_loss")
    (kept,) = noise.last.checkpoints
    assert kept.epoch == 1 + valid.index(min(valid[:-1]))
    assert [p.name for p in Path(kept.model_id).parent.iterdir()] == [f"epoch-{kept.epoch}"]

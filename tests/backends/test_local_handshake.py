"""The epoch handshake: a pruned local job trains no step past the epoch it was pruned at."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from orchestrator.backends.base import Hyperparameters, JobStatus, TrainingRequest
from orchestrator.backends.local import LocalBackend, LocalOptions
from orchestrator.backends.local.handshake import EpochGate, acknowledge
from orchestrator.backends.local.jobfiles import JobFolder, MetricsWriter
from orchestrator.core.attrs import TrialAttrs
from orchestrator.testing import poll_until
from tests.backends.conftest import LOCAL_OPTIONS
from tests.backends.sweeps import (
    job_folder,
    study,
    tiny_sweep,
    trained_epochs,
)


class Clock:
    """A clock that moves only when the gate sleeps; ``on_sleep`` plays the engine."""

    def __init__(self, on_sleep: Callable[[float], None] = lambda now: None) -> None:
        self.now = 0.0
        self.on_sleep = on_sleep

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds
        self.on_sleep(self.now)


def _gate(folder: JobFolder, clock: Clock, *, timeout_s: float = 60.0) -> EpochGate:
    return EpochGate(
        MetricsWriter(folder.metrics_file),
        folder,
        n_epochs=3,
        timeout_s=timeout_s,
        stopped=lambda: False,
        log=lambda _: None,
        clock=clock,
        sleep=clock.sleep,
        every_s=0.25,  # exact in binary: the fake clock adds up exactly
    )


def _poll_from(folder: JobFolder) -> Callable[[float], None]:
    """An engine that reads everything written so far at each tick (acknowledging what it
    had read at the tick before)."""
    cursor = [0]

    def tick(now: float) -> None:
        acknowledge(folder, cursor[0])
        cursor[0] = folder.read_metrics(cursor[0])[1]

    return tick


def test_the_gate_waits_at_an_epoch_end_until_a_poll_has_read_past_it(tmp_path: Path) -> None:
    folder = JobFolder(tmp_path)
    clock = Clock(_poll_from(folder))
    gate = _gate(folder, clock)
    gate.emit(1, {"train_loss": 2.0, "epoch": 0.5})  # mid-epoch: no wait
    assert clock.now == 0.0
    gate.emit(2, {"train_loss": 1.9, "epoch": 1.0})
    # the first tick reads the epoch's end, the second acknowledges it
    assert folder.read_epoch_ack() == 1 and clock.now == 0.5
    assert folder.read_epoch_end() == (1, folder.metrics_file.stat().st_size)
    gate.emit(4, {"train_loss": 1.8, "epoch": 2.0})
    assert folder.read_epoch_ack() == 2
    before = clock.now
    gate.emit(6, {"train_loss": 1.7, "epoch": 3.0})  # the last epoch: nothing left to stop
    assert clock.now == before
    end = folder.read_epoch_end()
    assert end is not None and end[0] == 2


def test_a_poll_acknowledges_only_what_its_caller_had_read(tmp_path: Path) -> None:
    folder = JobFolder(tmp_path)
    acknowledge(folder, 10_000)  # no epoch ended yet
    assert folder.read_epoch_ack() == 0
    folder.write_epoch_end(1, 120)
    acknowledge(folder, 0)  # a re-attach polling from the start: it has read nothing
    acknowledge(folder, 119)
    assert folder.read_epoch_ack() == 0
    acknowledge(folder, 120)
    assert folder.read_epoch_ack() == 1


def test_a_cancel_ends_the_wait_at_once(tmp_path: Path) -> None:
    folder = JobFolder(tmp_path)

    def prune(now: float) -> None:
        if now >= 0.2:
            folder.request_cancel()

    clock = Clock(prune)
    _gate(folder, clock).emit(3, {"epoch": 1.0})
    assert clock.now == 0.25 and folder.read_epoch_ack() == 0


def test_nobody_polling_costs_one_timeout_then_the_gate_waits_again_once_polled(
    tmp_path: Path,
) -> None:
    folder = JobFolder(tmp_path)
    clock = Clock()
    gate = _gate(folder, clock, timeout_s=5.0)
    gate.emit(3, {"epoch": 1.0})
    assert clock.now == 5.0 and gate.unheard_at == 1
    gate.emit(6, {"epoch": 2.0})  # still nobody: no second wait
    assert clock.now == 5.0
    acknowledge(folder, folder.metrics_file.stat().st_size)  # an engine is back
    clock.on_sleep = _poll_from(folder)
    gate.n_epochs = 4
    gate.emit(9, {"epoch": 3.0})
    assert gate.unheard_at is None and folder.read_epoch_ack() == 3
    assert gate.waited_s == 5.5


def test_a_job_waits_at_its_epoch_end_until_the_engine_decides(
    tiny_model: Path, local_workdir: Path, reverse_small: tuple[Path, Path]
) -> None:
    """The engine's side over the real backend: a poll brings epoch 1's end and the caller
    stops polling (it is deciding); the job trains nothing more; the cancel (the prune)
    ends it with epoch 1 as its last."""
    backend = LocalBackend(local_workdir, LocalOptions.parse(LOCAL_OPTIONS))
    hp = Hyperparameters(4, 8, 1.0, 0.1)
    handle = backend.submit(TrainingRequest("decided", "tiny", hp, *reverse_small))
    polled = poll_until(
        backend, handle, lambda p: any(u.epoch_ends for u in p.updates), timeout_s=180
    )
    assert [e.epoch for u in polled.updates for e in u.epoch_ends] == [1]
    folder = JobFolder(local_workdir / "jobs" / handle.job_id)
    time.sleep(3.0)  # ten times a tiny epoch's length
    assert trained_epochs(folder)[-1] == 1.0
    backend.cancel(handle)
    ended = poll_until(backend, handle, timeout_s=60, polled=polled)
    assert ended.last.status is JobStatus.CANCELLED
    assert trained_epochs(folder)[-1] == 1.0 and max(trained_epochs(folder)) == 1.0


def test_a_job_nobody_polls_finishes_after_one_timeout(
    tiny_model: Path, local_workdir: Path, reverse_small: tuple[Path, Path]
) -> None:
    options = LocalOptions.parse({**LOCAL_OPTIONS, "epoch_handshake_s": 1.0})
    backend = LocalBackend(local_workdir, options)
    hp = Hyperparameters(4, 8, 1.0, 0.1)
    handle = backend.submit(TrainingRequest("alone", "tiny", hp, *reverse_small))
    folder = JobFolder(local_workdir / "jobs" / handle.job_id)
    deadline = time.monotonic() + 180
    while not JobStatus(folder.read_status()["status"]).terminal:  # read, never polled
        assert time.monotonic() < deadline, folder.log_tail()
        time.sleep(0.2)
    status = folder.read_status()
    assert status["status"] == "succeeded", status
    assert 1.0 <= status["epoch_wait_s"] < 1.5  # epoch 1 waited; 2 and 3 did not
    assert trained_epochs(folder)[-1] == 4.0
    assert "no poll read it within 1 s" in folder.log_file.read_text()


def test_pruned_trials_of_the_tiny_sweep_stop_at_their_prune_epoch(
    cli: Callable[..., Any], tiny_model: Path, tmp_path: Path, runs_dir: Path
) -> None:
    """``sweeps/tiny.yaml`` with two good configurations first and four poor ones after
    (distinct learning rates, 6 epochs each): the median pruner stops the poor ones early,
    and each pruned job's last trained step is its prune epoch's end."""
    fixed = {"prompt_loss_weight": 0.1}
    good = [
        {"n_epochs": 2, "batch_size": 4, "learning_rate_multiplier": lr, **fixed} for lr in (5, 4.5)
    ]
    poor = [
        {"n_epochs": 6, "batch_size": 16, "learning_rate_multiplier": lr, **fixed}
        for lr in (0.3, 0.31, 0.32, 0.33)
    ]
    spec = tiny_sweep(tmp_path, enqueue=good + poor, sampler={"name": "random", "seed": 0})
    result = cli("run", spec)
    assert result.code == 0, result.err
    trials = study(runs_dir).trials
    pruned = [t for t in trials if t.state.name == "PRUNED"]
    assert pruned, [(t.number, t.state.name) for t in trials]
    for trial in pruned:
        epoch = int(trial.user_attrs[TrialAttrs.PRUNED_AT])
        folder = job_folder(runs_dir, trial)
        epochs = trained_epochs(folder)
        assert epochs[-1] == epoch and max(epochs) == epoch, (trial.number, epoch, epochs[-3:])
        assert json.loads(folder.status_file.read_text())["status"] == "cancelled"

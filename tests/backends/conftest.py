"""Fixtures of the backend tests: one model cache per session with the tiny model built once,
the ``local`` contract case, and cleanup of any worker a test leaves running."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator.backends.base import Hyperparameters, TrainingRequest
from orchestrator.backends.local import models
from orchestrator.backends.local.jobfiles import JobFolder
from orchestrator.backends.local.tasks import write_task
from orchestrator.testing import BackendCase
from tests.apisim.fixtures import azure_case, azure_dated_case, openai_case  # noqa: F401  (contract cases)
from tests.engine.conftest import runs_dir  # noqa: F401  (the fixture: embedded stores of one test)

#: the user's model cache, before the session's temporary one replaces it (slow tests)
USER_MODELS = models.models_home()

#: one thread per job: the tests run beside other work on a small shared CPU
LOCAL_OPTIONS = {"torch_threads": 1}


def _kill_leftovers(workdir: Path) -> None:
    for pid_file in workdir.glob("jobs/*/pid"):
        record = JobFolder(pid_file.parent).read_pid()
        if record is not None and record.alive():
            os.killpg(record.pid, signal.SIGKILL)


@pytest.fixture
def local_workdir(tmp_path: Path) -> Iterator[Path]:
    """A local backend's working folder; workers still running at the end are killed."""
    workdir = tmp_path / "work"
    yield workdir
    _kill_leftovers(workdir)


@pytest.fixture(scope="session")
def reverse_small(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return write_task("reverse", tmp_path_factory.mktemp("data"), n_train=24, n_valid=8)


@pytest.fixture
def local_case(
    tiny_model: Path, local_workdir: Path, reverse_small: tuple[Path, Path]
) -> BackendCase:
    train, valid = reverse_small

    def request(key: str, n_epochs: int, batch_size: int) -> TrainingRequest:
        return TrainingRequest(
            key=key,
            model="tiny",
            hyperparameters=Hyperparameters(n_epochs, batch_size, 1.0, 0.1),
            train_file=train,
            valid_file=valid,
        )

    return BackendCase(
        name="local",
        options=LOCAL_OPTIONS,
        workdir=local_workdir,
        short_request=lambda key: request(key, 2, 8),
        long_request=lambda key: request(key, 2000, 4),
    )

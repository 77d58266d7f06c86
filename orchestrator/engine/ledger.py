"""The write-ahead ledger: what a trial's job is, kept in the Optuna study itself.

Before a job is submitted, its trial records the request (and its idempotency key); after, the
job id; while it runs, the poll cursor and a heartbeat. Because this lives in the study's storage
(SQLite, PostgreSQL, a journal file), any process that opens the study can re-attach to jobs a
dead process left running, and several workers on several machines see the same ledger.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestrator.backends.base import Hyperparameters, TrainingRequest

if TYPE_CHECKING:
    import optuna

__all__ = ["A", "owner_alive", "request_from_attrs", "request_to_attrs", "worker_id"]


class A:
    """Trial user-attribute names (all prefixed ``ftsweep.``)."""

    KEY = "ftsweep.key"
    REQUEST = "ftsweep.request"
    CONFIG = "ftsweep.config_hash"
    JOB = "ftsweep.job_id"
    BACKEND = "ftsweep.backend"
    CURSOR = "ftsweep.cursor"
    WORKER = "ftsweep.worker"
    HEARTBEAT = "ftsweep.heartbeat"
    RUN = "ftsweep.mlflow_run_id"
    BATCH_PCT = "ftsweep.batch_size_pct"
    ESTIMATE = "ftsweep.cost_estimate_usd"
    COST = "ftsweep.cost_usd"
    DIAGNOSIS = "ftsweep.diagnosis"
    RECOMMENDATION = "ftsweep.recommendation"
    BEST_EPOCH = "ftsweep.best_epoch"
    ERROR = "ftsweep.error"
    REUSED = "ftsweep.reused_from"
    SAME_AS = "ftsweep.same_as"
    EPOCHS = "ftsweep.epochs_done"
    STEPS = "ftsweep.steps"
    JOB_STATUS = "ftsweep.job_status"
    MODEL = "ftsweep.fine_tuned_model"
    TOKENS = "ftsweep.trained_tokens"
    CHECKPOINTS = "ftsweep.checkpoints"
    BEST_CHECKPOINT = "ftsweep.best_checkpoint"
    # study attributes
    PARENT = "ftsweep.mlflow_parent_run_id"
    EXPERIMENT = "ftsweep.mlflow_experiment_id"


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def owner_alive(worker: str | None) -> bool | None:
    """True/False for a worker on this host (by pid); None when it is on another host."""
    if not worker or ":" not in worker:
        return None
    host, _, pid = worker.rpartition(":")
    if host != socket.gethostname():
        return None
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError):
        return True
    return True


def request_to_attrs(trial: optuna.Trial, request: TrainingRequest, backend: str) -> None:
    payload = {
        "key": request.key,
        "model": request.model,
        "hyperparameters": request.hyperparameters.as_dict(),
        "train_file": str(request.train_file),
        "valid_file": str(request.valid_file) if request.valid_file else None,
        "seed": request.seed,
        "options": dict(request.options),
        "metadata": dict(request.metadata),
    }
    trial.set_user_attr(A.REQUEST, json.dumps(payload, sort_keys=True, default=str))
    trial.set_user_attr(A.KEY, request.key)
    trial.set_user_attr(A.CONFIG, request.config_hash())
    trial.set_user_attr(A.BACKEND, backend)


def request_from_attrs(attrs: dict[str, Any]) -> TrainingRequest:
    d = json.loads(attrs[A.REQUEST])
    return TrainingRequest(
        key=d["key"],
        model=d["model"],
        hyperparameters=Hyperparameters(**d["hyperparameters"]),
        train_file=Path(d["train_file"]),
        valid_file=Path(d["valid_file"]) if d["valid_file"] else None,
        seed=d["seed"],
        options=d["options"],
        metadata=d["metadata"],
    )

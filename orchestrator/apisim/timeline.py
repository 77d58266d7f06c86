"""What a job has to show at a given simulated time: events, checkpoints, result file.

All of it is derived from the job's record (its timeline) and its curve, never stored, so it
is the same before and after a restart and ids stay stable.
"""

from __future__ import annotations

import base64
import hashlib
import io
from dataclasses import dataclass, field
from typing import Any

from orchestrator.apisim.store import JobRecord
from orchestrator.apisim.surface import StepMetrics

__all__ = [
    "CheckpointView",
    "Event",
    "checkpoint_epochs",
    "checkpoints",
    "events",
    "result_csv",
]

OPENAI_CSV_COLUMNS = (
    "step",
    "train_loss",
    "train_accuracy",
    "valid_loss",
    "valid_mean_token_accuracy",
)
AZURE_CSV_COLUMNS = (
    "step",
    "train_loss",
    "train_mean_token_accuracy",
    "valid_loss",
    "valid_mean_token_accuracy",
    "full_valid_loss",
    "full_valid_mean_token_accuracy",
)

_MESSAGES = {
    "openai": {
        "queued": "Files validated, moving job to queued state",
        "started": "Fine-tuning job started",
        "succeeded": "The job has successfully completed",
        "cancelled": "Fine-tuning job cancelled",
        "paused": "Fine-tuning job paused",
        "resumed": "Fine-tuning job resumed",
    },
    "azure": {
        "queued": "Job enqueued. Waiting for jobs ahead to complete.",
        "started": "Job started.",
        "succeeded": "Job succeeded.",
        "cancelled": "Job cancelled.",
        "paused": "Job paused.",
        "resumed": "Job resumed.",
    },
}


def _id(prefix: str, *parts: object) -> str:
    digest = hashlib.sha256(":".join(str(p) for p in parts).encode()).hexdigest()
    return f"{prefix}{digest[:24]}"


@dataclass(frozen=True)
class Event:
    """One job event (``at`` is the exact simulated time; ``created_at`` its whole seconds)."""

    id: str
    at: float
    level: str
    message: str
    type: str = "message"
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def created_at(self) -> int:
        return int(self.at)


@dataclass(frozen=True)
class CheckpointView:
    """A checkpoint saved at the end of an epoch."""

    id: str
    at: float
    step: int
    epoch: int
    model: str
    metrics: dict[str, float]


def _metrics_message(m: StepMetrics, total: int) -> str:
    text = f"Step {m.step}/{total}: training loss={m.train_loss:.2f}"
    if m.valid_loss is not None:
        text += f", validation loss={m.valid_loss:.2f}"
    if m.full_valid_loss is not None:
        text += f", full validation loss={m.full_valid_loss:.2f}"
    return text


def checkpoint_epochs(n_epochs: int) -> range:
    """Epochs with a checkpoint: the two before the last (the last one is the model)."""
    return range(max(1, n_epochs - 2), n_epochs)


def events(job: JobRecord, curve: list[StepMetrics], now: float) -> list[Event]:
    """The job's events up to ``now``, oldest first."""
    say = _MESSAGES[job.api]
    found: list[tuple[float, int, Event]] = []

    def add(at: float, key: str, message: str, **kw: Any) -> None:
        if at <= now:
            found.append(
                (at, len(found), Event(_id("ftevent-", job.id, key), at, message=message, **kw))
            )

    info = {"level": "info"}
    add(job.created_at, "created", f"Created fine-tuning job: {job.id}", **info)
    validating = f"Validating training file: {job.training_file}"
    if job.validation_file:
        validating += f" and validation file: {job.validation_file}"
    add(job.created_at, "validating", validating, **info)
    if job.validated_at is not None:
        add(job.validated_at, "queued", say["queued"], **info)
    if job.started_at is not None:
        add(job.started_at, "started", say["started"], **info)
        ckpt_steps = {e * job.steps_per_epoch for e in checkpoint_epochs(job.n_epochs)}
        for m in curve[: job.steps_done(now)]:
            at = job.step_time(m.step)
            data: dict[str, Any] = {"step": m.step, **m.as_dict(), "total_steps": job.total_steps}
            add(
                at,
                f"step:{m.step}",
                _metrics_message(m, job.total_steps),
                level="info",
                type="metrics",
                data=data,
            )
            if m.step in ckpt_steps:
                model = f"{job.fine_tuned_model}:ckpt-step-{m.step}"
                add(
                    at,
                    f"ckpt:{m.step}",
                    f"Checkpoint created at step {m.step} with Snapshot ID: {model}",
                    **info,
                )
    for i, (paused_at, resumed_at) in enumerate(job.pauses):
        if paused_at is not None:
            add(paused_at, f"pause:{i}", say["paused"], **info)
        if resumed_at is not None:
            add(resumed_at, f"resume:{i}", say["resumed"], **info)
    if job.finished_at is not None:
        end = job.finished_at
        if job.status == "succeeded":
            add(end, "model", f"New fine-tuned model created: {job.fine_tuned_model}", **info)
            add(end, "succeeded", say["succeeded"], **info)
        elif job.status == "cancelled":
            add(end, "cancelled", say["cancelled"], **info)
        elif job.status == "failed" and job.error:
            add(end, "failed", str(job.error.get("message")), level="error")
    found.sort(key=lambda item: (item[0], item[1]))
    return [event for _, _, event in found]


def checkpoints(job: JobRecord, curve: list[StepMetrics], now: float) -> list[CheckpointView]:
    """Checkpoints saved by ``now``, oldest first."""
    done = job.steps_done(now)
    views: list[CheckpointView] = []
    for epoch in checkpoint_epochs(job.n_epochs):
        step = epoch * job.steps_per_epoch
        if step > done or step > len(curve):
            continue
        metrics = {"step": float(step), **curve[step - 1].as_dict()}
        views.append(
            CheckpointView(
                id=_id("ftckpt_", job.id, step),
                at=job.step_time(step),
                step=step,
                epoch=epoch,
                model=f"{job.fine_tuned_model}:ckpt-step-{step}",
                metrics=metrics,
            )
        )
    return views


def result_csv(job: JobRecord, curve: list[StepMetrics]) -> bytes:
    """The result file: OpenAI columns, base64-encoded, or Azure columns, raw."""
    openai = job.api == "openai"
    columns = OPENAI_CSV_COLUMNS if openai else AZURE_CSV_COLUMNS
    out = io.StringIO()
    out.write(",".join(columns) + "\n")
    for m in curve:
        values = {"step": m.step, **m.as_dict(), "train_accuracy": m.train_mean_token_accuracy}
        cells = []
        for col in columns:
            v = values.get(col)
            cells.append("" if v is None else (str(v) if col == "step" else f"{v:.5f}"))
        out.write(",".join(cells) + "\n")
    raw = out.getvalue().encode()
    return base64.b64encode(raw) if openai else raw

"""Records as the provider returns them: OpenAI's shape (validated against the official spec
in the tests) or Azure OpenAI's 2024-10-21 shape (``pending`` jobs, ``organisation_id``,
``result_files`` null until done, file statuses ``pending``/``running``/``processed``)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from orchestrator.apisim.errors import ApiError
from orchestrator.apisim.store import FileRecord, JobRecord
from orchestrator.apisim.timeline import CheckpointView, Event

__all__ = ["checkpoint", "event", "file_object", "job", "page"]

T = TypeVar("T")


def file_object(record: FileRecord, api: str, now: float) -> dict[str, Any]:
    ready = record.ready_at is not None and record.ready_at <= now
    if api == "azure":
        if ready:
            status = "processed"
        elif record.ready_at is not None and now - record.created_at >= 1.0:
            status = "running"
        else:
            status = "pending"
    else:
        status = "processed" if ready else "uploaded"
    return {
        "id": record.id,
        "object": "file",
        "bytes": record.bytes,
        "created_at": int(record.created_at),
        "filename": record.filename,
        "purpose": record.purpose,
        "status": status,
    }


def _hyperparameters(job: JobRecord) -> dict[str, Any]:
    if job.api == "azure" or job.status not in ("validating_files", "failed"):
        return {
            "n_epochs": job.n_epochs,
            "batch_size": job.batch_size,
            "learning_rate_multiplier": job.learning_rate_multiplier,
        }
    return {
        name: job.requested.get(name, "auto")
        for name in ("n_epochs", "batch_size", "learning_rate_multiplier")
    }


def _estimated_finish(job: JobRecord, now: float | None) -> int | None:
    if job.status != "running" or job.paused or (now is not None and job.paused_at(now)):
        return None
    return int(job.step_time(job.fail_at_step or job.total_steps))


def job(record: JobRecord, now: float | None = None) -> dict[str, Any]:
    """A job in its API's shape; ``now`` shows an Azure job pre-empted at that time as
    ``paused``."""
    hp = _hyperparameters(record)
    common: dict[str, Any] = {
        "id": record.id,
        "object": "fine_tuning.job",
        "created_at": int(record.created_at),
        "finished_at": int(record.finished_at) if record.finished_at is not None else None,
        "model": record.model,
        "fine_tuned_model": record.fine_tuned_model if record.status == "succeeded" else None,
        "training_file": record.training_file,
        "validation_file": record.validation_file,
        "hyperparameters": hp,
        "trained_tokens": record.trained_tokens if record.terminal else None,
        "seed": record.seed,
        "estimated_finish": _estimated_finish(record, now),
        "error": dict(record.error) if record.error else None,
    }
    if record.api == "azure":
        status = "pending" if record.status in ("validating_files", "queued") else record.status
        if status == "running" and now is not None and record.paused_at(now):
            status = "paused"
        body = {
            **common,
            "status": status,
            "result_files": [record.result_file] if record.result_file else None,
            "organisation_id": None,
            "suffix": record.suffix,
        }
        if record.training_type is not None:  # echoed back: a guess
            body["trainingType"] = record.training_type
        if record.surface == "v1" or (record.surface or "")[:10] > "2024-10-21":
            body["method"] = {"type": "supervised", "supervised": {"hyperparameters": dict(hp)}}
        return body
    return {
        **common,
        "status": record.status,
        "result_files": [record.result_file] if record.result_file else [],
        "organization_id": "org-apisim",
        "metadata": record.metadata,
        "method": {"type": "supervised", "supervised": {"hyperparameters": dict(hp)}},
        "integrations": [],
        "user_provided_suffix": record.suffix,
    }


def event(item: Event) -> dict[str, Any]:
    return {
        "object": "fine_tuning.job.event",
        "id": item.id,
        "created_at": item.created_at,
        "level": item.level,
        "message": item.message,
        "type": item.type,
        "data": dict(item.data),
    }


def checkpoint(item: CheckpointView, job_id: str) -> dict[str, Any]:
    return {
        "object": "fine_tuning.job.checkpoint",
        "id": item.id,
        "created_at": int(item.at),
        "fine_tuned_model_checkpoint": item.model,
        "fine_tuning_job_id": job_id,
        "metrics": dict(item.metrics),
        "step_number": item.step,
    }


def page(
    items: Sequence[T],
    key: Callable[[T], str],
    render: Callable[[T], dict[str, Any]],
    *,
    after: str | None,
    limit: int,
    ids: bool = False,
) -> dict[str, Any]:
    """One cursor page of ``items`` (already in list order): those after ``after``, at most
    ``limit``, and ``has_more``. An unknown ``after`` gives an empty last page."""
    start = 0
    if after:
        positions = [i for i, item in enumerate(items) if key(item) == after]
        start = positions[0] + 1 if positions else len(items)
    chunk = items[start : start + limit]
    body: dict[str, Any] = {
        "object": "list",
        "data": [render(item) for item in chunk],
        "has_more": start + limit < len(items),
    }
    if ids:
        body["first_id"] = key(chunk[0]) if chunk else None
        body["last_id"] = key(chunk[-1]) if chunk else None
    return body


def limit_param(raw: str | None, default: int, maximum: int) -> int:
    """The ``limit`` query parameter, checked."""
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if not 1 <= value <= maximum:
        raise ApiError(400, f"Invalid 'limit': expected 1 to {maximum}, got {raw!r}.",
                       param="limit")  # fmt: skip
    return value

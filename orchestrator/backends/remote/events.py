"""Reading what the provider reports: statuses, metrics events, checkpoints, result files."""

from __future__ import annotations

import base64
import binascii
import csv
import io
import re
from collections.abc import Mapping
from typing import Any

from orchestrator.backends.base import METRIC_NAMES, Checkpoint, JobStatus, MetricPoint
from orchestrator.backends.remote.resultfile import COLUMNS, MISSING

__all__ = [
    "checkpoint_of",
    "job_status",
    "metric_points",
    "parse_result_csv",
    "steps_per_epoch",
]

_STATUS = {
    "validating_files": JobStatus.QUEUED,
    "queued": JobStatus.QUEUED,
    "pending": JobStatus.QUEUED,  # Azure
    "created": JobStatus.QUEUED,  # Azure, "compatibility only"
    "notrunning": JobStatus.QUEUED,  # Azure, legacy
    "running": JobStatus.RUNNING,
    "paused": JobStatus.RUNNING,
    "succeeded": JobStatus.SUCCEEDED,
    "failed": JobStatus.FAILED,
    "cancelled": JobStatus.CANCELLED,
    "canceled": JobStatus.CANCELLED,  # Azure, legacy
}
_SERIES = tuple(name for name in METRIC_NAMES if name != "epoch")
_STEP = re.compile(r"Step (\d+)/(\d+): training loss=([-\d.eE+naif]+)")
_MESSAGE_METRICS = (
    ("valid_loss", re.compile(r"(?<!full )validation loss=([-\d.eE+naif]+)")),
    ("full_valid_loss", re.compile(r"full validation loss=([-\d.eE+naif]+)")),
)


def job_status(raw: str | None) -> JobStatus:
    """The contract's status for any OpenAI or Azure spelling (unknown ones: queued)."""
    return _STATUS.get((raw or "").lower(), JobStatus.QUEUED)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        return float(value)  # NaN and inf pass: they are how a diverged run shows
    except ValueError:
        return None


def steps_per_epoch(total_steps: int | None, n_epochs: Any) -> float | None:
    """Steps in one epoch, when both the total and the (resolved) epoch count are known."""
    if not total_steps or isinstance(n_epochs, bool) or not isinstance(n_epochs, int):
        return None
    return total_steps / n_epochs if n_epochs > 0 else None


def metric_points(
    data: Mapping[str, Any] | None, message: str, per_epoch: float | None
) -> tuple[int | None, int | None, list[MetricPoint]]:
    """``(step, total_steps, points)`` of one metrics event: from ``data`` when it has the
    keys, else parsed from the ``Step i/N: training loss=...`` message."""
    data = data or {}
    step = _number(data.get("step"))
    total = _number(data.get("total_steps"))
    values = {name: _number(data.get(name)) for name in _SERIES}
    if step is None:
        m = _STEP.search(message)
        if m is None:
            return None, None, []
        step, total = float(m.group(1)), float(m.group(2))
        values = {"train_loss": _number(m.group(3))}
        for name, pattern in _MESSAGE_METRICS:
            found = pattern.search(message)
            values[name] = _number(found.group(1)) if found else None
    s = int(step)
    points = [MetricPoint(s, name, v) for name, v in values.items() if v is not None]
    if per_epoch and points:
        points.append(MetricPoint(s, "epoch", round(s / per_epoch, 6)))
    return s, int(total) if total else None, points


def checkpoint_of(raw: Any, per_epoch: float | None) -> Checkpoint:
    """A provider checkpoint object as the contract's :class:`Checkpoint`."""
    metrics_raw = getattr(raw, "metrics", None)
    if metrics_raw is not None and hasattr(metrics_raw, "model_dump"):
        metrics_raw = metrics_raw.model_dump()
    metrics = {
        name: float(v)
        for name, value in dict(metrics_raw or {}).items()
        if name in _SERIES and (v := _number(value)) is not None
    }
    step = int(getattr(raw, "step_number", 0) or 0)
    epoch = round(step / per_epoch) if per_epoch else 0
    return Checkpoint(step, epoch, metrics, str(getattr(raw, "fine_tuned_model_checkpoint", "")))


def parse_result_csv(content: bytes) -> list[MetricPoint]:
    """Points of a result file: OpenAI's base64 CSV or Azure's raw one (the columns and
    missing values of :mod:`.resultfile`); unlike :func:`.resultfile.parse_result_csv` it
    never raises: what it cannot read gives no points."""
    text = content.lstrip()
    if not text.startswith(b"step"):
        try:
            text = base64.b64decode(text, validate=False)
        except (binascii.Error, ValueError):
            return []
    rows = csv.DictReader(io.StringIO(text.decode("utf-8-sig")))
    points: list[MetricPoint] = []
    for row in rows:
        step = _number(row.get("step"))
        if step is None:
            continue
        for column, name in COLUMNS.items():
            cell = (row.get(column) or "").strip()
            if cell.lower() in MISSING:
                continue
            value = _number(cell)
            if value is not None:
                points.append(MetricPoint(int(step), name, value))
    return points

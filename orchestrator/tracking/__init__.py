"""MLflow tracking: the client (:mod:`.client`) and the listener of engine events
(:mod:`.listener`) that writes every run, tag, metric, artifact and registered model."""

from __future__ import annotations

from orchestrator.tracking.client import (
    Tracker,
    TrackingError,
    run_link,
    runs_link,
)
from orchestrator.tracking.listener import MlflowListener, run_name

__all__ = [
    "MlflowListener",
    "Tracker",
    "TrackingError",
    "run_link",
    "run_name",
    "runs_link",
]

"""Fine-tuning backends: the contract (:mod:`.base`) and discovery (:mod:`.registry`)."""

from orchestrator.backends.base import (
    METRIC_NAMES,
    Backend,
    Hyperparameters,
    JobHandle,
    JobStatus,
    JobUpdate,
    MetricPoint,
    ModelInfo,
    TrainingRequest,
)

__all__ = [
    "METRIC_NAMES",
    "Backend",
    "Hyperparameters",
    "JobHandle",
    "JobStatus",
    "JobUpdate",
    "MetricPoint",
    "ModelInfo",
    "TrainingRequest",
]

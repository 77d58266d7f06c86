"""Task metrics on a held-out file: its examples (:mod:`.examples`) and the scorers of a
model's answers to them (:mod:`.scorers`). ``ftsweep evaluate`` (:mod:`orchestrator.workflows.
evaluate`) generates the answers; this package only reads and scores."""

from __future__ import annotations

from orchestrator.evaluation.examples import EvalExample, read_examples
from orchestrator.evaluation.scorers import (
    BUILTIN_SCORERS,
    ENTRY_POINT_GROUP,
    Scorer,
    load_scorers,
    metric_name,
    score_answers,
)

__all__ = [
    "BUILTIN_SCORERS",
    "ENTRY_POINT_GROUP",
    "EvalExample",
    "Scorer",
    "load_scorers",
    "metric_name",
    "read_examples",
    "score_answers",
]

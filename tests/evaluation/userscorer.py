"""A user scorer for the tests (``tests.evaluation.userscorer:length_ratio``)."""

from __future__ import annotations


def length_ratio(answer: str, reference: str) -> float:
    """How close the answer's length is to the reference's, 0 to 1."""
    longer = max(len(answer), len(reference), 1)
    return 1 - abs(len(answer) - len(reference)) / longer


def broken(answer: str, reference: str) -> float:
    """Returns what a scorer must not."""
    return 7.0

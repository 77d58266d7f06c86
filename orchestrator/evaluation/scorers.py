"""The scorers of ``evaluate.scorers``: each scores one answer against its reference, 0 to 1.

Built-in (:data:`BUILTIN_SCORERS`):

* ``exact_match``: the answer equals the reference, both stripped of surrounding whitespace.
* ``label_accuracy``: the answer's label is the reference's. The label is the text's first
  non-empty line, stripped and case-folded; with ``evaluate.labels`` it is the label that
  line equals, else the one its first token equals (punctuation around it dropped), else
  none (never a match).
* ``json_valid``: the answer parses as JSON and, with ``evaluate.json_schema``, satisfies the
  schema (``jsonschema``, the draft the schema names).
* ``contains``: the reference, stripped and case-folded, occurs in the answer.

A user scorer is a ``module:function`` or the name of an entry point in group
:data:`ENTRY_POINT_GROUP` (``[project.entry-points."ftsweep.scorers"]``); the function is
called as ``function(answer, reference)`` and returns a bool or a number in [0, 1]. A scorer
that cannot be loaded is a :class:`~orchestrator.core.errors.SpecError` on
``evaluate.scorers.N`` (exit 2); one that raises or returns anything else while scoring is an
:class:`~orchestrator.core.errors.OrchestratorError` naming it.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.config.models import BUILTIN_SCORERS, EvaluateSpec
from orchestrator.core.errors import OrchestratorError, SpecError

__all__ = [
    "BUILTIN_SCORERS",
    "ENTRY_POINT_GROUP",
    "Scorer",
    "contains",
    "exact_match",
    "json_valid",
    "label_accuracy",
    "label_of",
    "load_scorers",
    "metric_name",
    "score_answers",
]

ENTRY_POINT_GROUP = "ftsweep.scorers"
_PUNCT = ".,;:!?\"'()[]{}<>`"


@dataclass(frozen=True)
class Scorer:
    """A named scorer: ``fn(answer, reference)`` -> 0..1, logged as :attr:`metric`."""

    name: str
    fn: Callable[[str, str], float | bool]

    @property
    def metric(self) -> str:
        """The metric it is logged as (``eval_<name>``)."""
        return metric_name(self.name)

    def __call__(self, answer: str, reference: str) -> float:
        try:
            value = self.fn(answer, reference)
        except Exception as exc:  # a user scorer: any failure is its own
            raise OrchestratorError(f"scorer {self.name!r} failed: {exc}") from exc
        if isinstance(value, bool):
            return float(value)
        if not isinstance(value, int | float) or not 0 <= float(value) <= 1:
            raise OrchestratorError(
                f"scorer {self.name!r} returned {value!r}: expected a bool or a number in [0, 1]"
            )
        return float(value)


def metric_name(scorer: str) -> str:
    """The metric of scorer ``scorer``: ``eval_exact_match``, ``eval_pkg_mod_fn``..."""
    return "eval_" + re.sub(r"[^A-Za-z0-9_]", "_", scorer)


def exact_match(answer: str, reference: str) -> bool:
    """The answer equals the reference, surrounding whitespace aside."""
    return answer.strip() == reference.strip()


def contains(answer: str, reference: str) -> bool:
    """The reference occurs in the answer (case-folded, stripped)."""
    return reference.strip().casefold() in answer.casefold()


def label_of(text: str, labels: Sequence[str] | None = None) -> str | None:
    """The label a text gives: its first non-empty line (stripped, case-folded); with
    ``labels``, the label that line or else its first token equals (None: neither)."""
    line = next((x.strip() for x in text.splitlines() if x.strip()), "")
    said = line.casefold()
    if labels is None:
        return said or None
    known = {label.strip().casefold() for label in labels}
    if said in known:
        return said
    tokens = said.split()
    first = tokens[0].strip(_PUNCT) if tokens else ""
    return first if first in known else None


def label_accuracy(answer: str, reference: str, labels: Sequence[str] | None = None) -> bool:
    """The answer's label (:func:`label_of`) is the reference's."""
    said = label_of(answer, labels)
    return said is not None and said == label_of(reference, labels)


def json_valid(answer: str, reference: str, schema: Mapping[str, Any] | None = None) -> bool:
    """The answer is JSON (and satisfies ``schema`` when given); ``reference`` is unused."""
    try:
        value = json.loads(answer)
    except ValueError:
        return False
    if isinstance(value, float) and not math.isfinite(value):
        return False
    if schema is None:
        return True
    import jsonschema

    validator = jsonschema.validators.validator_for(schema)(schema)
    return bool(validator.is_valid(value))


def _schema(path: Path, shown: str) -> dict[str, Any]:
    where = "evaluate.json_schema"
    if not path.is_file():
        raise SpecError(shown, where, f"no such file: {path}")
    try:
        schema = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise SpecError(shown, where, f"{path}: not a JSON file ({exc})") from None
    if not isinstance(schema, dict):
        raise SpecError(shown, where, f"{path}: a JSON schema is an object")
    import jsonschema

    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise SpecError(shown, where, f"{path}: not a valid JSON schema: {exc.message}") from None
    return schema


def _user(name: str, where: str, shown: str) -> Callable[[str, str], float | bool]:
    if ":" in name:
        module, _, attr = name.partition(":")
        try:
            found = getattr(importlib.import_module(module), attr)
        except ImportError as exc:
            raise SpecError(shown, where, f"cannot import {module!r}: {exc}") from None
        except AttributeError:
            raise SpecError(shown, where, f"module {module!r} has no {attr!r}") from None
    else:
        points = importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)
        point = next((p for p in points if p.name == name), None)
        if point is None:
            known = ", ".join([*BUILTIN_SCORERS, *sorted(p.name for p in points)])
            raise SpecError(
                shown,
                where,
                f"unknown scorer {name!r}: known: {known}, or a user scorer module:function",
            )
        try:
            found = point.load()
        except Exception as exc:  # a third party's import error, whatever it is
            raise SpecError(shown, where, f"entry point {name!r} fails to load: {exc}") from None
    if not callable(found):
        raise SpecError(shown, where, f"{name!r} is not callable")
    return found  # type: ignore[no-any-return]


def load_scorers(spec: EvaluateSpec, shown: str) -> list[Scorer]:
    """The scorers ``spec`` names, loaded (``shown`` names the sweep file in errors)."""
    found = []
    for i, name in enumerate(spec.scorers):
        fn: Callable[[str, str], float | bool]
        if name == "exact_match":
            fn = exact_match
        elif name == "contains":
            fn = contains
        elif name == "label_accuracy":
            labels = spec.labels

            def fn(answer: str, reference: str, labels: Sequence[str] | None = labels) -> bool:
                return label_accuracy(answer, reference, labels)
        elif name == "json_valid":
            schema = _schema(spec.json_schema, shown) if spec.json_schema else None

            def fn(answer: str, reference: str, schema: Mapping[str, Any] | None = schema) -> bool:
                return json_valid(answer, reference, schema)
        else:
            fn = _user(name, f"evaluate.scorers.{i}", shown)
        found.append(Scorer(name, fn))
    metrics = [s.metric for s in found]
    for i, m in enumerate(metrics):
        if m in metrics[:i]:
            raise SpecError(shown, f"evaluate.scorers.{i}", f"logs {m} as another scorer does")
    return found


def score_answers(
    scorers: Sequence[Scorer], answers: Sequence[str], references: Sequence[str]
) -> dict[str, float]:
    """Each scorer's mean over the answers: ``{eval_<name>: mean}``."""
    if len(answers) != len(references) or not answers:
        raise ValueError("one answer per reference, at least one")
    return {
        s.metric: sum(s(a, r) for a, r in zip(answers, references, strict=True)) / len(answers)
        for s in scorers
    }

"""Sweep files: :class:`SweepSpec` and loading YAML with field-path errors.

A sweep file names the data, the backend and the search space; every omitted range takes the
recommended default (``n_epochs`` 2-4; ``batch_size`` 0.01 %-4 % of the training examples, log
scale; ``learning_rate_multiplier`` 0.02-0.2, log scale; ``prompt_loss_weight`` 0.01-0.1 on the
local trainer only). Relative data paths are relative to the sweep file. Errors read
``sweeps/x.yaml: space.n_epochs.high: must be >= low (2)``.

Any file is safe to load: :func:`load_spec` reads only a regular file of at most 1 MiB,
refuses deep nesting, alias bombs and duplicate keys (:mod:`.yamlfile`), and validates strict
types and finite numbers (:mod:`.models`); every problem is one :class:`SpecError` (exit 2).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from orchestrator.config.fields import describe_validation_error, printable
from orchestrator.config.models import (
    NAME_PATTERN,
    BackendSpec,
    BatchSizeParam,
    DataSpec,
    DiagnosisSpec,
    EvaluateSpec,
    FloatParam,
    IntParam,
    ObjectiveSpec,
    PrunerSpec,
    SamplerSpec,
    SpaceSpec,
    StorageSpec,
    SweepSpec,
)
from orchestrator.core.errors import SpecError

__all__ = [
    "BackendSpec",
    "BatchSizeParam",
    "DataSpec",
    "DiagnosisSpec",
    "EvaluateSpec",
    "FloatParam",
    "IntParam",
    "ObjectiveSpec",
    "PrunerSpec",
    "SamplerSpec",
    "SpaceSpec",
    "StorageSpec",
    "SweepSpec",
    "describe_validation_error",
    "load_spec",
    "parse_spec",
]


def parse_spec(data: Any, source: str) -> SweepSpec:
    """Validate a mapping as a sweep spec; errors name ``source`` and the field path."""
    if not isinstance(data, dict):
        raise SpecError(source, "", "a sweep file must be a YAML mapping")
    try:
        return SweepSpec.model_validate(data)
    except ValidationError as exc:
        loc, msg = describe_validation_error(exc, SweepSpec)
        raise SpecError(source, loc, printable(msg, limit=400)) from None
    except RecursionError:  # pragma: no cover (the reader bounds nesting)
        raise SpecError(source, "", "nested too deeply") from None


def load_spec(path: str | os.PathLike[str]) -> SweepSpec:
    """Load and validate a sweep file. Data paths (and ``evaluate``'s files) become absolute
    (relative to the file)."""
    from orchestrator.config.yamlfile import YamlFileError, read_yaml

    p = Path(path)
    shown = printable(str(path), limit=1000)
    try:
        data = read_yaml(p, what="sweep files")
    except YamlFileError as exc:
        raise SpecError(shown, "", printable(str(exc), limit=400)) from None
    if isinstance(data, dict) and "name" not in data:
        if not re.match(NAME_PATTERN, p.stem):
            raise SpecError(
                shown, "name", f"required when the file name ({printable(p.stem)!r}) is not a "
                "valid sweep name (letters, digits, '_', '.', '-'; at most 100)",
            )  # fmt: skip
        data = {"name": p.stem, **data}
    spec = parse_spec(data, shown)
    base = p.resolve().parent
    data_spec = DataSpec(
        train=base / spec.data.train,
        valid=(base / spec.data.valid) if spec.data.valid else None,
    )
    update: dict[str, object] = {"data": data_spec, "source": p}
    if spec.evaluate is not None:
        schema = spec.evaluate.json_schema
        update["evaluate"] = spec.evaluate.model_copy(
            update={"file": base / spec.evaluate.file, "json_schema": schema and base / schema}
        )
    return spec.model_copy(update=update)

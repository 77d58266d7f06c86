"""Sweep files: :class:`SweepSpec` and loading YAML with field-path errors.

A sweep file names the data, the backend and the search space; every omitted range takes the
recommended default (``n_epochs`` 2-4; ``batch_size`` 0.01 %-4 % of the training examples, log
scale; ``learning_rate_multiplier`` 0.02-0.2, log scale; ``prompt_loss_weight`` 0.01-0.1 on the
local trainer only). Relative data paths are relative to the sweep file. Errors read
``sweeps/x.yaml: space.n_epochs.high: must be >= low (2)``.
"""

from __future__ import annotations

import os
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, Self, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from orchestrator.errors import SpecError
from orchestrator.params import NAMES, parameter

__all__ = [
    "BackendSpec",
    "BatchSizeParam",
    "DataSpec",
    "DiagnosisSpec",
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
]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _scalar_to_value(data: Any) -> Any:
    """Let a parameter be written as a bare value (fixed) or a list (choices)."""
    if isinstance(data, bool):
        return data
    if isinstance(data, int | float):
        return {"value": data}
    if isinstance(data, list):
        return {"choices": data}
    if not isinstance(data, dict):
        raise ValueError("expected a number, a list of choices, or a mapping with low and high")
    return data


class _Param(_Model):
    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        return _scalar_to_value(data)

    @model_validator(mode="after")
    def _shape(self) -> Self:
        d = self.model_dump(exclude_none=True, exclude={"log", "step"})
        forms = [bool(d.get("value") is not None), "choices" in d, "low" in d or "high" in d]
        forms += [any(k.endswith("_pct") for k in d)]
        if sum(forms) != 1:
            raise ValueError("give a value, a list of choices, or low and high")
        low, high = getattr(self, "low", None), getattr(self, "high", None)
        if (low is None) != (high is None):
            raise ValueError("give both low and high")
        if low is not None and high is not None and high < low:
            raise ValueError(f"high: must be >= low ({low})")
        return self


class IntParam(_Param):
    """An integer parameter: ``3``, ``[2, 3]`` or ``{low: 2, high: 4}``."""

    value: int | None = Field(default=None, ge=1)
    choices: list[int] | None = Field(default=None, min_length=1)
    low: int | None = Field(default=None, ge=1)
    high: int | None = Field(default=None, ge=1)
    log: bool = False


class FloatParam(_Param):
    """A real parameter: ``0.1``, ``[0.05, 0.1]`` or ``{low: 0.02, high: 0.2, log: true}``."""

    value: float | None = Field(default=None, ge=0)
    choices: list[float] | None = Field(default=None, min_length=1)
    low: float | None = Field(default=None, ge=0)
    high: float | None = Field(default=None, ge=0)
    log: bool = False

    @model_validator(mode="after")
    def _log_positive(self) -> Self:
        if self.log and self.low is not None and self.low <= 0:
            raise ValueError("low: must be > 0 on a log scale")
        return self


class BatchSizeParam(_Param):
    """Batch size as a share of the training examples (``low_pct``/``high_pct``, log scale),
    as absolute sizes (``low``/``high``), as choices, or fixed."""

    value: int | None = Field(default=None, ge=1)
    choices: list[int] | None = Field(default=None, min_length=1)
    low: int | None = Field(default=None, ge=1)
    high: int | None = Field(default=None, ge=1)
    low_pct: float | None = Field(default=None, gt=0, le=100)
    high_pct: float | None = Field(default=None, gt=0, le=100)
    log: bool = True

    @model_validator(mode="after")
    def _pct_order(self) -> Self:
        if (self.low_pct is None) != (self.high_pct is None):
            raise ValueError("give both low_pct and high_pct")
        if self.low_pct is not None and self.high_pct is not None and self.high_pct < self.low_pct:
            raise ValueError(f"high_pct: must be >= low_pct ({self.low_pct})")
        return self


# The recommended ranges live in the hyper-parameter registry (orchestrator.params).
def _default_epochs() -> IntParam:
    p = parameter("n_epochs")
    return IntParam(low=int(p.low), high=int(p.high), log=p.log)


def _default_batch() -> BatchSizeParam:
    p = parameter("batch_size")  # a share (%) of the training examples
    return BatchSizeParam(low_pct=p.low, high_pct=p.high, log=p.log)


def _default_lrm() -> FloatParam:
    p = parameter("learning_rate_multiplier")
    return FloatParam(low=p.low, high=p.high, log=p.log)


class SpaceSpec(_Model):
    """The search space; omitted parameters take the recommended ranges."""

    n_epochs: IntParam = Field(default_factory=_default_epochs)
    batch_size: BatchSizeParam = Field(default_factory=_default_batch)
    learning_rate_multiplier: FloatParam = Field(default_factory=_default_lrm)
    #: None: the backend's default (searched 0.01-0.1 on the local trainer, absent elsewhere)
    prompt_loss_weight: FloatParam | None = None


class DataSpec(_Model):
    train: Path
    valid: Path | None = None


class BackendSpec(_Model):
    name: str = "local"
    model: str
    #: backend-specific settings (checked by the backend)
    options: dict[str, Any] = Field(default_factory=dict)


class ObjectiveSpec(_Model):
    metric: str = "full_valid_loss"
    direction: Literal["minimize", "maximize"] = "minimize"


class SamplerSpec(_Model):
    name: Literal["tpe", "random", "grid", "qmc", "cmaes", "gp"] = "tpe"
    seed: int | None = 0


class PrunerSpec(_Model):
    name: Literal[
        "none", "median", "percentile", "successive_halving", "hyperband", "threshold"
    ] = "none"
    options: dict[str, Any] = Field(default_factory=dict)


class DiagnosisSpec(_Model):
    """Thresholds of the over/under-fitting rules (see :mod:`orchestrator.diagnosis`)."""

    overfit_rise: float = Field(default=0.05, ge=0)
    gap_growth: float = Field(default=0.5, ge=0)
    still_falling: float = Field(default=0.03, ge=0)
    low_accuracy: float = Field(default=0.3, ge=0, le=1)
    diverge_rise: float = Field(default=0.10, ge=0)


class StorageSpec(_Model):
    """Where results go; None means the embedded default under ``mlruns/``, unless the
    environment (``FTSWEEP_OPTUNA_STORAGE``, ``MLFLOW_TRACKING_URI``) says otherwise."""

    optuna: str | None = None
    mlflow: str | None = None


class SweepSpec(_Model):
    """A whole sweep file."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
    data: DataSpec
    backend: BackendSpec
    space: SpaceSpec = Field(default_factory=SpaceSpec)
    objective: ObjectiveSpec = Field(default_factory=ObjectiveSpec)
    trials: int = Field(default=8, ge=1)
    parallel: int = Field(default=1, ge=1)
    timeout_s: float | None = Field(default=None, gt=0)
    target: float | None = None
    budget_usd: float | None = Field(default=None, ge=0)
    seed: int = 0
    sampler: SamplerSpec = Field(default_factory=SamplerSpec)
    pruner: PrunerSpec = Field(default_factory=PrunerSpec)
    diagnosis: DiagnosisSpec = Field(default_factory=DiagnosisSpec)
    storage: StorageSpec = Field(default_factory=StorageSpec)
    #: configurations to train first (a baseline, known good settings); batch_size as an int
    enqueue: list[dict[str, float]] = Field(default_factory=list)
    #: USD per 1M trained tokens, by model name, overriding the built-in price table
    prices: dict[str, float] = Field(default_factory=dict)
    #: the file this spec was loaded from (set by :func:`load_spec`)
    source: Path | None = Field(default=None, exclude=True)

    @field_validator("enqueue")
    @classmethod
    def _enqueue_keys(cls, v: list[dict[str, float]]) -> list[dict[str, float]]:
        for i, config in enumerate(v):
            unknown = sorted(set(config) - set(NAMES))
            if unknown:
                raise ValueError(f"{i}: unknown parameters {unknown}; known: {sorted(NAMES)}")
        return v

    @field_validator("prices")
    @classmethod
    def _prices_positive(cls, v: dict[str, float]) -> dict[str, float]:
        for model, price in v.items():
            if price < 0:
                raise ValueError(f"{model}: price must be >= 0")
        return v


def _field_path(loc: Sequence[int | str]) -> str:
    return ".".join(str(p) for p in loc if p not in ("__root__",))


def _message(err: Mapping[str, Any]) -> str:
    msg = str(err["msg"])
    for prefix in ("Value error, ", "Assertion failed, "):
        msg = msg.removeprefix(prefix)
    if err["type"] == "extra_forbidden":
        return "unknown field"
    if err["type"] == "missing":
        return "required field is missing"
    return msg[0].lower() + msg[1:] if msg else msg


# -- pydantic's union-member segments --------------------------------------------------------
# For a field typed ``bool | LoraSpec | None``, pydantic reports each member it tried, with
# the member's name in the location (``lora.bool``, ``lora.LoraSpec.x``). The file has no such
# level, so the location is walked along the model's types and those segments are dropped.


def _unwrap(tp: Any) -> Any:
    while True:
        if get_origin(tp) is Annotated:
            tp = get_args(tp)[0]
            continue
        members = _union_members(tp, keep_single=True)
        if members is not None and len(members) == 1:
            tp = members[0]
            continue
        return tp


def _union_members(tp: Any, *, keep_single: bool = False) -> list[Any] | None:
    if get_origin(tp) not in (typing.Union, types.UnionType):
        return None
    members = [a for a in get_args(tp) if a is not type(None)]
    return members if len(members) > 1 or keep_single else None


def _member_named(members: list[Any], segment: int | str) -> Any:
    for m in members:
        origin = get_origin(m) or m
        name = getattr(origin, "__name__", None)
        if name is not None and str(segment).split("[", 1)[0] == name:
            return m
    return None


def _child(tp: Any, segment: int | str) -> Any:
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        info = tp.model_fields.get(str(segment))
        return info.annotation if info is not None else None
    origin, args = get_origin(tp), get_args(tp)
    if origin in (list, tuple, set, frozenset, Sequence) and args:
        return args[0]
    if origin in (dict, Mapping) and len(args) == 2:
        return args[1]
    return None


def _plain_location(
    model: type[BaseModel] | None, loc: Sequence[int | str]
) -> tuple[tuple[int | str, ...], int | None]:
    """``loc`` without union-member segments, and how many segments come before the first
    union (None when the location crosses none)."""
    out: list[int | str] = []
    first_union: int | None = None
    tp: Any = model
    for segment in loc:
        tp = _unwrap(tp)
        members = _union_members(tp)
        if members is not None:  # this segment names the member pydantic tried
            first_union = len(out) if first_union is None else first_union
            tp = _member_named(members, segment)
            continue
        out.append(segment)
        tp = _child(tp, segment)
    return tuple(out), first_union


def describe_validation_error(
    exc: ValidationError, model: type[BaseModel] | None = None
) -> tuple[str, str]:
    """``(field path, problem)`` of pydantic's first problem, as sweep-file errors read.

    Union members are folded into one problem at the field's own path: of the members'
    errors, the deepest one wins (the member the value came closest to matching), and errors
    at the same depth are joined (``input should be a valid string or a valid list``).
    Further problems are counted: ``(and 2 more problems)``.
    """
    problems: list[tuple[str, tuple[int | str, ...], str]] = []  # (group, location, message)
    for err in exc.errors():
        loc, first_union = _plain_location(model, err["loc"])
        msg = _message(err)
        head, sep, rest = msg.partition(": ")
        if sep and head.isidentifier():  # "high: must be >= low (2)" names a sub-field
            loc, msg = (*loc, head), rest
        group = _field_path(loc if first_union is None else loc[:first_union])
        problems.append((group, loc, msg))
    first = problems[0][0]
    mine = [p for p in problems if p[0] == first]
    deepest = max(len(loc) for _, loc, _ in mine)
    loc = next(loc for _, loc, _ in mine if len(loc) == deepest)
    messages: list[str] = []
    for _, other, msg in mine:
        if other == loc and msg not in messages:
            messages.append(msg)
    text = messages[0]
    for extra in messages[1:]:
        lead = "input should be "
        text += " or " + (extra.removeprefix(lead) if text.startswith(lead) else extra)
    more = len({group for group, _, _ in problems}) - 1
    if more:
        text += f" (and {more} more problem{'s' if more > 1 else ''})"
    return _field_path(loc), text


def parse_spec(data: Any, source: str) -> SweepSpec:
    """Validate a mapping as a sweep spec; errors name ``source`` and the field path."""
    if not isinstance(data, dict):
        raise SpecError(source, "", "a sweep file must be a YAML mapping")
    try:
        return SweepSpec.model_validate(data)
    except ValidationError as exc:
        loc, msg = describe_validation_error(exc, SweepSpec)
        raise SpecError(source, loc, msg) from None


def load_spec(path: str | os.PathLike[str]) -> SweepSpec:
    """Load and validate a sweep file. Data paths become absolute (relative to the file)."""
    import yaml

    p = Path(path)
    shown = str(path)
    try:
        text = p.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise SpecError(shown, "", "no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(shown, "", f"cannot read: {exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise SpecError(shown, "", f"{where}invalid YAML: {problem}") from None
    if isinstance(data, dict) and "name" not in data:
        data = {"name": p.stem, **data}
    spec = parse_spec(data, shown)
    base = p.resolve().parent
    data_spec = DataSpec(
        train=base / spec.data.train,
        valid=(base / spec.data.valid) if spec.data.valid else None,
    )
    return spec.model_copy(update={"data": data_spec, "source": p})

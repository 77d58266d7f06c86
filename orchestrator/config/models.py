"""The sweep file's models: :class:`SweepSpec` and its sections (pydantic v2).

Types are strict (no ``true`` for a number, no ``"3"`` for an integer), every float must be
finite, counts have sane upper bounds and ``pruner.options`` are checked per pruner
(:mod:`orchestrator.config.pruners`), so a file that loads is one Optuna, numpy and the
backends accept. What a particular backend accepts (``learning_rate_multiplier > 0``, batch
sizes) is checked against its capabilities when the space is resolved
(:func:`orchestrator.plan.space.resolve_space`).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal, Self

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from orchestrator.config.pruners import check_hyperband_resources, check_pruner_options
from orchestrator.core.params import NAMES, parameter

__all__ = [
    "MAX_INT_PARAMETER",
    "MAX_PARALLEL",
    "MAX_SAMPLER_SEED",
    "MAX_SEED",
    "MAX_TRIALS",
    "NAME_PATTERN",
    "BackendSpec",
    "BatchSizeParam",
    "ConstraintSpec",
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
]

#: a sweep's name (the study's, the experiment's): letters, digits, ``_ . -``
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$"
MAX_TRIALS = 100_000
MAX_PARALLEL = 1_000
#: the request's seed: the OpenAI and Azure APIs take 0 to 2**31 - 1
MAX_SEED = 2**31 - 1
#: Optuna's samplers seed numpy (0 to 2**32 - 1); a resumed study's seed is shifted by its
#: number of trials, so half of that range is left for the shift
MAX_SAMPLER_SEED = 2**31 - 1
#: the largest epoch count or batch size a space may name
MAX_INT_PARAMETER = 1_000_000


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


def _path(value: Any) -> Any:
    if isinstance(value, Path):
        return value
    if not isinstance(value, str) or not value.strip() or "\x00" in value:
        raise ValueError("expected a file path (a non-empty string)")
    return Path(value)


FilePath = Annotated[Path, BeforeValidator(_path)]
ParamInt = Annotated[int, Field(ge=1, le=MAX_INT_PARAMETER)]
#: a string that fits on one line of a message and a tag
Text = Annotated[str, Field(min_length=1, max_length=1000, pattern=r"^[^\x00-\x1f\x7f]*$")]


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

    value: ParamInt | None = None
    choices: list[ParamInt] | None = Field(default=None, min_length=1, max_length=10_000)
    low: ParamInt | None = None
    high: ParamInt | None = None
    log: bool = False


class FloatParam(_Param):
    """A real parameter: ``0.1``, ``[0.05, 0.1]`` or ``{low: 0.02, high: 0.2, log: true}``."""

    value: float | None = Field(default=None, ge=0)
    choices: list[Annotated[float, Field(ge=0)]] | None = Field(
        default=None, min_length=1, max_length=10_000
    )
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

    value: ParamInt | None = None
    choices: list[ParamInt] | None = Field(default=None, min_length=1, max_length=10_000)
    low: ParamInt | None = None
    high: ParamInt | None = None
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


# The recommended ranges live in the hyper-parameter registry (orchestrator.core.params).
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
    train: FilePath
    valid: FilePath | None = None


class BackendSpec(_Model):
    name: Text = "local"
    model: Text
    #: backend-specific settings (checked by the backend)
    options: dict[str, Any] = Field(default_factory=dict)


class ObjectiveSpec(_Model):
    """One objective: a metric the trials report (or ``cost_usd``) and its direction."""

    metric: Text = "full_valid_loss"
    direction: Literal["minimize", "maximize"] = "minimize"


class ConstraintSpec(_Model):
    """A hard limit on a reported metric (or ``cost_usd``): ``{max: X}`` or ``{min: X}``; a
    finished trial outside it is infeasible (never on the front, never the best)."""

    max: float | None = None
    min: float | None = None

    @model_validator(mode="after")
    def _one_bound(self) -> Self:
        if (self.max is None) == (self.min is None):
            raise ValueError("give one of max or min")
        return self

    def violation(self, value: float) -> float:
        """How far ``value`` is outside the limit (<= 0: inside), as Optuna's
        ``constraints_func`` takes it."""
        if self.max is not None:
            return float(value - self.max)
        assert self.min is not None
        return float(self.min - value)


class SamplerSpec(_Model):
    """The search: ``auto`` (the default) is a scrambled Sobol start of a few trials, then a
    model-based sampler (measured and chosen in ``docs/search.md``); the others are Optuna's
    own samplers with their own defaults."""

    name: Literal["auto", "tpe", "random", "grid", "qmc", "cmaes", "gp"] = "auto"
    #: None: each process draws its own (recorded in the study), so several workers
    #: propose different configurations; a number makes one worker's sweep reproducible
    seed: Annotated[int, Field(ge=0, le=MAX_SAMPLER_SEED)] | None = None
    #: tell the earlier epochs of each completed job as trials of their own (n_epochs=k,
    #: marked derived, never trained, not counted, not charged): see ``docs/search.md``;
    #: None (unset): on with ``auto``, off with a named Optuna sampler
    epochs_as_trials: bool | None = None

    @property
    def derives_epochs(self) -> bool:
        """Whether completed jobs' earlier epochs are told as trials of their own."""
        if self.epochs_as_trials is None:
            return self.name == "auto"
        return self.epochs_as_trials


class PrunerSpec(_Model):
    """A pruner and its keyword options (checked per pruner, passed to Optuna as given)."""

    name: Literal[
        "none", "median", "percentile", "successive_halving", "hyperband", "threshold"
    ] = "none"
    options: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _options(self) -> Self:
        check_pruner_options(self.name, self.options)
        return self


class DiagnosisSpec(_Model):
    """Thresholds of the over/under-fitting rules (see :mod:`orchestrator.analysis.diagnosis`)."""

    overfit_rise: float = Field(default=0.05, ge=0)
    gap_growth: float = Field(default=0.5, ge=0)
    still_falling: float = Field(default=0.03, ge=0)
    low_accuracy: float = Field(default=0.3, ge=0, le=1)
    diverge_rise: float = Field(default=0.10, ge=0)
    flat_gain: float = Field(default=0.03, ge=0, le=1)
    early_part: float = Field(default=0.5, gt=0, le=1)
    flat_ceiling: float = Field(default=0.5, ge=0, le=1)
    far_worse: float = Field(default=0.2, ge=0)
    spike_rise: float = Field(default=0.25, ge=0)
    at_min: float = Field(default=0.01, ge=0)
    plateau_part: float = Field(default=0.25, gt=0, lt=1)
    plateau_gain: float = Field(default=0.01, ge=0)


#: the built-in scorers of ``evaluate.scorers`` (see :mod:`orchestrator.evaluation.scorers`)
BUILTIN_SCORERS = ("exact_match", "label_accuracy", "json_valid", "contains")
#: a built-in scorer, a user scorer ``module:function`` or an entry point of ``ftsweep.scorers``
_SCORER = (
    r"^([A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*"
    r"|[A-Za-z0-9_.-]{1,100})$"
)


class EvaluateSpec(_Model):
    """``evaluate:``: a held-out file (the training data's formats) and the scorers of the
    answers a trial's model generates for its prompts (``ftsweep evaluate``)."""

    file: FilePath
    scorers: list[Annotated[str, Field(pattern=_SCORER)]] = Field(
        default_factory=lambda: ["exact_match"], min_length=1, max_length=20
    )
    #: label_accuracy: the answer's first line/token must be one of these (None: the first
    #: line of the reference is the label)
    labels: list[Text] | None = Field(default=None, min_length=1, max_length=10_000)
    #: json_valid: a JSON-schema file the answer must also satisfy
    json_schema: FilePath | None = None
    #: examples scored at most (the file's first N); None: all of them
    limit: int | None = Field(default=None, ge=1, le=1_000_000)
    max_tokens: int = Field(default=64, ge=1, le=32_768)
    temperature: float = Field(default=0.0, ge=0, le=2)

    @field_validator("scorers")
    @classmethod
    def _unique(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError("a scorer is named twice")
        return v


#: an SQLAlchemy URL (``dialect[+driver]://...``) or ``journal:PATH``
_OPTUNA_URL = re.compile(r"^(journal:.+|[A-Za-z][A-Za-z0-9+.-]*://.*)$")


class StorageSpec(_Model):
    """Where results go; None means the embedded default under ``mlruns/``, unless the
    environment (``FTSWEEP_OPTUNA_STORAGE``, ``MLFLOW_TRACKING_URI``) says otherwise."""

    optuna: Text | None = None
    #: a tracking URI (``http://...``, ``sqlite:///...``, ``databricks``) or a folder
    mlflow: Text | None = None

    @field_validator("optuna")
    @classmethod
    def _optuna_url(cls, v: str | None) -> str | None:
        if v is not None and not _OPTUNA_URL.match(v):
            raise ValueError(
                "expected a database URL (sqlite:///path.db, postgresql://...) or journal:PATH"
            )
        return v


_Price = Annotated[float, Field(ge=0)]


class SweepSpec(_Model):
    """A whole sweep file."""

    name: str = Field(pattern=NAME_PATTERN)
    data: DataSpec
    backend: BackendSpec
    space: SpaceSpec = Field(default_factory=SpaceSpec)
    #: the (primary) objective; with ``objectives`` it is their first
    objective: ObjectiveSpec = Field(default_factory=ObjectiveSpec)
    #: several objectives (the first is the primary: pruning and ``best`` rank by it);
    #: None: the one ``objective``
    objectives: list[ObjectiveSpec] | None = Field(default=None, min_length=1, max_length=8)
    #: hard limits on reported metrics (``cost_usd`` included), by metric name
    constraints: dict[str, ConstraintSpec] = Field(default_factory=dict)
    trials: int = Field(default=8, ge=1, le=MAX_TRIALS)
    parallel: int = Field(default=1, ge=1, le=MAX_PARALLEL)
    timeout_s: float | None = Field(default=None, gt=0)
    target: float | None = None
    budget_usd: float | None = Field(default=None, ge=0)
    seed: int = Field(default=0, ge=0, le=MAX_SEED)
    sampler: SamplerSpec = Field(default_factory=SamplerSpec)
    pruner: PrunerSpec = Field(default_factory=PrunerSpec)
    diagnosis: DiagnosisSpec = Field(default_factory=DiagnosisSpec)
    storage: StorageSpec = Field(default_factory=StorageSpec)
    #: task metrics on a held-out file (``ftsweep evaluate``); None: none
    evaluate: EvaluateSpec | None = None
    #: configurations to train first (a baseline, known good settings); batch_size as an int
    enqueue: list[dict[str, float]] = Field(default_factory=list, max_length=MAX_TRIALS)
    #: USD per 1M trained tokens, by model name, overriding the built-in price table
    prices: dict[str, _Price] = Field(default_factory=dict)
    #: the file this spec was loaded from (set by :func:`~orchestrator.config.load_spec`)
    source: Path | None = Field(default=None, exclude=True)

    @model_validator(mode="before")
    @classmethod
    def _objectives_or_objective(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("objectives") is not None:
            if "objective" in data:
                raise ValueError("objectives: give objective or objectives, not both")
            found = data["objectives"]
            if isinstance(found, list) and found:
                data = {**data, "objective": found[0]}
        return data

    @field_validator("objectives")
    @classmethod
    def _distinct_objectives(cls, v: list[ObjectiveSpec] | None) -> list[ObjectiveSpec] | None:
        seen: set[str] = set()
        for i, o in enumerate(v or ()):
            if o.metric in seen:
                raise ValueError(f"{i}.metric: {o.metric!r} is named twice")
            seen.add(o.metric)
        return v

    @property
    def objective_list(self) -> tuple[ObjectiveSpec, ...]:
        """The sweep's objectives, the primary first (one: the ``objective``)."""
        return tuple(self.objectives) if self.objectives else (self.objective,)

    @property
    def multi_objective(self) -> bool:
        """Whether the sweep has several objectives (an Optuna study with ``directions``)."""
        return len(self.objective_list) > 1

    @field_validator("enqueue")
    @classmethod
    def _enqueue_keys(cls, v: list[dict[str, float]]) -> list[dict[str, float]]:
        for i, config in enumerate(v):
            unknown = sorted(set(config) - set(NAMES))
            if unknown:
                raise ValueError(f"{i}: unknown parameters {unknown}; known: {sorted(NAMES)}")
        return v

    @model_validator(mode="after")
    def _pruner_resources(self) -> Self:
        if self.pruner.name == "hyperband":
            try:
                check_hyperband_resources(self.pruner.options, _most(self.space.n_epochs))
            except ValueError as exc:
                raise ValueError(f"pruner.{exc}") from None
        return self


def _most(p: IntParam) -> int:
    """The largest value an integer parameter can take."""
    if p.value is not None:
        return p.value
    if p.choices:
        return max(p.choices)
    return p.high if p.high is not None else MAX_INT_PARAMETER

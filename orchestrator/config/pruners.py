"""``pruner.options``: each pruner's keywords, typed and ranged as Optuna's constructors
check them (and where they do not: hyperband's resources), so that a sweep whose pruner
Optuna would refuse fails when the file is loaded, before any store exists.

Options are passed to Optuna as given (``orchestrator.plan.samplers.make_pruner``); the
defaults here are Optuna's, shown for the reader, never filled in.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from orchestrator.config.fields import describe_validation_error

__all__ = ["PRUNER_OPTIONS", "check_hyperband_resources", "check_pruner_options"]

#: the largest count or step any option takes (Optuna needs no more; bigger ones overflow)
_MAX = 1_000_000
Count = Annotated[int, Field(ge=0, le=_MAX)]
Positive = Annotated[int, Field(ge=1, le=_MAX)]


class _Options(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


class NoOptions(_Options):
    """``none`` takes no options."""


class MedianOptions(_Options):
    n_startup_trials: Count = 5
    n_warmup_steps: Count = 0
    interval_steps: Positive = 1
    n_min_trials: Positive = 1


class PercentileOptions(MedianOptions):
    percentile: float = Field(default=25.0, ge=0, le=100)


class SuccessiveHalvingOptions(_Options):
    min_resource: Literal["auto"] | Positive = "auto"
    reduction_factor: Annotated[int, Field(ge=2, le=_MAX)] = 4
    min_early_stopping_rate: Count = 0
    bootstrap_count: Count = 0

    @model_validator(mode="after")
    def _bootstrap(self) -> Self:
        if self.bootstrap_count > 0 and self.min_resource == "auto":
            raise ValueError("bootstrap_count: needs an integer min_resource, not 'auto'")
        return self


class HyperbandOptions(_Options):
    min_resource: Positive = 1
    max_resource: Literal["auto"] | Positive = "auto"
    reduction_factor: Annotated[int, Field(ge=2, le=_MAX)] = 3
    bootstrap_count: Count = 0

    @model_validator(mode="after")
    def _resources(self) -> Self:
        if self.bootstrap_count > 0 and self.max_resource == "auto":
            raise ValueError("bootstrap_count: needs an integer max_resource, not 'auto'")
        if isinstance(self.max_resource, int) and self.max_resource < self.min_resource:
            raise ValueError(f"max_resource: must be >= min_resource ({self.min_resource})")
        return self


class ThresholdOptions(_Options):
    lower: float | None = None
    upper: float | None = None
    n_warmup_steps: Count = 0
    interval_steps: Positive = 1

    @model_validator(mode="after")
    def _bounds(self) -> Self:
        if self.lower is None and self.upper is None:
            raise ValueError("give lower, upper or both")
        if self.lower is not None and self.upper is not None and self.upper < self.lower:
            raise ValueError(f"upper: must be >= lower ({self.lower:g})")
        return self


PRUNER_OPTIONS: dict[str, type[_Options]] = {
    "none": NoOptions,
    "median": MedianOptions,
    "percentile": PercentileOptions,
    "successive_halving": SuccessiveHalvingOptions,
    "hyperband": HyperbandOptions,
    "threshold": ThresholdOptions,
}


def check_pruner_options(name: str, options: dict[str, Any]) -> None:
    """Raise ``ValueError("options.<key>: problem")`` for options Optuna would refuse."""
    model = PRUNER_OPTIONS[name]
    try:
        model.model_validate(options)
    except ValidationError as exc:
        loc, problem = describe_validation_error(exc, model)
        raise ValueError(f"options{'.' + loc if loc else ''}: {problem}") from None


def check_hyperband_resources(options: dict[str, Any], most_epochs: int) -> None:
    """Hyperband's default ``max_resource`` is the space's most epochs (``most_epochs``):
    a larger ``min_resource`` would leave it no bracket, and nothing would be pruned."""
    low = options.get("min_resource", 1)
    if "max_resource" not in options and isinstance(low, int) and low > most_epochs:
        raise ValueError(
            f"options.min_resource: must be <= the most epochs of the space ({most_epochs})"
        )

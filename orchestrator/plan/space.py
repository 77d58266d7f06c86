"""From a sweep's space spec and its data to an Optuna search space.

The batch size is given as a share of the training examples; here it becomes an integer range
(log scale) for this dataset, clamped to at least 1, at most the number of examples and at most
the provider's maximum. Every clamp is recorded as a note, which ``ftsweep space`` shows.
The backend's :class:`~orchestrator.backends.base.Capabilities` are checked here, before
anything is uploaded or run: a parameter it does not accept, and every end of every range
(each choice, each fixed value) against the values it does.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from orchestrator.backends.base import Backend, Hyperparameters
from orchestrator.config import BatchSizeParam, FloatParam, IntParam, SpaceSpec
from orchestrator.config.models import SamplerSpec
from orchestrator.core.errors import SpecError
from orchestrator.core.params import parameter

if TYPE_CHECKING:
    from optuna.distributions import BaseDistribution

__all__ = [
    "DEFAULT_PROMPT_LOSS_WEIGHT",
    "Dimension",
    "SearchSpace",
    "pinned_epochs",
    "refusal",
    "resolve_space",
]

_PLW = parameter("prompt_loss_weight")
#: searched by default on backends that accept prompt_loss_weight (the registry's range)
DEFAULT_PROMPT_LOSS_WEIGHT = FloatParam(low=_PLW.low, high=_PLW.high, log=_PLW.log)


@dataclass(frozen=True)
class Dimension:
    """One parameter of the resolved space."""

    name: str
    kind: Literal["fixed", "int", "float", "choice"]
    low: float | None = None
    high: float | None = None
    log: bool = False
    value: Any = None
    choices: tuple[Any, ...] = ()
    notes: tuple[str, ...] = ()

    def distribution(self) -> BaseDistribution | None:
        """The Optuna distribution, or None for a fixed value."""
        from optuna.distributions import (
            CategoricalDistribution,
            FloatDistribution,
            IntDistribution,
        )

        if self.kind == "int":
            assert self.low is not None and self.high is not None
            return IntDistribution(int(self.low), int(self.high), log=self.log)
        if self.kind == "float":
            assert self.low is not None and self.high is not None
            return FloatDistribution(self.low, self.high, log=self.log)
        if self.kind == "choice":
            return CategoricalDistribution(self.choices)
        return None

    def describe(self) -> str:
        if self.kind == "fixed":
            return f"fixed {self.value}"
        if self.kind == "choice":
            return "one of " + ", ".join(str(c) for c in self.choices)
        return f"{self.kind} {_num(self.low)} – {_num(self.high)}" + (" (log)" if self.log else "")

    def bounds(self) -> tuple[float, float]:
        """The smallest and the largest value: (v, v) fixed, (min, max) of choices, or
        (low, high) of a range."""
        if self.kind == "fixed":
            return float(self.value), float(self.value)
        if self.kind == "choice":
            return float(min(self.choices)), float(max(self.choices))
        assert self.low is not None and self.high is not None
        return float(self.low), float(self.high)

    def endpoints(self) -> list[tuple[str, float]]:
        """Every value at an end of this dimension, each with the sub-field it came from
        (``low``/``high``, ``choices``, or ``""`` for a fixed value)."""
        if self.kind == "fixed":
            return [("", float(self.value))]
        if self.kind == "choice":
            return [("choices", float(c)) for c in self.choices]
        lo, hi = self.bounds()
        return [("low", lo), ("high", hi)]

    def contains(self, value: float) -> bool:
        """Whether ``value`` is a value of this dimension."""
        if self.kind == "fixed":
            return bool(value == self.value)
        if self.kind == "choice":
            return value in self.choices
        lo, hi = self.bounds()
        if self.kind == "int" and value != int(value):
            return False
        return lo <= value <= hi

    def on_edge(self, value: Any) -> str | None:
        """'low' or 'high' when ``value`` sits at that end of a searched range."""
        if self.kind not in ("int", "float") or self.low is None or self.high is None:
            return None
        span = self.high - self.low
        if span <= 0:
            return None
        tol = span * 0.05 if self.kind == "float" else 0
        if value <= self.low + tol:
            return "low"
        if value >= self.high - tol:
            return "high"
        return None


def _num(x: float | None) -> str:
    return "?" if x is None else f"{x:g}"


@dataclass(frozen=True)
class SearchSpace:
    """The resolved space for one dataset and backend."""

    dimensions: tuple[Dimension, ...]
    n_examples: int

    def __getitem__(self, name: str) -> Dimension:
        for d in self.dimensions:
            if d.name == name:
                return d
        raise KeyError(name)

    def bounds(self, name: str) -> tuple[float, float]:
        """``(smallest, largest)`` value of parameter ``name`` (see :meth:`Dimension.bounds`)."""
        return self[name].bounds()

    def cheapest(self) -> Hyperparameters:
        """The cheapest trial of this space: the fewest epochs, every other parameter at
        its low end."""
        return self.hyperparameters({d.name: d.bounds()[0] for d in self.dimensions})

    def dearest(self) -> Hyperparameters:
        """The dearest trial: the most epochs, every other parameter at its high end."""
        return self.hyperparameters({d.name: d.bounds()[1] for d in self.dimensions})

    def distributions(self) -> dict[str, BaseDistribution]:
        out = {}
        for d in self.dimensions:
            dist = d.distribution()
            if dist is not None:
                out[d.name] = dist
        return out

    def fixed(self) -> dict[str, Any]:
        return {d.name: d.value for d in self.dimensions if d.kind == "fixed"}

    def hyperparameters(self, sampled: Mapping[str, Any]) -> Hyperparameters:
        """Sampled values plus the fixed ones, as a backend request's parameters."""
        return Hyperparameters.from_dict({**self.fixed(), **sampled})

    def to_dict(self) -> dict[str, Any]:
        return {
            "n_examples": self.n_examples,
            "parameters": {
                d.name: {
                    "kind": d.kind,
                    "low": d.low,
                    "high": d.high,
                    "log": d.log,
                    "value": d.value,
                    "choices": list(d.choices),
                    "notes": list(d.notes),
                }
                for d in self.dimensions
            },
        }


def _plain(name: str, p: IntParam | FloatParam, kind: Literal["int", "float"]) -> Dimension:
    if p.value is not None:
        return Dimension(name, "fixed", value=p.value)
    if p.choices is not None:
        if len(set(p.choices)) == 1:
            return Dimension(name, "fixed", value=p.choices[0])
        return Dimension(name, "choice", choices=tuple(sorted(set(p.choices))))
    assert p.low is not None and p.high is not None
    if p.low == p.high:
        return Dimension(name, "fixed", value=p.low, notes=("low == high",))
    return Dimension(name, kind, low=p.low, high=p.high, log=p.log)


def _batch(p: BatchSizeParam, n: int, provider_max: int | None, backend: str) -> Dimension:
    cap = max(1, n)
    cap_note = f"at most the {n} training examples"
    if provider_max is not None and provider_max < cap:
        cap, cap_note = provider_max, f"{backend}'s maximum is {provider_max}"
    notes: list[str] = []

    def clamp(x: int, label: str) -> int:
        if x > cap:
            notes.append(f"{label} {x} lowered to {cap} ({cap_note})")
            return cap
        return x

    if p.value is not None:
        return Dimension(
            "batch_size", "fixed", value=clamp(p.value, "batch size"), notes=tuple(notes)
        )
    if p.choices is not None:
        picked = sorted({clamp(c, "choice") for c in p.choices})
        if len(picked) == 1:
            return Dimension("batch_size", "fixed", value=picked[0], notes=tuple(notes))
        return Dimension("batch_size", "choice", choices=tuple(picked), notes=tuple(notes))
    if p.low_pct is not None and p.high_pct is not None:
        raw_low, raw_high = n * p.low_pct / 100, n * p.high_pct / 100
        low, high = max(1, round(raw_low)), max(1, round(raw_high))
        notes.append(f"{p.low_pct:g} % of {n} examples = {raw_low:.3g} -> {low}")
        notes.append(f"{p.high_pct:g} % of {n} examples = {raw_high:.3g} -> {high}")
    else:
        assert p.low is not None and p.high is not None
        low, high = p.low, p.high
    low, high = clamp(low, "low"), clamp(high, "high")
    if low == high:
        notes.append("range collapsed to one value")
        return Dimension("batch_size", "fixed", value=low, notes=tuple(notes))
    return Dimension("batch_size", "int", low=low, high=high, log=p.log, notes=tuple(notes))


def resolve_space(
    spec: SpaceSpec, n_examples: int, backend: type[Backend], source: str = "sweep"
) -> SearchSpace:
    """Resolve ``spec`` for ``n_examples`` training examples on ``backend``.

    Raises :class:`SpecError` (exit 2) for a parameter the backend does not accept, and for
    any end of the resolved space outside what it accepts
    (``space.n_epochs.high: openai accepts n_epochs 1 to 50, got 60``).
    """
    caps = backend.capabilities
    dims = [
        _plain("n_epochs", spec.n_epochs, "int"),
        _batch(spec.batch_size, n_examples, caps.max_batch_size, backend.name),
        _plain("learning_rate_multiplier", spec.learning_rate_multiplier, "float"),
    ]
    plw_accepted = caps.accepts("prompt_loss_weight")
    if spec.prompt_loss_weight is not None and not plw_accepted:
        raise SpecError(
            source,
            "space.prompt_loss_weight",
            f"backend {backend.name!r} does not accept prompt_loss_weight "
            "(only the local trainer does); remove it",
        )
    if plw_accepted:
        dims.append(
            _plain(
                "prompt_loss_weight", spec.prompt_loss_weight or DEFAULT_PROMPT_LOSS_WEIGHT, "float"
            )
        )
    space = SearchSpace(tuple(dims), n_examples)
    for dim in space.dimensions:
        for where, value in dim.endpoints():
            problem = refusal(backend, dim.name, value)
            if problem is not None:
                path = _spec_path(spec, dim.name, where, value)
                raise SpecError(source, path, problem)
    return space


def refusal(backend: type[Backend], name: str, value: float) -> str | None:
    """Why ``backend`` refuses ``name = value``, worded for users, or None:
    ``openai accepts n_epochs 1 to 50, got 60``."""
    caps = backend.capabilities
    if not caps.accepts(name):
        return f"backend {backend.name!r} does not accept {name}"
    if caps.violation(name, value) is None:
        return None
    allowed = caps.parameters[name]
    if isinstance(value, float) and not math.isfinite(value):
        return f"{backend.name} accepts {name} {allowed.describe()}, got {value}"
    return f"{backend.name} accepts {name} {allowed.describe()}, got {value:g}"


def _spec_path(spec: SpaceSpec, name: str, where: str, value: float) -> str:
    """The sweep file's field behind one end of a dimension."""
    path = f"space.{name}"
    if where == "choices":
        given = getattr(spec, name, None)
        choices = list(getattr(given, "choices", None) or [])
        return f"{path}.choices.{choices.index(value)}" if value in choices else f"{path}.choices"
    if name == "batch_size" and where and spec.batch_size.low_pct is not None:
        where += "_pct"  # the end came from a share of the examples
    return f"{path}.{where}" if where else path


def pinned_epochs(space: SearchSpace, sampler: SamplerSpec) -> int | None:
    """The epochs every job trains when the default search (``sampler: auto``) tells
    earlier epochs as trials: the space's most (``docs/search.md``); None otherwise."""
    if sampler.name != "auto" or not sampler.derives_epochs:
        return None
    try:
        dim = space["n_epochs"]
    except KeyError:
        return None
    return int(dim.bounds()[1]) if dim.kind in ("int", "choice") else None

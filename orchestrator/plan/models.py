"""The base model a sweep trains: an alias resolved against the provider's model list, and
the provider's shutdown date for it.

A sweep file may name ``FAMILY@latest`` (the newest snapshot of a family the provider lists,
see :mod:`orchestrator.catalog.names`): the run trains the snapshot it resolves to, so a newly
released one changes the sweep's fingerprint and ``ftsweep retune`` starts a new generation.
Where the provider announces a shutdown date for the model, ``run`` warns; ``retune`` refuses
a model already shut down (:func:`refuse_sunset`).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from orchestrator.core import clock
from orchestrator.core.errors import OrchestratorError, SpecError

if TYPE_CHECKING:
    from orchestrator.backends.base import Backend, BackendOptions, ModelInfo
    from orchestrator.plan.sweep import SweepPlan

__all__ = ["ResolvedModel", "notices", "refuse_sunset", "resolve_base_model"]

#: warn about a shutdown this many days ahead
WARN_DAYS = 120


@dataclass(frozen=True)
class ResolvedModel:
    """A plan whose ``spec.backend.model`` is the id to train, and what was found on the way."""

    plan: SweepPlan
    #: the provider's model list ([] when the backend has none)
    models: list[ModelInfo] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def _listed(backend: Backend, alias: bool) -> list[ModelInfo] | None:
    lister = getattr(backend, "list_models", None)
    if lister is None:
        return None
    try:
        return lister()  # type: ignore[no-any-return]
    except OrchestratorError:
        if alias:
            raise
        return None  # the jobs' own calls say more; a list is a nicety for a plain name


def resolve_base_model(
    plan: SweepPlan, backend: Backend, source: str, today: dt.date | None = None
) -> ResolvedModel:
    """Resolve the sweep's model against the backend's model list (one provider call, none
    for backends without a list) and collect shutdown warnings."""
    model = plan.spec.backend.model
    alias = "@" in model
    models = _listed(backend, alias)
    if models is None:
        if alias:
            raise SpecError(
                source,
                "backend.model",
                f"{model!r} is an alias, but backend {backend.name!r} has no model list to "
                "resolve it against: name the model itself",
            )
        return ResolvedModel(plan, warnings=notices(backend, model, backend.options))
    from orchestrator.catalog import names as modelnames
    from orchestrator.core.errors import UnknownModelError

    today = today or clock.today()
    try:
        resolved = modelnames.resolve_model(model, models, today)
    except UnknownModelError as exc:
        raise SpecError(source, "backend.model", str(exc).splitlines()[0]) from None
    if resolved != model:
        spec = plan.spec
        backend_spec = spec.backend.model_copy(update={"model": resolved})
        plan = replace(
            plan, spec=spec.model_copy(update={"backend": backend_spec}), requested_model=model
        )
    warnings = []
    sunset = modelnames.sunset(resolved, models, today)
    if sunset is not None and (sunset.passed or (sunset.date - today).days <= WARN_DAYS):
        warnings.append(modelnames.sunset_message(sunset, backend=backend.name))
    warnings += notices(backend, resolved, backend.options)
    return ResolvedModel(plan, list(models), warnings)


def notices(backend: Backend | type[Backend], model: str, options: BackendOptions) -> list[str]:
    """What the backend says a plan on ``model`` should know before it starts (its
    ``notices(model, options)``: OpenAI's days of job creation left, Azure's existing
    customers only), one line each; [] for a backend that says nothing."""
    said = getattr(backend, "notices", None)
    if said is None:
        return []
    return [str(line) for line in said(model, options)]


def refuse_sunset(resolved: ResolvedModel, source: str, today: dt.date | None = None) -> None:
    """Raise a :class:`SpecError` (exit 2) when the base model is already shut down."""
    from orchestrator.catalog import names as modelnames

    today = today or clock.today()
    plan = resolved.plan
    if plan.spec.backend.name == "openai" and today >= modelnames.OPENAI_JOBS_END:
        raise SpecError(
            source,
            "backend.name",
            "OpenAI takes no new fine-tuning jobs since "
            f"{modelnames.OPENAI_JOBS_END.isoformat()}: move this sweep to the azure or "
            "local backend",
        )
    sunset = modelnames.sunset(plan.spec.backend.model, resolved.models, today)
    if sunset is not None and sunset.passed:
        raise SpecError(
            source,
            "backend.model",
            modelnames.sunset_message(sunset, backend=plan.spec.backend.name),
        )

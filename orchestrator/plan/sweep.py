"""A sweep before it runs: the spec, its backend and options, its data, its space, its cost.

Used by ``ftsweep space``, ``ftsweep estimate`` and ``ftsweep run`` (which plans first): every
problem that can be found without training is found here, as a
:class:`~orchestrator.core.errors.UsageError` (exit 2) naming the file and the field, before a
study, an upload or a job exists. In order:

1. the sweep file (:func:`~orchestrator.config.load_spec`);
2. the backend (``backend.name``, from the registry) and its options (``backend.options``,
   validated by the backend's :attr:`~orchestrator.backends.base.Backend.Options`);
3. the model (``backend.model``), when tokens are counted: the backend's token counter;
4. the data: every check of ``ftsweep validate``, the dataset-level ones included (at least
   10 training examples, one format for both files);
5. the objectives and constraints, against what the backend's jobs report
   (:mod:`orchestrator.plan.objectives`);
6. the space: every end of every range against the backend's
   :class:`~orchestrator.backends.base.Capabilities`, then each ``enqueue`` entry;
7. the resources: the space's most demanding configuration against what the backend's jobs
   run on (:meth:`~orchestrator.backends.base.Backend.check_resources`: for ``local``, the
   GPU memory it needs).

``ftsweep run`` adds one step once the backend is built (:func:`preflight`): the backend's
own pre-flight check (credentials present and accepted, its address answering), a run-time
failure (exit 1) before a study exists. ``space`` and ``estimate`` never reach a provider.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from orchestrator.backends.base import (
    Backend,
    BackendOptions,
    Hyperparameters,
    TrainingRequest,
)
from orchestrator.config import SweepSpec, describe_validation_error, load_spec
from orchestrator.core.errors import (
    BackendError,
    DataError,
    OrchestratorError,
    SpecError,
    UnknownBackendError,
    UnknownModelError,
    UsageError,
)
from orchestrator.data.checks import check_dataset
from orchestrator.data.findings import DatasetStats
from orchestrator.plan.space import SearchSpace, pinned_epochs, refusal, resolve_space

if TYPE_CHECKING:
    import optuna

    from orchestrator.catalog.tokens import ExampleCounter

__all__ = [
    "Estimate",
    "Generation",
    "SweepPlan",
    "check_model",
    "estimate_sweep",
    "plan_spec",
    "plan_sweep",
    "preflight",
    "with_tokens",
]


@dataclass(frozen=True)
class Generation:
    """Which generation of a sweep's lineage a plan runs: the first is the sweep's own study
    (``ftsweep run``); ``ftsweep retune`` starts the next when the data or the base model
    changed (:mod:`orchestrator.workflows.retune`)."""

    number: int
    study_name: str
    #: the study of the generation it follows
    previous: str | None = None
    #: what changed since ``previous``, one phrase each ("training data: 40 -> 60 examples")
    changes: tuple[str, ...] = ()
    #: the search space as the sweep file gives it (the plan's may have been moved)
    file_space: Mapping[str, Any] | None = None
    #: configurations to train first (the previous generation's best), each with the trial
    #: user attributes to enqueue it with
    warm_start: tuple[tuple[Mapping[str, Any], Mapping[str, Any]], ...] = ()


@dataclass(frozen=True)
class SweepPlan:
    """A checked sweep: what :func:`plan_sweep` found valid."""

    spec: SweepSpec
    backend: type[Backend]
    #: the validated ``backend.options`` (the sweep's ``prices`` folded in where the backend
    #: takes a ``prices`` option, so estimates and actual costs read one table)
    options: BackendOptions
    train: DatasetStats
    valid: DatasetStats | None
    space: SearchSpace
    #: the backend's token counter for the model, when tokens were counted
    counter: ExampleCounter | None = None
    #: the generation this plan runs (None: the sweep's own study)
    generation: Generation | None = None
    #: the model as the sweep file names it, when that was an alias resolved for this run
    requested_model: str | None = None
    #: what the backend found checking the resources, as (label, value) rows
    resources: tuple[tuple[str, str], ...] = ()

    @property
    def study_name(self) -> str:
        """The Optuna study (and MLflow parent run) of this plan."""
        return self.generation.study_name if self.generation else self.spec.name

    def cheapest(self) -> Hyperparameters:
        """The cheapest trial this sweep can start: the space's cheapest, at the epochs
        every job trains when they are pinned (:func:`~orchestrator.plan.space.pinned_epochs`)."""
        cheapest = self.space.cheapest()
        pinned = pinned_epochs(self.space, self.spec.sampler)
        return cheapest if pinned is None else replace(cheapest, n_epochs=pinned)

    def make_sampler(self, seed: int | None = None) -> optuna.samplers.BaseSampler:
        """The sweep's sampler over the resolved space, seeded with ``seed`` (default the
        sweep file's)."""
        from orchestrator.plan.samplers import make_sampler

        return make_sampler(self.spec, self.space, str(self.spec.source or self.spec.name), seed)

    def make_pruner(self) -> optuna.pruners.BasePruner:
        """The sweep's pruner (one intermediate value per epoch)."""
        from orchestrator.plan.samplers import make_pruner

        return make_pruner(self.spec, self.space, str(self.spec.source or self.spec.name))

    def make_backend(self, workdir: Path) -> Backend:
        """The backend instance, built from the validated options (a backend written for
        the earlier contract is a one-line ``BackendError``: :func:`registry.build`)."""
        from orchestrator.backends import registry

        return registry.build(self.backend, self.options, workdir=workdir)

    def request(
        self,
        hyperparameters: Hyperparameters,
        *,
        trial: int,
        metadata: Mapping[str, str] | None = None,
    ) -> TrainingRequest:
        """The training request of one trial of this sweep."""
        spec = self.spec
        return TrainingRequest.make(
            study=self.study_name,
            trial=trial,
            model=spec.backend.model,
            hyperparameters=hyperparameters,
            train_file=spec.data.train,
            valid_file=spec.data.valid,
            seed=spec.seed,
            options=self.options.model_dump(mode="json", exclude_defaults=True),
            metadata=metadata,
        )


def plan_sweep(path: str | os.PathLike[str], *, count_tokens: bool = False) -> SweepPlan:
    """Load the sweep file and check everything that can be checked before it runs.

    With ``count_tokens`` the backend's token counter is resolved (which checks the model
    name) and the data's tokens are counted with it; without, the model is not looked up.
    """
    return plan_spec(load_spec(path), str(path), count_tokens=count_tokens)


def plan_spec(spec: SweepSpec, shown: str, *, count_tokens: bool = False) -> SweepPlan:
    """:func:`plan_sweep` for a loaded (or derived) spec; ``shown`` names it in errors."""
    from orchestrator.plan.samplers import check_sampler_package

    check_sampler_package(spec, shown)  # before a tokenizer or a model is loaded
    backend = _backend(shown, spec)
    options = _options(shown, spec, backend)
    counter = _counter(shown, spec, backend, options) if count_tokens else None
    train, valid = _data(shown, spec, counter)
    _evaluate(shown, spec)
    _objective(shown, spec, backend, options)
    space = resolve_space(spec.space, train.n_examples, backend, shown)
    _enqueued(shown, spec, backend, space)
    _search(shown, spec, space)
    resources = _resources(shown, spec, backend, options, space, train)
    return SweepPlan(spec, backend, options, train, valid, space, counter, resources=resources)


def with_tokens(plan: SweepPlan, shown: str, model: str | None = None) -> SweepPlan:
    """``plan`` (made without counting tokens) with its data's tokens counted by the
    backend's counter for ``model`` (default: the plan's): what :func:`plan_sweep` with
    ``count_tokens`` gives, done later, so a finished sweep run again (a read) loads no
    tokenizer. An unknown model is a :class:`SpecError` on ``backend.model`` (exit 2)."""
    spec = plan.spec
    if model is not None and model != spec.backend.model:
        spec = spec.model_copy(update={"backend": spec.backend.model_copy(update={"model": model})})
    counter = _counter(shown, spec, plan.backend, plan.options)
    train, valid = _data(shown, spec, counter)
    return replace(plan, train=train, valid=valid, counter=counter)


def check_model(plan: SweepPlan, shown: str) -> None:
    """The plan's model, looked up as ``estimate`` and ``run`` look it up (the backend's token
    counter, nothing counted): an unknown model is the same :class:`SpecError` on
    ``backend.model`` (exit 2), for a plan made without counting tokens (``ftsweep space``)."""
    _counter(shown, plan.spec, plan.backend, plan.options)


def replan(plan: SweepPlan, spec: SweepSpec, shown: str) -> SweepPlan:
    """``plan`` for a derived ``spec`` (another space or ``enqueue``, same data and backend):
    the space resolved and the enqueued entries checked again, the data not read again."""
    space = resolve_space(spec.space, plan.train.n_examples, plan.backend, shown)
    _enqueued(shown, spec, plan.backend, space)
    _search(shown, spec, space)
    resources = _resources(shown, spec, plan.backend, plan.options, space, plan.train)
    return replace(plan, spec=spec, space=space, resources=resources)


def _resources(
    shown: str,
    spec: SweepSpec,
    backend: type[Backend],
    options: BackendOptions,
    space: SearchSpace,
    train: DatasetStats,
) -> tuple[tuple[str, str], ...]:
    """The backend's check of the space's most demanding configuration (exit 2 naming the
    file when it refuses), and the rows it found."""
    try:
        return backend.check_resources(spec.backend.model, options, space.dearest(), train)
    except UsageError as exc:
        raise SpecError(shown, "", str(exc).splitlines()[0]) from None


def _search(shown: str, spec: SweepSpec, space: SearchSpace) -> None:
    """The sampler and pruner can be built (a sampler's package is installed, Optuna takes
    the pruner's options): ``space``, ``estimate`` and ``run`` refuse alike, before any store
    exists."""
    from orchestrator.plan.samplers import make_pruner, make_sampler

    make_sampler(spec, space, shown)
    make_pruner(spec, space, shown)


def preflight(backend: Backend) -> None:
    """The built backend's :meth:`~orchestrator.backends.base.Backend.preflight`, before the
    first trial. Its own errors pass unchanged (exit 1, one line); anything else a backend
    raises becomes a :class:`BackendError` naming the backend."""
    try:
        backend.preflight()
    except OrchestratorError:
        raise
    except Exception as exc:
        text = str(exc).splitlines()[0] if str(exc) else ""
        raise BackendError(
            f"backend {backend.name!r}: pre-flight check failed: {type(exc).__name__}: {text}"
        ) from exc


def _backend(shown: str, spec: SweepSpec) -> type[Backend]:
    from orchestrator.backends import registry

    try:
        return registry.load(spec.backend.name)
    except UnknownBackendError as exc:
        raise SpecError(shown, "backend.name", str(exc)) from None


def _options(shown: str, spec: SweepSpec, backend: type[Backend]) -> BackendOptions:
    raw = dict(spec.backend.options)
    if spec.prices and "prices" in backend.Options.model_fields and "prices" not in raw:
        raw["prices"] = dict(spec.prices)
    evaluated = spec.evaluate is not None and spec.objective.metric.startswith("eval_")
    if evaluated and "evaluate" in backend.Options.model_fields and "evaluate" not in raw:
        assert spec.evaluate is not None  # the objective is a score: the job reports it
        raw["evaluate"] = spec.evaluate.model_dump(mode="json", exclude_none=True)
    try:
        return backend.parse_options(raw)
    except ValidationError as exc:
        loc, problem = describe_validation_error(exc, backend.Options)
        raise SpecError(shown, "backend.options" + (f".{loc}" if loc else ""), problem) from None
    except (UsageError, ValueError, TypeError) as exc:  # a backend's own parse_options
        raise SpecError(shown, "backend.options", str(exc).splitlines()[0]) from None


def _counter(
    shown: str, spec: SweepSpec, backend: type[Backend], options: BackendOptions
) -> ExampleCounter | None:
    try:
        return backend.token_counter(spec.backend.model, options)
    except UnknownModelError as exc:
        raise SpecError(shown, "backend.model", str(exc).splitlines()[0]) from None


def _data(
    shown: str, spec: SweepSpec, counter: ExampleCounter | None
) -> tuple[DatasetStats, DatasetStats | None]:
    train, valid = spec.data.train, spec.data.valid
    for field, file in (("data.train", train), ("data.valid", valid)):
        if file is not None and not file.is_file():
            raise SpecError(shown, field, f"no such file: {file}")
    report = check_dataset(train, valid, counter, model=spec.backend.model)
    if report.errors:
        first = report.errors[0]
        total = sum(f.count for f in report.errors)
        command = f"ftsweep validate {train}" + (f" --valid {valid}" if valid else "")
        more = f" ({total - 1} more errors: run `{command}`)" if total > 1 else ""
        raise DataError(first.file, first.message + more, first.lines[0] if first.lines else None)
    return report.train, report.valid


def _evaluate(shown: str, spec: SweepSpec) -> None:
    """The ``evaluate:`` block's file is there and readable, its scorers load."""
    if spec.evaluate is None:
        return
    from orchestrator.evaluation import load_scorers, read_examples

    if not spec.evaluate.file.is_file():
        raise SpecError(shown, "evaluate.file", f"no such file: {spec.evaluate.file}")
    read_examples(spec.evaluate.file, spec.evaluate.limit)
    load_scorers(spec.evaluate, shown)


def _objective(
    shown: str, spec: SweepSpec, backend: type[Backend], options: BackendOptions
) -> None:
    from orchestrator.plan.objectives import check_objectives

    known = backend.metric_names(options)
    check_objectives(shown, spec, known, backend.name, backend.capabilities.priced)


def _enqueued(shown: str, spec: SweepSpec, backend: type[Backend], space: SearchSpace) -> None:
    """Each configuration to train first: every searched parameter given, every value one
    the backend accepts and inside the resolved space."""
    searched = [d.name for d in space.dimensions if d.kind != "fixed"]
    for i, entry in enumerate(spec.enqueue):
        for name in searched:
            if name not in entry:
                raise SpecError(
                    shown,
                    f"enqueue.{i}.{name}",
                    "required field is missing (give every searched parameter: "
                    f"{', '.join(searched)}; fixed ones may be left out)",
                )
        for name, value in entry.items():
            problem = refusal(backend, name, value)
            if problem is not None:
                raise SpecError(shown, f"enqueue.{i}.{name}", problem)
            dim = space[name]
            if not dim.contains(value):
                raise SpecError(
                    shown,
                    f"enqueue.{i}.{name}",
                    f"{value:g} is outside the search space ({dim.describe()})",
                )


@dataclass(frozen=True)
class Estimate:
    """Projected size and cost of a sweep, by the backend's own estimates. Costs are None
    where the backend is free or cannot say; token counts are None where none were counted.
    ``price_basis`` says what the backend's estimate grows with: ``"tokens"`` (then
    ``price_per_million`` is its estimate for one epoch over 1M billed tokens), ``"job"``
    (its estimate does not grow with the tokens: ``cost_per_trial`` is its price per job and
    ``price_per_million`` is None), or None (no estimate)."""

    model: str
    trials: int
    tokens_per_epoch: int | None
    price_per_million: float | None
    epochs: tuple[int, int]
    steps_per_trial: tuple[int, int]
    cost_per_trial: tuple[float, float] | None
    cost_sweep: tuple[float, float] | None
    budget_usd: float | None
    trials_within_budget: int | None
    price_basis: str | None = None
    #: what the backend found about one job's resources (e.g. its GPU memory), as rows
    resources: tuple[tuple[str, str], ...] = ()


def estimate_sweep(plan: SweepPlan) -> Estimate:
    """Tokens, steps and cost range per trial (the cheapest and the dearest trial the sweep
    can start, priced by ``backend.estimate_cost``) and for the whole sweep."""
    spec, n = plan.spec, plan.train.n_examples
    e_lo, e_hi = (int(x) for x in plan.space.bounds("n_epochs"))
    e_lo = plan.cheapest().n_epochs  # every job trains the most when they are pinned
    b_lo, b_hi = (int(x) for x in plan.space.bounds("batch_size"))
    steps = (e_lo * math.ceil(n / b_hi), e_hi * math.ceil(n / b_lo))
    tokens = plan.train.billed_tokens if plan.train.tokens is not None else None
    cheapest = plan.request(plan.cheapest(), trial=0)
    dearest = plan.request(plan.space.dearest(), trial=0)
    with tempfile.TemporaryDirectory(prefix="ftsweep-estimate-") as tmp:
        backend = plan.make_backend(Path(tmp))  # builds no client, reaches nobody
        low = backend.estimate_cost(cheapest, plan.train)
        high = backend.estimate_cost(dearest, plan.train)
        one_epoch = replace(cheapest, hyperparameters=replace(cheapest.hyperparameters, n_epochs=1))
        price = backend.estimate_cost(one_epoch, replace(plan.train, billed_tokens=1_000_000))
        # what the estimate grows with, at token counts large enough to dwarf its rounding
        probes = [replace(plan.train, billed_tokens=n) for n in (100_000_000, 200_000_000)]
        scaled = [backend.estimate_cost(one_epoch, probe) for probe in probes]
    per_trial = sweep = None
    within = basis = None
    if low is not None and high is not None:
        basis = "tokens" if _per_token(*scaled) else "job"
        per_trial = (min(low, high), max(low, high))
        sweep = (round(per_trial[0] * spec.trials, 4), round(per_trial[1] * spec.trials, 4))
        if spec.budget_usd is not None and per_trial[1] > 0:
            within = min(spec.trials, int(spec.budget_usd // per_trial[1]))
    return Estimate(
        model=spec.backend.model,
        trials=spec.trials,
        tokens_per_epoch=tokens,
        price_per_million=price if basis == "tokens" else None,
        epochs=(e_lo, e_hi),
        steps_per_trial=steps,
        cost_per_trial=per_trial,
        cost_sweep=sweep,
        budget_usd=spec.budget_usd,
        trials_within_budget=within,
        price_basis=basis,
        resources=plan.resources,
    )


def _per_token(once: float | None, twice: float | None) -> bool:
    """Whether an estimate is a price per token: twice the tokens cost twice as much."""
    if once is None or twice is None:
        return False
    return math.isclose(twice, 2 * once, rel_tol=1e-3, abs_tol=1e-9)

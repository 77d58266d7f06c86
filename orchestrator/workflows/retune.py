"""``ftsweep retune``: redo a sweep only when what its result depends on changed.

A sweep's results depend on its data, its base model and a few settings (its
:class:`~orchestrator.plan.fingerprint.Fingerprint`). :func:`retune` compares the current
fingerprint with the one the latest generation of the sweep recorded
(:mod:`.generation`):

- **nothing changed** and that generation produced a model: it says so and returns; nothing
  is trained, and the only provider call is listing models (to resolve an alias);
- **nothing changed** but that generation never finished: it is resumed;
- **something changed**: a new generation starts, a new study ``NAME.gN`` linked to the one
  before (study attributes and MLflow tags: the previous study, what changed). Its first
  trials are the previous generation's best configurations, the batch size rescaled to keep
  its share of the new number of examples; its space is the previous one, moved where that
  sweep's advice says (a parameter whose best values sat at an edge).

Only one retune of a sweep runs at a time, across machines: a lock held in the Optuna storage
(:mod:`.retune_lock`). A second retune says who holds it and returns.

A generation runs through the sweep engine (:func:`orchestrator.engine.run_sweep`), recorded
in MLflow by the engine's MLflow listener, which also puts the morning report
(:mod:`.retune_report`) into the generation's parent run at the sweep's end: retune itself
never opens MLflow. A generation that completes a trial moves the registered model's
``champion`` alias to its best (the MLflow listener); one that fails leaves the previous
generation's model current.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from orchestrator.core.attrs import StudyAttrs
from orchestrator.engine import Overrides, SweepResult
from orchestrator.engine import run_sweep as run_engine
from orchestrator.engine.events import Records, SweepFinished
from orchestrator.plan.fingerprint import changes, fingerprint
from orchestrator.plan.models import refuse_sunset, resolve_base_model
from orchestrator.plan.sweep import Generation, SweepPlan, plan_sweep, preflight
from orchestrator.stores.read import GenerationInfo, generation_study_name, generations
from orchestrator.stores.study import bound_mlflow_retries, check_stores, resolve_stores
from orchestrator.tracking import MlflowListener, Tracker
from orchestrator.workflows.generation import (
    fingerprint_of,
    next_plan,
    nothing_to_do,
    warm_start_configs,
)
from orchestrator.workflows.retune_lock import retune_lock
from orchestrator.workflows.retune_report import retune_report

if TYPE_CHECKING:
    import optuna

    from orchestrator.config import SweepSpec
    from orchestrator.engine.events import Listener
    from orchestrator.stores.study import Stores

__all__ = ["RetuneResult", "retune", "warm_start_configs"]

Action = Literal["unchanged", "resumed", "started", "first", "locked"]
#: the morning report's place in the generation's parent run
REPORT_ARTIFACT = "report/retune.html"


@dataclass(frozen=True)
class RetuneResult:
    action: Action
    #: one line for the user
    message: str
    #: the generation the retune ran (or found current)
    generation: int | None = None
    study_name: str | None = None
    changes: tuple[str, ...] = ()
    sweep: SweepResult | None = None
    previous: GenerationInfo | None = None
    report: Path | None = None

    @property
    def completed(self) -> bool:
        """Whether the retune left a working model (a sweep that completed a trial, or
        nothing to do)."""
        if self.action in ("unchanged", "locked"):
            return True
        return self.sweep is not None and self.sweep.completed > 0


def retune(
    spec_path: str | os.PathLike[str],
    overrides: Overrides | None = None,
    *,
    listeners: Sequence[Listener] = (),
    report: Path | None = None,
    today: dt.date | None = None,
    announce: Callable[[str], None] = lambda _: None,
    **loop: Any,
) -> RetuneResult:
    """Retune the sweep in ``spec_path`` if its data, base model or settings changed since
    its latest generation (see the module docstring). ``report``: also write the morning
    report (HTML) there. ``announce`` gets a line before a sweep starts (what and why);
    ``loop`` goes to :func:`~orchestrator.engine.run_sweep` (its clock, sleep and wall
    clock)."""
    source = str(spec_path)
    overrides = overrides or Overrides()
    # first without counting tokens (loading a tokenizer can take seconds): when the files'
    # hashes, the model and the settings are as recorded, there is nothing to do
    plan = plan_sweep(spec_path)
    spec = plan.spec
    stores = resolve_stores(spec)
    backend = plan.make_backend(stores.backend_dir(plan.backend.name))
    resolved = resolve_base_model(plan, backend, source, today)  # one provider call at most
    refuse_sunset(resolved, source, today)
    for text in resolved.warnings:
        announce(f"warning: {text}")
    counted = False

    def counting() -> None:  # the full plan, the data's tokens counted
        nonlocal resolved, counted
        if not counted:
            full = plan_sweep(spec_path, count_tokens=True)
            model = resolved.plan.spec.backend.model
            spec_model = full.spec.backend.model_copy(update={"model": model})
            full = replace(
                full,
                spec=full.spec.model_copy(update={"backend": spec_model}),
                requested_model=resolved.plan.requested_model,
            )
            resolved = replace(resolved, plan=full)
            counted = True

    def run(
        action: Action,
        number: int,
        planned: SweepPlan,
        diffs: tuple[str, ...],
        previous: GenerationInfo | None,
    ) -> RetuneResult:
        """Generation ``number`` through the engine, its morning report in its parent run."""
        record = _Recording(spec, action, number, diffs, previous)
        sweep = run_engine(
            spec_path,
            overrides,
            listeners=listeners,
            tracking=record,
            probe_tracking=True,
            plan=planned,
            models=resolved.models,
            **loop,
        )
        result = RetuneResult(
            action, _ran(sweep.study, sweep.plan, number), number, sweep.plan.study_name,
            diffs, sweep, previous,
        )  # fmt: skip
        return _with_report(result, report, spec, record.text)

    current = fingerprint(resolved.plan)
    if not nothing_to_do(generations(spec, details=False), current):
        # a sweep will run: the provider and the stores must answer before the lock (which
        # creates the study storage) exists, as for `ftsweep run`
        preflight(backend)
        bound_mlflow_retries()
        check_stores(stores)
    with retune_lock(stores.optuna, spec.name) as holder:
        if holder is not None:
            message = f"another retune of {spec.name} is running ({holder}); nothing to do"
            return RetuneResult("locked", message)
        found = generations(spec, details=False)
        head = found[-1] if found else None
        if head is None:
            announce(f"{spec.name}: no sweep yet; running the first generation")
            counting()
            return run("first", 1, resolved.plan, (), None)
        was = fingerprint_of(head)
        diffs = tuple(changes(was, current))
        if not diffs:
            if head.succeeded:
                when = _when(head.concluded)
                message = (
                    f"{spec.name}: nothing changed since generation {head.number} "
                    f"({head.study_name}{when}); nothing to do"
                )
                result = RetuneResult(
                    "unchanged", message, head.number, head.study_name, (), None, head
                )
                return _with_report(result, report, spec)
            announce(f"{spec.name}: resuming generation {head.number} ({head.study_name})")
            counting()
            gen = Generation(head.number, head.study_name, head.previous, head.changes)
            gen = replace(gen, file_space=head.attrs.get(StudyAttrs.FILE_SPACE))
            planned = replace(resolved.plan, generation=gen if head.number > 1 else None)
            return run("resumed", head.number, planned, head.changes, _previous(found, head))
        counting()
        diffs = tuple(changes(was, fingerprint(resolved.plan)))  # with the token counts
        base = next((g for g in reversed(found) if g.succeeded), None)
        number = head.number + 1
        name = generation_study_name(spec.name, number)
        planned = next_plan(resolved.plan, source, base, name, number, diffs, overrides.trials)
        announce(
            f"{spec.name}: {'; '.join(diffs)}: starting generation {number} ({name})"
            + (f", warm-started from {base.study_name}" if base else "")
        )
        return run("started", number, planned, diffs, base)


def _ran(study: optuna.Study, plan: SweepPlan, number: int) -> str:
    done = sum(1 for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE")
    from orchestrator.results.front import primary_value
    from orchestrator.results.table import best_trial

    top = best_trial(study) if done else None
    best = primary_value(top) if top is not None else None
    tail = f", best {plan.spec.objective.metric}={best:.4f}" if best is not None else ""
    return f"generation {number} ({plan.study_name}): {done} trial(s) completed{tail}"


def _when(concluded: Mapping[str, Any] | None) -> str:
    at = (concluded or {}).get("at")
    if not isinstance(at, int | float):
        return ""
    return ", " + dt.datetime.fromtimestamp(at, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def _previous(found: Sequence[GenerationInfo], head: GenerationInfo) -> GenerationInfo | None:
    return next((g for g in found if g.study_name == head.previous), None)


@dataclass
class _Recording:
    """The generation's tracking, handed to the engine: the MLflow listener on the sweep's
    store, with the morning report of this retune (``action`` of generation ``number``)."""

    spec: SweepSpec
    action: Action
    number: int
    changes: tuple[str, ...]
    previous: GenerationInfo | None
    #: the report as the listener logged it (the same text goes to ``--report``)
    text: str | None = None

    def __call__(self, spec: SweepSpec, stores: Stores) -> Listener:
        tracker = Tracker(stores.mlflow, spec.name, stores.artifacts)
        return _ReportingListener(tracker, self)

    def render(self, e: SweepFinished) -> str:
        """The morning report of the generation that just ended."""
        message = _ran(e.study, e.plan, self.number)
        result = RetuneResult(
            self.action, message, self.number, e.plan.study_name, self.changes, None,
            self.previous,
        )  # fmt: skip
        self.text = retune_report(result, self.spec, e)
        return self.text


class _ReportingListener(MlflowListener):
    """The engine's MLflow listener; at the sweep's end, the morning report goes into the
    generation's parent run (:data:`REPORT_ARTIFACT`), written again by each retune that
    runs the generation."""

    def __init__(self, tracker: Tracker, recording: _Recording) -> None:
        super().__init__(tracker)
        self.recording = recording

    def sweep_finished(self, e: SweepFinished) -> Records | None:
        records = super().sweep_finished(e)
        if self.parent is not None:
            self.tracker.log_text(self.parent, self.recording.render(e), REPORT_ARTIFACT)
        return records


def _with_report(
    result: RetuneResult, path: Path | None, spec: SweepSpec, text: str | None = None
) -> RetuneResult:
    """Write the morning report (``text``, the one the MLflow listener logged, else rendered
    here) to ``path``."""
    if path is None:
        return result
    text = text if text is not None else retune_report(result, spec)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return replace(result, report=path)

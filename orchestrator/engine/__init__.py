"""The sweep engine: :func:`run_sweep` plans, opens the stores, runs the loop, and concludes.

Data flow::

    plan_sweep (spec, data, backend capabilities and options, space)      [errors: exit 2]
      -> pre-flight: the backend's (credentials, one authenticated call), [errors: exit 1]
         then the stores answer (MLflow server, database URLs)
      -> stores: MLflow (Tracker), then the Optuna study                  [errors: exit 1]
      -> SweepStarted -> SweepLoop (launch / poll / prune / conclude, events) -> SweepFinished

``run_sweep`` on a sweep whose study exists resumes it: trials already finished count towards
``trials``, and jobs left running by a dead process are re-attached, not trained again. The
MLflow listener (:mod:`orchestrator.tracking`) always listens; callers add theirs (the CLI's
console listener) through ``listeners``.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from orchestrator.analysis.advice import sweep_advice
from orchestrator.analysis.diagnosis import Advice
from orchestrator.config import load_spec
from orchestrator.core import progress
from orchestrator.core.attrs import StudyAttrs, TrialAttrs
from orchestrator.core.errors import SweepInterrupted
from orchestrator.engine.budget import Budget
from orchestrator.engine.events import Dispatcher, Listener, Note, SweepFinished, SweepStarted
from orchestrator.engine.limits import Limits, counted
from orchestrator.plan.fingerprint import Fingerprint, changes, file_sha256, fingerprint
from orchestrator.plan.models import ResolvedModel, resolve_base_model
from orchestrator.plan.sweep import Generation, SweepPlan, plan_spec, preflight, with_tokens
from orchestrator.results.front import primary_value
from orchestrator.results.table import TrialTable, best_trial, trials_table
from orchestrator.stores.locks import exclusive, launch_lock
from orchestrator.stores.study import (
    Stores,
    bound_mlflow_retries,
    check_stores,
    open_study,
    resolve_stores,
)

if TYPE_CHECKING:
    import optuna
    import pandas as pd

    from orchestrator.backends.base import ModelInfo
    from orchestrator.config import SweepSpec
    from orchestrator.engine.loop import SweepLoop

__all__ = ["Overrides", "SweepResult", "run_sweep"]


@dataclass(frozen=True)
class Overrides:
    """Command-line values that replace the sweep file's."""

    trials: int | None = None
    parallel: int | None = None
    budget_usd: float | None = None


@dataclass(frozen=True)
class SweepResult:
    plan: SweepPlan
    stores: Stores
    study: optuna.Study
    #: one row per trial (:func:`orchestrator.results.table.trials_table`)
    table: TrialTable
    advice: Advice | None
    experiment_id: str
    stop_reason: str | None
    #: did this run start or finish any trial (False: the sweep was already complete)
    changed: bool

    @property
    def frame(self) -> pd.DataFrame:
        """The table as a pandas DataFrame (built when first asked for)."""
        return self.table.frame

    @property
    def completed(self) -> int:
        return sum(1 for t in self.study.get_trials(deepcopy=False) if t.state.name == "COMPLETE")


def _spent(study: optuna.Study) -> float:
    trials = study.get_trials(deepcopy=False)
    return sum(float(t.user_attrs.get(TrialAttrs.COST, 0.0)) for t in trials)


#: builds the sweep's tracking listener once the stores are known (the entry point's choice:
#: :func:`orchestrator.workflows.sweep.run_sweep` passes MLflow's)
TrackingFactory = Callable[["SweepSpec", Stores], Listener]
#: the configurations (and the trial attributes to enqueue each with) a new study of ``plan``
#: trains first: :func:`orchestrator.workflows.importer.warm.imported_warm_start`
WarmStart = Callable[[SweepPlan], Sequence[tuple[Mapping[str, Any], Mapping[str, Any]]]]


def run_sweep(
    spec_path: str | os.PathLike[str],
    overrides: Overrides = Overrides(),
    *,
    listeners: Sequence[Listener] = (),
    tracking: TrackingFactory | None = None,
    probe_tracking: bool = False,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    wall: Callable[[], float] = time.time,
    plan: SweepPlan | None = None,
    models: Sequence[ModelInfo] | None = None,
    resume: str | None = None,
    warm_start: WarmStart | None = None,
) -> SweepResult:
    """Run (or resume) the sweep in ``spec_path`` to its limits and conclude it.

    ``listeners`` receive every event. ``tracking`` builds the listener that records the
    sweep (MLflow, at the entry point): built only when something may be recorded (a finished
    sweep run again is a read), its ``sweep_started`` must succeed before any trial starts
    (else the run stops, exit 1), and ``probe_tracking`` asks its server's health first.
    ``clock``/``sleep``/``wall`` are the loop's time (monotonic seconds, waiting, and the
    wall clock of heartbeats). ``plan`` (with ``models``, the provider's list it was resolved
    against) is a plan made already: ``ftsweep retune``'s next generation; otherwise the sweep
    file is planned here, the head of its lineage resumed and its base model resolved.
    ``resume`` is the command that re-attaches, as messages name it (default ``ftsweep run
    SPEC``). ``warm_start(plan)`` gives the configurations (with trial attributes) a new
    study trains first (``ftsweep import``'s best, wired in by the entry point)."""
    again = resume or f"ftsweep run {spec_path}"  # the command that resumes this sweep
    notes: list[str] = []
    given = plan
    maybe_done, head = False, None
    tokens_counted = plan is not None  # a given plan comes counted as its maker wanted
    if plan is None:
        # a finished sweep run again is a read: when its data hash as its study recorded,
        # the plan counts no tokens (no tokenizer, nor the library it needs, is loaded) and
        # the full check follows below; otherwise the data are read once, counted
        file_spec = load_spec(spec_path)
        maybe_done, head = _data_as_recorded(file_spec, overrides.trials or file_spec.trials)
        plan = plan_spec(file_spec, str(spec_path), count_tokens=not maybe_done)
        tokens_counted = not maybe_done
        resolved = None
    else:
        resolved = ResolvedModel(plan, list(models or []), [])
    file_model = plan.spec.backend.model
    spec = plan.spec
    limits = Limits(
        trials=overrides.trials or spec.trials,
        parallel=overrides.parallel or spec.parallel,
        timeout_s=spec.timeout_s,
        target=spec.target,
    )
    stores = resolve_stores(spec)
    backend = plan.make_backend(stores.backend_dir(plan.backend.name))
    preflight(backend)  # credentials and the provider's address, before any store or trial
    if resolved is None:  # the alias, the sunset: the provider's model list
        resolved = resolve_base_model(plan, backend, str(spec_path))
        plan = resolved.plan
    notes += resolved.warnings
    bound_mlflow_retries()
    check_stores(stores, mlflow=probe_tracking)  # they answer (else one line, exit 1)
    if given is None:  # the sweep file's: resume the latest generation of its lineage
        # (read already when the sweep may be finished: one read of the store, not two)
        plan = replace(plan, generation=head if maybe_done else head_generation(spec))
    printed = fingerprint(plan)
    if maybe_done and not notes:
        done = _finished_already(plan, stores.optuna, limits, printed)
        if done is not None:  # nothing to run, nothing to log: MLflow is not even opened
            return _as_it_stands(plan, stores, done, listeners, backend.name, printed)
    if not tokens_counted:  # not finished after all: count the tokens
        plan = with_tokens(plan, str(spec_path), file_model)
        printed = fingerprint(plan)
    # creating a fresh store takes seconds (MLflow's schema): say what the wait is
    progress.report("preparing the stores (MLflow tracking, Optuna study) ...")
    recorder = tracking(spec, stores) if tracking is not None else None
    study = open_study(
        spec, stores, plan.study_name, sampler=plan.make_sampler, pruner=plan.make_pruner()
    )
    notes += _record_generation(study, plan, printed, str(spec_path))
    debug = os.environ.get("FTSWEEP_DEBUG") == "1"
    recorders = [recorder] if recorder is not None else []
    emit = Dispatcher([*recorders, *listeners], debug=debug)
    if plan.generation is not None:  # a retune's warm start: the best of the one before
        for config, attrs in plan.generation.warm_start:
            study.enqueue_trial(dict(config), dict(attrs), skip_if_exists=True)
    elif warm_start is not None and not study.get_trials(deepcopy=False):
        for config, attrs in warm_start(plan):  # a new study: the entry point's first trials
            study.enqueue_trial(dict(config), dict(attrs), skip_if_exists=True)
    for config in spec.enqueue:
        study.enqueue_trial(dict(config), skip_if_exists=True)
    _retry_environment_failures(study, limits.trials)
    started = SweepStarted(plan, study, backend.name, bool(study.trials), printed)
    # the tracking store must work before any trial starts; under the study's lock, so two
    # workers starting at once (on any machines) make one MLflow parent run, not two
    if recorder is not None:
        with launch_lock(stores.optuna, plan.study_name):
            # outside the dispatcher: its failure stops the run
            _record(study, recorder.handle(started))
    _record(study, Dispatcher(list(listeners), debug=debug)(started))
    for text in notes:
        emit(Note(text, "warning"))
    from orchestrator.engine.loop import STOP, SweepLoop  # the full path only

    budget_limit = overrides.budget_usd if overrides.budget_usd is not None else spec.budget_usd
    loop = SweepLoop(
        plan,
        backend,
        study,
        limits,
        Budget(budget_limit, spent=_spent(study)),
        emit,
        clock=clock,
        sleep=sleep,
        wall=wall,
        launch_lock=functools.partial(launch_lock, stores.optuna, plan.study_name),
        lock_exclusive=exclusive(stores.optuna),
    )
    try:
        loop.run()
    except KeyboardInterrupt:
        raise SweepInterrupted(_interrupted(loop, backend.name, again)) from None
    except STOP as exc:  # the provider cannot be used now: say which jobs still run there
        running = loop.in_flight()
        if running:
            jobs = ", ".join(f"trial {r.number}: job {r.job_id}" for r in running)
            exc.args = (
                f"{exc}; {len(running)} job(s) still running at {backend.name} ({jobs}): "
                f"`{again}` re-attaches to them",
            )
        raise
    table = trials_table(study, plan.space.fixed())
    best = best_trial(study)
    advice = sweep_advice(plan, study, table.rows, best)
    if best is not None:
        _conclude(study, best, _spent(study), wall())
    with launch_lock(stores.optuna, plan.study_name):  # workers finishing at once register once
        finished = SweepFinished(
            plan, study, table, advice, best, _spent(study), loop.stop_reason, loop.changed
        )
        _record(study, emit(finished))
    experiment = str(study.user_attrs.get(StudyAttrs.MLFLOW_EXPERIMENT, ""))
    return SweepResult(
        plan, stores, study, table, advice, experiment, loop.stop_reason, loop.changed
    )


def _record(study: optuna.Study, records: Mapping[str, Any] | None) -> None:
    """Write on the study what its listeners asked to record (they only read it)."""
    for key, value in (records or {}).items():
        if study.user_attrs.get(key) != value:
            study.set_user_attr(key, value)


def _data_as_recorded(spec: SweepSpec, trials: int) -> tuple[bool, Generation | None]:
    """Whether the sweep may be finished already, from its file alone, read-only and before
    anything is planned: the study of its latest generation holds ``trials`` or more counted
    trials, is concluded and logged, and the data files hash as its fingerprint recorded.
    True plans without counting tokens, and :func:`_finished_already` checks in full once the
    base model is resolved; False (also when anything cannot be read) plans as usual. With
    True comes the head of the lineage read (:func:`head_generation`), which the run resumes."""
    from orchestrator.core.attrs import StudyAttrs
    from orchestrator.core.errors import OrchestratorError, SweepNotStartedError
    from orchestrator.core.urls import sqlite_path
    from orchestrator.stores.read import load_study, optuna_url

    url = optuna_url(spec)
    path = sqlite_path(url)
    if path is not None and not path.is_file():
        return False, None  # never ran here (and nothing is created by asking)
    try:
        head = head_generation(spec)
        name = head.study_name if head is not None else spec.name
        study = load_study(name, url, url, SweepNotStartedError(spec.name, url, ""))
    except OrchestratorError:
        return False, None  # not started, or unreadable: the full path says so
    attrs = study.user_attrs
    if attrs.get(StudyAttrs.LOGGED) is None or StudyAttrs.CONCLUDED not in attrs:
        return False, None
    if counted(study.get_trials(deepcopy=False)) < trials:
        return False, None
    try:
        was = Fingerprint.from_json(str(attrs[StudyAttrs.FINGERPRINT]))
        train = file_sha256(spec.data.train)
        valid = file_sha256(spec.data.valid) if spec.data.valid is not None else None
    except (KeyError, ValueError, TypeError, OSError):
        return False, None
    same = was.train.sha256 == train and (was.valid.sha256 if was.valid else None) == valid
    return same, head


def _finished_already(
    plan: SweepPlan,
    optuna_storage: str,
    limits: Limits,
    printed: Fingerprint,
) -> optuna.Study | None:
    """The sweep's study, read-only, when running it again would change nothing; else None
    (the full path then runs, and mends what a crash left). Nothing to change means: the
    study is concluded as it stands and MLflow holds that conclusion in full
    (``StudyAttrs.LOGGED``, written once the parent run ended), no trial is running or
    waiting, the trial limit is reached, the sweep file enqueues nothing and sets no target
    (a reached target is reported as the stop), and what the results depend on has not
    changed (else the full path warns)."""
    from orchestrator.core.attrs import StudyAttrs
    from orchestrator.core.errors import OrchestratorError, SweepNotStartedError
    from orchestrator.core.urls import masked_url
    from orchestrator.stores.read import load_study

    spec = plan.spec
    if spec.enqueue or limits.target is not None:
        return None
    shown = masked_url(optuna_storage)
    try:
        study = load_study(
            plan.study_name, optuna_storage, shown, SweepNotStartedError(spec.name, shown, "")
        )
    except OrchestratorError:
        return None  # not started, or unreadable: the full path says so
    attrs = study.user_attrs
    concluded = attrs.get(StudyAttrs.CONCLUDED)
    if not isinstance(concluded, dict) or attrs.get(StudyAttrs.LOGGED) != concluded.get("at"):
        return None
    if not isinstance(attrs.get(StudyAttrs.MLFLOW_EXPERIMENT), str):
        return None
    trials = study.get_trials(deepcopy=False)
    if any(t.state.name in ("RUNNING", "WAITING") for t in trials):
        return None
    if counted(trials) < limits.trials:
        return None
    try:
        was = Fingerprint.from_json(str(attrs[StudyAttrs.FINGERPRINT]))
    except (KeyError, ValueError, TypeError):
        return None
    if changes(was, printed):
        return None
    best = best_trial(study)
    if best is None:
        return None
    return study if _concluded_as(concluded, _conclusion(study, best)) else None


def _as_it_stands(
    plan: SweepPlan,
    stores: Stores,
    study: optuna.Study,
    listeners: Sequence[Listener],
    backend: str,
    printed: Fingerprint,
) -> SweepResult:
    """The result of a finished sweep run again, told to ``listeners`` as a run that
    started and finished nothing."""
    from orchestrator.core.attrs import StudyAttrs

    table = trials_table(study, plan.space.fixed())  # no pandas: the rows, printed as they are
    best = best_trial(study)
    advice = sweep_advice(plan, study, table.rows, best)
    emit = Dispatcher(list(listeners), debug=os.environ.get("FTSWEEP_DEBUG") == "1")
    emit(SweepStarted(plan, study, backend, True, printed))
    emit(SweepFinished(plan, study, table, advice, best, _spent(study), None, False))
    experiment = str(study.user_attrs[StudyAttrs.MLFLOW_EXPERIMENT])
    return SweepResult(plan, stores, study, table, advice, experiment, None, False)


def head_generation(spec: SweepSpec) -> Generation | None:
    """The latest generation of the sweep's lineage (``ftsweep retune``), which ``run``
    resumes; None when there is only the sweep's own study (or none yet)."""
    from orchestrator.stores.read import generations

    found = generations(spec, details=False)
    if not found or found[-1].number == 1:
        return None
    head = found[-1]
    return Generation(head.number, head.study_name, head.previous, head.changes)


def _record_generation(
    study: optuna.Study, plan: SweepPlan, printed: Fingerprint, source: str
) -> list[str]:
    """Write the generation's attributes on a new study; on a resumed one, say when what
    the results depend on changed since it started (a retune's job, not a resume's)."""
    from orchestrator.core.attrs import StudyAttrs

    attrs = study.user_attrs
    if StudyAttrs.FINGERPRINT in attrs:
        try:
            was = Fingerprint.from_json(str(attrs[StudyAttrs.FINGERPRINT]))
        except (ValueError, KeyError, TypeError):
            return []
        found = changes(was, printed)
        if not found:
            return []
        return [
            f"{'; '.join(found)} since this sweep started; its trials ran on what it recorded: "
            f"`ftsweep retune {source}` starts a new generation on the current one"
        ]
    gen = plan.generation
    space = plan.spec.space.model_dump(mode="json", exclude_none=True)
    values: dict[str, Any] = {
        StudyAttrs.FINGERPRINT: printed.to_json(),
        StudyAttrs.LINEAGE: plan.spec.name,
        StudyAttrs.GENERATION: gen.number if gen else 1,
        StudyAttrs.SPACE: space,
    }
    values[StudyAttrs.FILE_SPACE] = dict(gen.file_space) if gen and gen.file_space else space
    if gen is not None:
        values[StudyAttrs.PREVIOUS_STUDY] = gen.previous
        values[StudyAttrs.CHANGES] = list(gen.changes)
    for key, value in values.items():
        if attrs.get(key) != value:
            study.set_user_attr(key, value)
    return []


def _conclude(study: optuna.Study, best: Any, spent: float, now: float) -> None:
    """Mark the generation as one that produced a model (a retune compares with it)."""
    from orchestrator.core.attrs import StudyAttrs

    values = _conclusion(study, best, spent)
    if _concluded_as(study.user_attrs.get(StudyAttrs.CONCLUDED), values):
        return  # a finished sweep run again: concluded as it stands already
    study.set_user_attr(StudyAttrs.CONCLUDED, {"at": now, **values})


def _concluded_as(recorded: Any, values: dict[str, Any]) -> bool:
    """Whether the recorded conclusion says ``values`` (its ``at`` aside)."""
    return isinstance(recorded, dict) and {k: v for k, v in recorded.items() if k != "at"} == values


def _conclusion(study: optuna.Study, best: Any, spent: float | None = None) -> dict[str, Any]:
    """What a concluded generation records (but its ``at``)."""
    completed = sum(1 for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE")
    return {
        "completed": completed,
        "best_trial": best.number,
        "best_value": primary_value(best),
        "model": best.user_attrs.get(TrialAttrs.FINE_TUNED_MODEL),
        "spent_usd": round(_spent(study) if spent is None else spent, 4),
    }


def _retry_environment_failures(study: optuna.Study, limit: int) -> None:
    """Enqueue again, once and while the limit leaves room, each trial that failed for reasons
    of the provider or the machine (a refused submit, an unreachable endpoint): such trials do
    not count (:func:`~.limits.counted`), and their configuration is tried again first."""
    trials = study.get_trials(deepcopy=False)
    retried = {t.user_attrs.get(TrialAttrs.RETRY_OF) for t in trials}
    waiting = sum(1 for t in trials if t.state.name == "WAITING")
    room = limit - counted(trials) - waiting
    for t in trials:
        if room <= 0:
            return
        if (
            t.state.name == "FAIL"
            and TrialAttrs.ENVIRONMENT_FAILURE in t.user_attrs
            and t.number not in retried
            and t.params
        ):
            study.enqueue_trial(dict(t.params), {TrialAttrs.RETRY_OF: t.number})
            room -= 1


def _interrupted(loop: SweepLoop, backend: str, again: str) -> str:
    running = loop.in_flight()
    if not running:
        return f"interrupted; `{again}` resumes the sweep"
    jobs = ", ".join(f"trial {r.number}: job {r.job_id}" for r in running)
    return (
        f"interrupted with {len(running)} job(s) still running at {backend} ({jobs}); "
        f"`{again}` re-attaches to them"
    )

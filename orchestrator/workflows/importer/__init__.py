"""``ftsweep import``: a provider's past fine-tuning jobs into the sweep's study and MLflow.

The sweep file names the provider (``backend.name``: ``openai`` or ``azure``, its options and
credentials from the environment as for a sweep), the stores and the training data. Every
finished job the :class:`JobFilter` selects becomes, in the study ``NAME.imported`` (beside
the sweep's own study, in the same Optuna store), a finished trial, and in the sweep's MLflow
experiment a child run of the parent run ``NAME.imported`` (see :mod:`.record` for the order
of writes that makes it idempotent and safe to kill). Jobs on other training files are
imported too, marked (``ftsweep.imported_same_data``); the warm start prefers those on the
sweep's file (:mod:`.warm`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestrator.core.attrs import StudyAttrs, TrialAttrs
from orchestrator.core.errors import UsageError
from orchestrator.workflows.importer.provider import (
    FINISHED,
    ImportedJob,
    JobFilter,
    SameFile,
    list_jobs,
    read_job,
)
from orchestrator.workflows.importer.record import (
    JOB_TAG,
    diagnosis_of,
    existing_runs,
    imported_trials,
    trial_of,
    write_run,
)
from orchestrator.workflows.importer.warm import imported_study_name, imported_warm_start

if TYPE_CHECKING:
    from collections.abc import Callable

    from orchestrator.tracking import Tracker

__all__ = [
    "FINISHED",
    "JOB_TAG",
    "ImportResult",
    "ImportedJob",
    "JobFilter",
    "import_jobs",
    "imported_study_name",
    "imported_warm_start",
]

REMOTE = ("openai", "azure")


@dataclass(frozen=True)
class ImportResult:
    """What one import found and did."""

    study_name: str
    provider: str
    #: the jobs read: with ``dry_run`` every one the filter selected (newest first), else
    #: those written now (oldest first)
    jobs: tuple[ImportedJob, ...]
    #: job ids written now (a trial added), in the order written
    added: tuple[str, ...] = ()
    #: job ids already imported (nothing written)
    skipped: tuple[str, ...] = ()
    #: job ids whose MLflow run a killed import left behind, completed now
    mended: tuple[str, ...] = ()
    dry_run: bool = False
    experiment_id: str | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)


def import_jobs(
    spec_path: str | os.PathLike[str],
    wanted: JobFilter | None = None,
    *,
    dry_run: bool = False,
    tracker: Tracker | None = None,
    written: Callable[[ImportedJob, str], None] | None = None,
) -> ImportResult:
    """Import the past jobs of the sweep file's provider (see the module docstring).

    ``dry_run`` reads the jobs and writes nothing. ``tracker`` replaces the MLflow client on
    the sweep's store. ``written(job, run_id)`` is called after each job's MLflow run is
    complete and before its trial is added (tests stop an import there)."""
    from orchestrator.plan.sweep import plan_sweep, preflight
    from orchestrator.stores.locks import launch_lock
    from orchestrator.stores.study import check_stores, open_study, resolve_stores
    from orchestrator.workflows.diagnose import thresholds_of

    wanted = wanted or JobFilter()
    plan = plan_sweep(spec_path)
    spec = plan.spec
    if spec.backend.name not in REMOTE:
        raise UsageError(
            f"{spec_path}: backend.name: import reads a provider's jobs (openai or azure), "
            f"not {spec.backend.name!r}"
        )
    stores = resolve_stores(spec)
    backend = plan.make_backend(stores.backend_dir(plan.backend.name))
    preflight(backend)
    name = imported_study_name(spec.name)
    train = Path(spec.data.train)
    same = SameFile(backend, train)
    listed = list(list_jobs(backend, wanted))

    def read(job: Any) -> ImportedJob:
        return read_job(
            backend, job, train_file=train, n_train=plan.train.n_examples, same_file=same
        )

    if dry_run:
        return ImportResult(name, backend.name, tuple(read(j) for j in listed), dry_run=True)
    check_stores(stores)
    if tracker is None:
        from orchestrator.tracking import Tracker

        tracker = Tracker(stores.mlflow, spec.name, stores.artifacts)
    study = open_study(spec, stores, name, sampler=plan.make_sampler, pruner=plan.make_pruner())
    metric = spec.objective.metric
    thresholds = thresholds_of(Path(spec_path))
    jobs: list[ImportedJob] = []
    added: list[str] = []
    mended: list[str] = []
    skipped: list[str] = []
    with launch_lock(stores.optuna, name):  # one import of a study at a time, on any machine
        if study.user_attrs.get(StudyAttrs.IMPORTED_FROM) != backend.name:
            study.set_user_attr(StudyAttrs.IMPORTED_FROM, backend.name)
        recorded = str(study.user_attrs.get(StudyAttrs.MLFLOW_PARENT_RUN) or "")
        parent = tracker.parent_run(recorded or None, name, {"ftsweep.imported": backend.name})
        if recorded != parent:
            study.set_user_attr(StudyAttrs.MLFLOW_PARENT_RUN, parent)
            study.set_user_attr(StudyAttrs.MLFLOW_EXPERIMENT, tracker.experiment_id)
        done = imported_trials(study)
        runs = existing_runs(tracker, parent)
        for listed_job in reversed(listed):  # oldest first: trials follow the history
            if str(listed_job.id) in done:
                skipped.append(str(listed_job.id))
                continue
            job = read(listed_job)  # the result file is read only for a job to write
            value = _objective(job, metric)
            if value is None and job.status == "succeeded" and job.curves:
                job = replace(job, note=f"its curve has no {metric}: not ranked")
            jobs.append(job)
            diagnosis = diagnosis_of(job, thresholds)
            run = runs.get(job.job_id)
            run_id: str | None = None
            if run is not None and run.info.status != "RUNNING":
                run_id = str(run.info.run_id)
                mended.append(job.job_id)
            elif run is not None:  # killed while it was written: write it again
                _delete_run(tracker, str(run.info.run_id))
            if run_id is None:
                run_id = write_run(tracker, parent, job, value, metric, diagnosis)
            if written is not None:
                written(job, run_id)
            label, advice, best_epoch = diagnosis
            attrs: dict[str, Any] = {
                TrialAttrs.DIAGNOSIS: label,
                TrialAttrs.RECOMMENDATION: advice,
            }
            if best_epoch is not None:
                attrs[TrialAttrs.BEST_EPOCH] = best_epoch
            study.add_trial(trial_of(job, value, run_id, plan.space, attrs))
            added.append(job.job_id)
        if added or tracker.status(parent) != "FINISHED":  # or one a killed import left open
            _end_parent(tracker, parent, study)
    return ImportResult(
        name,
        backend.name,
        tuple(jobs),
        tuple(added),
        tuple(skipped),
        tuple(mended),
        experiment_id=tracker.experiment_id,
    )


def _delete_run(tracker: Tracker, run_id: str) -> None:
    from mlflow.exceptions import MlflowException

    from orchestrator.tracking import TrackingError

    try:
        tracker.client.delete_run(run_id)
    except MlflowException as exc:
        why = exc.message.splitlines()[0] if exc.message else type(exc).__name__
        raise TrackingError(f"MLflow: delete the half-written run {run_id}: {why}") from exc


def _objective(job: ImportedJob, metric: str) -> float | None:
    from orchestrator.engine.outcome import objective_value

    if job.status != "succeeded":
        return None
    return objective_value(job.curves, metric)


def _end_parent(tracker: Tracker, parent: str, study: Any) -> None:
    """The parent run's summary (jobs, completed, best) and its end."""
    trials = study.get_trials(deepcopy=False)
    completed = [t for t in trials if t.state.name == "COMPLETE"]
    metrics: dict[str, float] = {"imported_jobs": float(len(trials))}
    metrics["imported_completed"] = float(len(completed))
    tags: dict[str, Any] = {}
    if completed:
        best = study.best_trial
        metrics["best_value"] = float(best.value)
        tags["ftsweep.best_job"] = best.user_attrs.get(TrialAttrs.IMPORTED, "")
    tracker.log(parent, metrics=metrics, tags=tags)
    tracker.finish(parent)

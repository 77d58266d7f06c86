"""Writes imported jobs into the sweep's stores: one MLflow child run, then one Optuna trial.

Order of writes, so that a run killed at any point is completed by the next one and the two
stores agree afterwards:

1. the child run (under the import's parent run, tagged with the job id) is created, its
   step metrics, params and tags logged, and it is ended (FINISHED, FAILED or KILLED);
2. then the trial is added to the study (``study.add_trial``: one transaction), carrying the
   job id and the run id.

A job is imported when its trial exists. A run found FINISHED/FAILED/KILLED without a trial
(killed between 1 and 2) is reused; a run still RUNNING (killed during 1) is deleted and
written again. So a second import adds nothing, and a re-run after a kill adds exactly the
missing jobs.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from orchestrator.backends.base import MetricPoint
from orchestrator.core.attrs import TrialAttrs
from orchestrator.workflows.diagnose import RunCurves, diagnose_run, epochs_of
from orchestrator.workflows.importer.provider import ImportedJob

if TYPE_CHECKING:
    import optuna

    from orchestrator.plan.space import SearchSpace
    from orchestrator.tracking import Tracker

__all__ = [
    "JOB_TAG",
    "RUN_STATUS",
    "diagnosis_of",
    "existing_runs",
    "imported_trials",
    "trial_of",
    "write_run",
]

#: the MLflow tag that keys a child run by the provider's job id
JOB_TAG = "ftsweep.imported_job"
#: the job's status -> the MLflow run's
RUN_STATUS = {"succeeded": "FINISHED", "failed": "FAILED", "cancelled": "KILLED"}
_PARAMS = ("n_epochs", "batch_size", "learning_rate_multiplier")


def imported_trials(study: optuna.Study) -> dict[str, optuna.trial.FrozenTrial]:
    """The study's trials by the job id they were imported from."""
    found = {}
    for t in study.get_trials(deepcopy=False):
        job = t.user_attrs.get(TrialAttrs.IMPORTED)
        if job:
            found[str(job)] = t
    return found


def existing_runs(tracker: Tracker, parent_id: str) -> dict[str, Any]:
    """The import's child runs by job id (the first found of each)."""
    found: dict[str, Any] = {}
    for run in tracker.children(parent_id):
        job = run.data.tags.get(JOB_TAG)
        if job and job not in found:
            found[job] = run
    return found


def _state(job: ImportedJob, value: float | None) -> str:
    if job.status == "succeeded" and value is not None:
        return "COMPLETE"
    return "FAIL"


def diagnosis_of(job: ImportedJob, thresholds: Any) -> tuple[str, str, int | None]:
    """(label, recommendation, best epoch) of the job's curve; ``unknown`` without one."""
    if not any(job.curves.get(n) for n in ("train_loss", "valid_loss", "full_valid_loss")):
        return "unknown", job.note or "no curve to diagnose", None
    stopped = job.status != "succeeded"
    epochs = epochs_of(job.curves)
    per_epoch = None
    if job.hyperparameters.get("n_epochs") and not stopped:
        epochs = int(job.hyperparameters["n_epochs"])
    elif stopped:
        full = job.curves.get("full_valid_loss")
        per_epoch = len(full) if full else 0
    run = RunCurves(
        "job",
        job.job_id,
        job.curves,
        n_epochs=None if stopped else epochs,
        hyperparameters=dict(job.hyperparameters),
        stopped_at_epoch=per_epoch if stopped else None,
        stop_reason=job.status if stopped else None,
        status=job.status,
    )
    d = diagnose_run(run, thresholds).diagnosis
    return d.label, d.recommendation, d.best_epoch


def write_run(
    tracker: Tracker,
    parent_id: str,
    job: ImportedJob,
    value: float | None,
    metric: str,
    diagnosis: tuple[str, str, int | None],
) -> str:
    """The job's child run, written in full and ended; its id."""
    label, advice, best_epoch = diagnosis
    hp = job.hyperparameters
    name = f"{job.job_id} " + " ".join(
        f"{short}={hp[p]:g}" if isinstance(hp.get(p), float) else f"{short}={hp.get(p, '-')}"
        for short, p in (
            ("ep", "n_epochs"),
            ("bs", "batch_size"),
            ("lr", "learning_rate_multiplier"),
        )
    )
    description = f"{label}: {advice}" + (f" ({job.note})" if job.note else "")
    tags: dict[str, Any] = {
        "mlflow.parentRunId": parent_id,
        JOB_TAG: job.job_id,
        "ftsweep.imported": job.provider,
        "ftsweep.job_id": job.job_id,
        "ftsweep.job_status": job.status,
        "ftsweep.state": _state(job, value),
        "ftsweep.diagnosis": label,
        "mlflow.note.content": description,
    }
    run_id = tracker.new_run(name, tags)
    points = [MetricPoint(s, n, v) for n, curve in job.curves.items() for s, v in curve]
    finals: dict[str, float] = {}
    if job.trained_tokens is not None:
        finals["trained_tokens"] = float(job.trained_tokens)
    if job.cost_usd is not None:
        finals["cost_usd"] = job.cost_usd
    if value is not None:
        finals[f"objective_{metric}"] = value
    extra: dict[str, Any] = {"ftsweep.recommendation": advice}
    for key, found in (
        ("ftsweep.fine_tuned_model", job.fine_tuned_model),
        ("ftsweep.training_file", job.training_file),
        ("ftsweep.suffix", job.suffix),
        ("ftsweep.error", job.error),
        ("ftsweep.import_note", job.note),
        ("ftsweep.best_epoch", best_epoch),
        ("ftsweep.checkpoints", ",".join(job.checkpoints) or None),
    ):
        if found is not None:
            extra[key] = found
    params = {p: hp[p] for p in _PARAMS if p in hp}
    params.update({"model": job.model, "backend": job.provider})
    tracker.log_points(run_id, points, tags=extra, params=params, metrics=finals)
    tracker.finish(run_id, RUN_STATUS.get(job.status, "FAILED"))
    return run_id


def _distribution(space: SearchSpace | None, name: str, value: float) -> Any:
    """The sweep's distribution of ``name`` when ``value`` fits it, else one widened to
    hold it (a fixed or missing parameter: the value alone)."""
    from optuna.distributions import FloatDistribution, IntDistribution

    integer = name in ("n_epochs", "batch_size")
    low = high = value
    log = False
    if space is not None:
        try:
            dim = space[name]
        except KeyError:
            dim = None
        if dim is not None and dim.kind in ("int", "float") and dim.low is not None:
            low, high = min(float(dim.low), value), max(float(dim.high or dim.low), value)
            log = dim.log
    if integer:
        return IntDistribution(int(low), int(high), log=log)
    return FloatDistribution(low, high, log=log)


def trial_of(
    job: ImportedJob,
    value: float | None,
    run_id: str,
    space: SearchSpace | None,
    attrs: Mapping[str, Any],
) -> optuna.trial.FrozenTrial:
    """The finished trial of ``job``: COMPLETE for a succeeded job with an objective, else
    FAIL (a failed or cancelled job, or one whose result file is gone); its params in the
    sweep's distributions where they fit."""
    import optuna
    from optuna.trial import TrialState

    params = {p: job.hyperparameters[p] for p in _PARAMS if p in job.hyperparameters}
    dists = {p: _distribution(space, p, float(v)) for p, v in params.items()}
    state = TrialState[_state(job, value)]
    start = dt.datetime.fromtimestamp(job.created_at)
    end = dt.datetime.fromtimestamp(job.finished_at) if job.finished_at else start
    user_attrs: dict[str, Any] = {
        TrialAttrs.IMPORTED: job.job_id,
        TrialAttrs.BACKEND: job.provider,
        TrialAttrs.JOB_ID: job.job_id,
        TrialAttrs.JOB_STATUS: job.status,
        TrialAttrs.MLFLOW_RUN: run_id,
        TrialAttrs.STEPS: job.steps,
        **attrs,
    }
    for key, found in (
        (TrialAttrs.FINE_TUNED_MODEL, job.fine_tuned_model),
        (TrialAttrs.TRAINED_TOKENS, job.trained_tokens),
        (TrialAttrs.COST, job.cost_usd),
        (TrialAttrs.ERROR, job.error or job.note),
        (TrialAttrs.CHECKPOINTS, list(job.checkpoints) or None),
        (TrialAttrs.IMPORTED_SAME_DATA, job.same_data),
        (TrialAttrs.IMPORTED_EXAMPLES, job.n_examples),
    ):
        if found is not None:
            user_attrs[key] = found
    return optuna.trial.FrozenTrial(
        number=-1,
        state=state,
        value=value if state is TrialState.COMPLETE else None,
        datetime_start=start,
        datetime_complete=end,
        params=params,
        distributions=dists,
        user_attrs=user_attrs,
        system_attrs={TrialAttrs.IMPORTED: job.job_id},
        intermediate_values={},
        trial_id=-1,
        values=None,
    )

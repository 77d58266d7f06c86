"""Diagnose a fine-tuning run ftsweep did not launch (``ftsweep diagnose``).

A run comes from one of three sources, each read into a :class:`RunCurves`:

* :func:`from_result_csv`: an OpenAI/Azure result CSV (any layout
  :mod:`orchestrator.backends.remote.resultfile` reads);
* :func:`from_job`: a job id on the backend of a sweep file (its metric events, and for a
  remote backend the job's result file once it has one);
* :func:`from_mlflow_run`: an MLflow run id (a trial's child run: its metric histories, its
  ``n_epochs`` and other parameters, and ``ftsweep.state``/``ftsweep.pruned_at_epoch``).

:func:`diagnose_run` applies :func:`orchestrator.analysis.diagnosis.diagnose` and returns a
:class:`RunDiagnosis`, whose :meth:`RunDiagnosis.to_json` is the stable object of
``ftsweep diagnose --json`` (schema in ``docs/diagnosis.md``).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.analysis.diagnosis import Diagnosis, Thresholds, diagnose
from orchestrator.backends.remote.resultfile import Curves, read_result_csv
from orchestrator.core.errors import (
    BackendError,
    OrchestratorError,
    StoreUnreachableError,
    UsageError,
)
from orchestrator.core.urls import mask_secret, masked_url, sqlite_path

__all__ = [
    "SCHEMA_VERSION",
    "RunCurves",
    "RunDiagnosis",
    "default_tracking_uri",
    "diagnose_run",
    "from_job",
    "from_mlflow_run",
    "from_result_csv",
]

SCHEMA_VERSION = 1
_RUN_ID = re.compile(r"^[0-9a-f]{32}$")
_HP = ("n_epochs", "batch_size", "learning_rate_multiplier", "prompt_loss_weight")


@dataclass(frozen=True)
class RunCurves:
    """One run's metric curves and what is known about how it ran."""

    kind: str  # csv | job | mlflow
    source: str
    curves: Curves
    n_epochs: int | None = None
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    #: the run stopped early (pruned, cancelled or failed) at this epoch; None: it finished
    stopped_at_epoch: int | None = None
    stop_reason: str | None = None  # pruned | cancelled | failed
    status: str | None = None


@dataclass(frozen=True)
class RunDiagnosis:
    run: RunCurves
    diagnosis: Diagnosis

    def to_json(self) -> dict[str, Any]:
        """The stable ``--json`` object (see ``docs/diagnosis.md``)."""
        d, run = self.diagnosis, self.run
        finals = {name: _num(c[-1][1]) for name, c in sorted(run.curves.items()) if c}
        return {
            "schema_version": SCHEMA_VERSION,
            "label": d.label,
            "recommendation": d.recommendation,
            "best_epoch": d.best_epoch,
            "evidence": {k: _num(v) for k, v in d.evidence.items()},
            "source": {"kind": run.kind, "id": run.source, "status": run.status},
            "stopped": (
                {"reason": run.stop_reason, "epoch": run.stopped_at_epoch}
                if run.stopped_at_epoch is not None
                else None
            ),
            "curve": {
                "steps": _steps(run.curves),
                "epochs": epochs_of(run.curves),
                "metrics": sorted(run.curves),
                "final": finals,
            },
            "hyperparameters": dict(run.hyperparameters),
        }


def _num(v: float) -> float | str:
    """JSON has no NaN/inf: those are written as strings."""
    return v if math.isfinite(v) else str(v)


def _steps(curves: Curves) -> int:
    return max((s for c in curves.values() for s, _ in c), default=0)


def epochs_of(curves: Curves) -> int | None:
    """Epochs the curves cover: the ``epoch`` metric, else one per full-validation pass."""
    if curves.get("epoch"):
        return max(1, round(max(v for _, v in curves["epoch"])))
    full = curves.get("full_valid_loss")
    return len(full) if full else None


def diagnose_run(run: RunCurves, thresholds: Thresholds | None = None) -> RunDiagnosis:
    """The diagnosis of ``run``: as a finished trial, or "stopped at epoch N" when it was."""
    stop = run.stopped_at_epoch
    diag = diagnose(
        run.curves,
        run.n_epochs,
        run.hyperparameters,
        thresholds or Thresholds(),
        pruned_at_epoch=stop,
        stop_reason=run.stop_reason or "pruned",
    )
    return RunDiagnosis(run, diag)


def from_result_csv(path: str | Path) -> RunCurves:
    """A result CSV file (a :class:`~orchestrator.core.errors.DataError` when it is not one)."""
    curves = read_result_csv(path)
    return RunCurves("csv", str(path), curves, n_epochs=epochs_of(curves))


def default_tracking_uri() -> str:
    """Where ``ftsweep`` tracks by default: ``MLFLOW_TRACKING_URI``, else the embedded store
    ``sqlite:///mlruns/mlflow.db`` (``FTSWEEP_RUNS_DIR`` moves ``mlruns``)."""
    root = Path(os.environ.get("FTSWEEP_RUNS_DIR") or "mlruns").resolve()
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{root / 'mlflow.db'}"


def from_mlflow_run(run_id: str, tracking_uri: str | None = None) -> RunCurves:
    """The curves of an MLflow run: metric histories, parameters and ftsweep tags."""
    uri = tracking_uri or default_tracking_uri()
    if not _RUN_ID.match(run_id):
        raise UsageError(
            f"{run_id}: not a file, and not an MLflow run id (32 hex characters); "
            "a job id needs --spec SWEEP.yaml"
        )
    if (db := sqlite_path(uri)) is not None and not db.is_file():
        raise UsageError(f"no MLflow store at {uri} (set --tracking-uri)")
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from orchestrator.backends.base import METRIC_NAMES

    client = MlflowClient(tracking_uri=uri)
    try:
        run = client.get_run(run_id)
        curves: Curves = {}
        for name in (*METRIC_NAMES, "epoch"):
            if name not in run.data.metrics:
                continue
            history = sorted(client.get_metric_history(run_id, name), key=lambda m: m.step)
            curve: list[tuple[int, float]] = []
            for m in history:
                if not curve or m.step > curve[-1][0]:
                    curve.append((int(m.step), float(m.value)))
            curves[name] = curve
    except MlflowException as exc:
        if getattr(exc, "error_code", "") == "RESOURCE_DOES_NOT_EXIST":
            raise UsageError(f"no MLflow run {run_id} in {masked_url(uri)}") from None
        why = mask_secret(str(exc).splitlines()[0], uri)
        # not chained: MLflow's error names the URI, password included
        raise StoreUnreachableError(f"MLflow at {masked_url(uri)}: {why}") from None
    if not any(curves.get(n) for n in ("train_loss", "valid_loss", "full_valid_loss")):
        raise UsageError(
            f"MLflow run {run_id} has no loss curves (a sweep's parent run? pass a trial's run)"
        )
    params = run.data.params
    hp: dict[str, Any] = {}
    for name in _HP:
        if name in params:
            try:
                number = float(params[name])
            except ValueError:
                continue
            hp[name] = int(number) if name in ("n_epochs", "batch_size") else number
    tags = run.data.tags
    state = tags.get("ftsweep.state")
    stopped: int | None = None
    reason: str | None = None
    if state == "PRUNED" and tags.get("ftsweep.pruned_at_epoch", "").isdigit():
        stopped, reason = int(tags["ftsweep.pruned_at_epoch"]), "pruned"
    n_epochs = hp.get("n_epochs")
    return RunCurves(
        "mlflow",
        run_id,
        curves,
        n_epochs=int(n_epochs) if n_epochs is not None else epochs_of(curves),
        hyperparameters=hp,
        stopped_at_epoch=stopped,
        stop_reason=reason,
        status=state or run.info.status,
    )


def from_job(spec_path: str | Path, job_id: str) -> RunCurves:
    """The curves of job ``job_id`` on the backend the sweep file configures."""
    from orchestrator.backends.base import JobHandle, JobStatus, MetricPoint
    from orchestrator.plan.sweep import plan_sweep
    from orchestrator.stores.study import resolve_stores

    plan = plan_sweep(spec_path)
    backend = plan.make_backend(resolve_stores(plan.spec).workdir / "backends" / plan.backend.name)
    handle = JobHandle(backend.name, job_id, "")
    points: list[MetricPoint] = []
    cursor: str | None = None
    try:
        for _ in range(10_000):  # every point since the start, page by page
            update = backend.poll(handle, cursor)
            points += update.points
            if not update.points or update.cursor == cursor:
                break
            cursor = update.cursor
        results = getattr(backend, "results", None)
        if update.status is JobStatus.SUCCEEDED and callable(results):
            from_file = results(handle)  # the provider's own record, when it has one
            if from_file:
                epoch_points = [p for p in points if p.name == "epoch"]
                points = [*from_file, *epoch_points]
    except BackendError as exc:
        if _not_found(exc):
            raise UsageError(f"{spec_path}: no job {job_id} at backend {backend.name}") from None
        raise
    curves: Curves = {}
    for p in sorted(points, key=lambda p: p.step):
        curve = curves.setdefault(p.name, [])
        if not curve or p.step > curve[-1][0]:
            curve.append((p.step, p.value))
    if not any(curves.get(n) for n in ("train_loss", "valid_loss", "full_valid_loss")):
        raise OrchestratorError(
            f"job {job_id} ({update.status.value}) has reported no loss yet: nothing to diagnose"
        )
    epochs = epochs_of(curves)
    stopped = update.status in (JobStatus.CANCELLED, JobStatus.FAILED)
    if stopped:  # epochs completed: full-validation passes, else whole epochs reached
        full = curves.get("full_valid_loss")
        ends = curves.get("epoch")
        epochs = len(full) if full else (math.floor(ends[-1][1]) if ends else 0)
    return RunCurves(
        "job",
        job_id,
        curves,
        n_epochs=epochs if not stopped else None,
        stopped_at_epoch=(int(epochs or 0) if stopped else None),
        stop_reason=update.status.value if stopped else None,
        status=update.status.value,
    )


def _not_found(exc: BaseException) -> bool:
    cause = exc.__cause__
    return getattr(cause, "status_code", None) == 404 or str(exc).startswith("no local job")


def thresholds_of(spec: str | Path | None) -> Thresholds:
    """The rules' thresholds: the sweep file's ``diagnosis`` section, else the defaults."""
    if spec is None:
        return Thresholds()
    from orchestrator.config import load_spec

    return Thresholds(**load_spec(spec).diagnosis.model_dump())


def load(
    source: str, *, spec: str | Path | None = None, tracking_uri: str | None = None
) -> RunCurves:
    """The run ``source`` names: a job id with ``spec``, else a result CSV file when one
    exists at that path, else an MLflow run id."""
    if spec is not None:
        return from_job(spec, source)
    path = Path(source)
    if path.exists() or source.lower().endswith((".csv", ".txt")) or os.sep in source:
        return from_result_csv(path)
    return from_mlflow_run(source, tracking_uri)


def evidence_line(evidence: Mapping[str, float]) -> str:
    return ", ".join(f"{k}={v:.4g}" for k, v in evidence.items())

"""Read-only access to a sweep's results: its study as it stands, with nothing planned or made.

``ftsweep status``, ``report`` and ``best`` read through :func:`open_results`. Only the sweep
file is loaded (its data files may have moved or gone since the sweep ran), the Optuna store
is resolved by the same rule as a run's (the sweep file's ``storage.optuna``, else
``FTSWEEP_OPTUNA_STORAGE``, else ``sqlite:///`` ``optuna.db`` under ``FTSWEEP_RUNS_DIR`` or
``mlruns/``), and the study is loaded only if it is there: a sweep that never ran raises
:class:`~orchestrator.core.errors.SweepNotStartedError`. Nothing is written: no file, no folder,
no table, no study.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from orchestrator.config import SweepSpec, load_spec
from orchestrator.core.attrs import StudyAttrs, TrialAttrs
from orchestrator.core.errors import OrchestratorError, SweepNotStartedError
from orchestrator.core.params import NAMES
from orchestrator.core.urls import masked_url, sqlite_path
from orchestrator.results.table import best_trial, trial_hyperparameters, trials_frame
from orchestrator.stores.read import generations, load_study, optuna_url

if TYPE_CHECKING:
    import optuna
    import pandas as pd

__all__ = ["SweepResults", "html_report", "open_results"]


@dataclass(frozen=True)
class SweepResults:
    """The results of one sweep, read from its existing study."""

    spec: SweepSpec
    #: the Optuna storage URL, as shown to users (no password)
    store: str
    study: optuna.Study
    #: the generation shown (the lineage's latest; 1 for a sweep never retuned)
    generation: int = 1

    def fixed(self) -> dict[str, Any]:
        """The hyper-parameters the sweep file fixes to one value."""
        values = {}
        for name in NAMES:
            param = getattr(self.spec.space, name, None)
            if param is not None and param.value is not None:
                values[name] = param.value
        return values

    def frame(self) -> pd.DataFrame:
        """One row per trial (see :func:`orchestrator.results.table.trials_frame`)."""
        return trials_frame(self.study, self.fixed())

    def best(self) -> optuna.trial.FrozenTrial | None:
        """The best completed trial, or None when none has completed."""
        return best_trial(self.study)

    def counts(self) -> dict[str, int]:
        """Trials by state name (``COMPLETE``, ``PRUNED``, ``RUNNING`` ...), sorted by name;
        earlier epochs told as trials of their own (``engine/fidelity.py``) as ``DERIVED``,
        since they do not count toward the sweep's trials."""
        from orchestrator.core.attrs import TrialAttrs

        seen = Counter(
            "DERIVED" if TrialAttrs.DERIVED_FROM in t.user_attrs else t.state.name
            for t in self.study.get_trials(deepcopy=False)
        )
        return dict(sorted(seen.items()))

    def hyperparameters(self, trial: optuna.trial.FrozenTrial) -> dict[str, Any]:
        """What ``trial`` trained (its request), else its sampled and fixed values."""
        return trial_hyperparameters(trial, self.fixed())


def open_results(
    spec_path: str | os.PathLike[str], *, current: bool = False, study: str | None = None
) -> SweepResults:
    """The results of the sweep in ``spec_path``, read-only: its latest generation's, or
    with ``current`` the latest one that produced a model (``ftsweep retune``), or the
    sweep's study ``study`` (``NAME.imported``: what ``ftsweep import`` wrote).

    Raises :class:`~orchestrator.core.errors.SpecError` for an invalid sweep file,
    :class:`~orchestrator.core.errors.SweepNotStartedError` when its study does not exist (no
    store file, or no study of that name in the store), and
    :class:`~orchestrator.core.errors.OrchestratorError` when the store cannot be read.
    """
    spec = load_spec(spec_path)
    url = optuna_url(spec)
    shown = masked_url(url)
    not_started = SweepNotStartedError(spec.name, shown, str(spec_path))
    if study is not None:
        missing = SweepNotStartedError(study, shown, str(spec_path))
        return SweepResults(spec, shown, load_study(study, url, shown, missing), 1)
    found = generations(spec, details=False)
    if current and any(g.succeeded for g in found):
        found = [g for g in found if g.succeeded]
    head = found[-1] if found else None
    name = head.study_name if head else spec.name
    number = head.number if head else 1
    return SweepResults(spec, shown, load_study(name, url, shown, not_started), number)


# -- the HTML report ------------------------------------------------------------------------


def _curves(
    tracking_uri: str, study: optuna.Study
) -> tuple[dict[int, dict[str, list[tuple[int, float]]]], str | None]:
    """Each trial's logged curves, read from MLflow; ({}, why) when they cannot be read.
    An embedded store that is not there is not created."""

    path = sqlite_path(tracking_uri)
    if path is not None and not path.is_file():
        return {}, f"no MLflow store at {path}: the curves are not shown"
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from orchestrator.results.html import CURVE_METRICS, MAX_CURVE_PANELS

    client = MlflowClient(tracking_uri=tracking_uri)
    found: dict[int, dict[str, list[tuple[int, float]]]] = {}
    trials = [
        t for t in study.get_trials(deepcopy=False) if t.user_attrs.get(TrialAttrs.MLFLOW_RUN)
    ]
    try:
        for t in trials[: MAX_CURVE_PANELS * 4]:
            run_id = str(t.user_attrs[TrialAttrs.MLFLOW_RUN])
            try:
                logged = client.get_run(run_id).data.metrics
            except MlflowException:
                continue  # a run deleted since
            curves = {}
            for name in CURVE_METRICS:
                if name in logged:
                    history = client.get_metric_history(run_id, name)
                    curves[name] = sorted((m.step, m.value) for m in history)
            if curves:
                found[t.number] = curves
    except Exception as exc:  # the report is still worth writing without them
        why = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return found, f"the curves could not be read from MLflow ({why})"
    return found, None


def _previous_best(study: optuna.Study, storage: str) -> float | None:
    name = study.user_attrs.get(StudyAttrs.PREVIOUS_STUDY)
    if not name:
        return None
    import optuna

    try:
        previous = optuna.load_study(study_name=str(name), storage=storage)
    except (KeyError, ValueError):
        return None
    concluded = previous.user_attrs.get(StudyAttrs.CONCLUDED)
    if isinstance(concluded, Mapping) and isinstance(concluded.get("best_value"), int | float):
        return float(concluded["best_value"])
    return None


def _advice_notes(spec_path: str, results: SweepResults, frame: pd.DataFrame) -> list[str]:
    """The next sweep's advice, as ``ftsweep run`` prints it (needs the sweep's data to
    resolve the space; without it, none)."""
    from orchestrator.analysis.advice import sweep_advice
    from orchestrator.plan.sweep import plan_sweep

    best = results.best()
    if best is None:
        return []
    try:
        plan = plan_sweep(spec_path)
    except OrchestratorError:
        return []
    advice = sweep_advice(plan, results.study, frame, best)
    return list(advice.notes) if advice is not None else []


def html_report(spec_path: str, study: str | None = None) -> str:
    """The HTML report of the sweep in ``spec_path`` (its latest generation, or its study
    ``study``), read-only."""
    from orchestrator.results.html import ReportInputs, render_html, steps_per_epoch
    from orchestrator.stores.study import resolve_stores

    results = open_results(spec_path, study=study)
    spec = results.spec
    frame = results.frame()
    curves, why = _curves(resolve_stores(spec).mlflow, results.study)
    space = results.study.user_attrs.get(StudyAttrs.SPACE) or spec.space.model_dump(
        mode="json", exclude_none=True
    )
    inputs = ReportInputs(
        sweep=spec.name,
        study=results.study,
        frame=frame,
        metric=spec.objective.metric,
        direction=spec.objective.direction,
        backend=spec.backend.name,
        model=spec.backend.model,
        generation=results.generation,
        budget_usd=spec.budget_usd,
        curves=curves,
        curves_note=why,
        advice=_advice_notes(spec_path, results, frame),
        space=space if isinstance(space, Mapping) else {},
        steps_per_epoch=steps_per_epoch(results.study),
        previous_best=_previous_best(results.study, optuna_url(spec)),
    )
    return render_html(inputs)

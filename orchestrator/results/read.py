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

__all__ = ["DEFAULT_PICK", "SweepResults", "html_report", "open_results", "parse_policy"]

#: ``best --pick`` with several objectives, unless told otherwise: the cheapest of the
#: front trials within 2 % of the best primary objective
DEFAULT_PICK = ("cheapest-within", 2.0)


def parse_policy(text: str | None) -> tuple[str, float] | None:
    """``best``, ``knee`` or ``cheapest-within PCT`` (also ``cheapest-within=PCT``; PCT
    defaults to 2) as ``(policy, pct)``; None for None (the default). Raises
    :class:`~orchestrator.core.errors.UsageError` (exit 2) for anything else."""
    from orchestrator.core.errors import UsageError
    from orchestrator.results.front import POLICIES

    if text is None:
        return None
    name, _, rest = text.strip().replace("=", " ").replace(":", " ").partition(" ")
    if name not in POLICIES or (rest.strip() and name != "cheapest-within"):
        raise UsageError(f"--pick: expected best, knee or 'cheapest-within PCT', not {text!r}")
    pct = 2.0
    if rest.strip():
        try:
            pct = float(rest)
        except ValueError:
            raise UsageError(f"--pick: PCT must be a number, not {rest.strip()!r}") from None
        if not 0 <= pct < 1e6 or pct != pct:
            raise UsageError(f"--pick: PCT must be >= 0, not {rest.strip()}")
    return name, pct


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

    def pick(
        self, policy: tuple[str, float] | None = None
    ) -> tuple[optuna.trial.FrozenTrial, dict[str, Any]] | None:
        """The winning trial by ``policy`` (:func:`parse_policy`; None: ``best`` with one
        objective, :data:`DEFAULT_PICK` with several) and what to say of the choice:
        nothing for the default of one objective, else the policy and why, and with
        several objectives every objective's value and the front's trials. None when no
        trial has completed (feasibly)."""
        from orchestrator.results.front import pick, trial_points
        from orchestrator.results.table import front_numbers

        objectives = self.spec.objective_list
        several = len(self.study.directions) > 1
        if not several and policy is None:
            best = self.best()
            return (best, {}) if best is not None else None
        name, pct = policy or (DEFAULT_PICK if several else ("best", 2.0))
        trials = self.study.get_trials(deepcopy=False)
        directions = [d.name.lower() for d in self.study.directions]
        names = [o.metric for o in objectives][: len(directions)]
        chosen = pick(trial_points(trials), directions, name, pct, names)
        if chosen is None:
            return None
        trial = next(t for t in trials if t.number == chosen.number)
        default = " (the default with several objectives)" if policy is None else ""
        said: dict[str, Any] = {"policy": chosen.policy + default, "why": chosen.why}
        if several:
            said["objectives"] = dict(zip(names, trial.values, strict=False))
            said["front"] = sorted(front_numbers(self.study))
        return trial, said

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
    advice = sweep_advice(plan, results.study, frame.to_dict(orient="records"), best)
    return list(advice.notes) if advice is not None else []


def html_report(spec_path: str, study: str | None = None, *, every: bool = False) -> str:
    """The HTML report of the sweep in ``spec_path`` (its latest generation, or its study
    ``study``), read-only: its trials table one row per job, or with ``every`` one per
    Optuna trial."""
    from orchestrator.results.html import ReportInputs, render_html, steps_per_epoch
    from orchestrator.results.table import jobs_frame
    from orchestrator.stores.study import resolve_stores

    results = open_results(spec_path, study=study)
    spec = results.spec
    frame = results.frame()
    shown = frame if every else jobs_frame(frame)
    curves, why = _curves(resolve_stores(spec).mlflow, results.study)
    space = results.study.user_attrs.get(StudyAttrs.SPACE) or spec.space.model_dump(
        mode="json", exclude_none=True
    )
    inputs = ReportInputs(
        sweep=spec.name,
        study=results.study,
        frame=shown,
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
        objectives=tuple(o.metric for o in spec.objective_list),
        directions=tuple(o.direction for o in spec.objective_list),
    )
    return render_html(inputs)

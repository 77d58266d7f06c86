"""The MLflow listener: everything ftsweep writes to MLflow, driven by engine events.

One experiment per sweep (marked as model training, so the UI opens runs in that view), one
parent run per study, one child run per trial (named ``t007 ep=3 bs=16 lr=0.08``): parameters
incl. the resolved batch size, step metrics in batches, ``ftsweep.*`` tags (trial, state,
backend, job id, diagnosis, recommendation, best), cost, a loss-curve PNG; the parent gets the
spec, the datasets with their digests, the report and Optuna's plots; the best trial's model is
registered under the sweep's name, and the registered model's alias ``champion`` moves to it
(a retune that produces no model leaves it on the previous generation's). Each generation of a
retuned sweep is one parent run in the sweep's experiment, tagged with its generation, the
study it follows and what changed.

Every write is safe to repeat: child runs are found by their tags before one is created, points
at or before the last logged step are skipped, a finished run is left alone, a model version
from the same run is not registered twice. At the start of a sweep, child runs left RUNNING by a
crash whose trial the study holds as finished are closed with the study's state, so the two
stores tell the same story.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestrator.attrs import StudyAttrs, TrialAttrs
from orchestrator.backends.base import MetricPoint
from orchestrator.events import (
    Listener,
    Points,
    SweepFinished,
    SweepStarted,
    TrialFinished,
    TrialStarted,
    TrialSubmitted,
)
from orchestrator.params import parameter
from orchestrator.tracking.client import TAG, Tracker

if TYPE_CHECKING:
    import optuna

    from orchestrator.plan import SweepPlan

__all__ = ["CURRENT_ALIAS", "MlflowListener", "run_name"]

#: the registered model's alias of the sweep's current model (the last generation's best)
CURRENT_ALIAS = "champion"

_STATUS = {"COMPLETE": "FINISHED", "PRUNED": "KILLED", "FAIL": "FAILED"}


def run_name(number: int, hp: dict[str, Any]) -> str:
    """``t007 ep=3 bs=16 lr=0.08``: readable in the runs table."""
    short = {"n_epochs": "ep", "batch_size": "bs", "learning_rate_multiplier": "lr"}
    parts = [f"t{number:03d}"]
    for name, label in short.items():
        if name in hp:
            v = hp[name]
            parts.append(f"{label}={v:.3g}" if isinstance(v, float) else f"{label}={v}")
    if "prompt_loss_weight" in hp:
        parts.append(f"{parameter('prompt_loss_weight').short}={hp['prompt_loss_weight']:.3g}")
    return " ".join(parts)


class MlflowListener(Listener):
    """Logs a sweep to MLflow through a :class:`Tracker`."""

    name = "MLflow"

    def __init__(self, tracker: Tracker) -> None:
        self.tracker = tracker
        self.parent: str | None = None
        self.study: optuna.Study | None = None
        self.runs: dict[int, str] = {}
        self.last_step: dict[int, dict[str, int]] = {}
        self.closed: set[int] = set()

    # -- the sweep ---------------------------------------------------------------------------
    def sweep_started(self, e: SweepStarted) -> None:
        self.study = e.study
        known = e.study.user_attrs.get(StudyAttrs.MLFLOW_PARENT_RUN)
        name = e.plan.study_name
        tags = {f"{TAG}study": name, f"{TAG}backend": e.backend, **_lineage_tags(e)}
        parent = self.tracker.parent_run(known, name, tags)
        self.parent = parent
        if known != parent:
            e.study.set_user_attr(StudyAttrs.MLFLOW_PARENT_RUN, parent)
            e.study.set_user_attr(StudyAttrs.MLFLOW_EXPERIMENT, self.tracker.experiment_id)
            self._log_parent_start(parent, e)
        self._reconcile(e.study, parent)

    def _log_parent_start(self, parent: str, e: SweepStarted) -> None:
        plan, backend = e.plan, e.backend
        spec = plan.spec
        params: dict[str, Any] = {
            "backend": backend,
            "model": spec.backend.model,
            "objective": f"{spec.objective.direction} {spec.objective.metric}",
            "sampler": spec.sampler.name,
            "pruner": spec.pruner.name,
            "trials": spec.trials,
            "n_train_examples": plan.train.n_examples,
            "train_sha256": plan.train.sha256,
        }
        for d in plan.space.dimensions:
            params[f"space.{d.name}"] = d.describe()
        if plan.valid is not None:
            params["n_valid_examples"] = plan.valid.n_examples
            params["valid_sha256"] = plan.valid.sha256
        if spec.budget_usd is not None:
            params["budget_usd"] = spec.budget_usd
        if e.fingerprint is not None:
            params.update(e.fingerprint.summary())
        self.tracker.log(parent, params=params)
        if e.fingerprint is not None:
            self.tracker.log_text(parent, e.fingerprint.to_json(), "fingerprint.json")
        datasets = {"training": plan.train}
        if plan.valid is not None:
            datasets["validation"] = plan.valid
        self.tracker.log_datasets(parent, datasets)
        if spec.source is not None and Path(spec.source).is_file():
            self.tracker.log_file(parent, Path(spec.source), "sweep")

    def _reconcile(self, study: optuna.Study, parent: str) -> None:
        """Close child runs a crash left RUNNING whose trial the study holds as finished."""
        states = {t.number: t for t in study.get_trials(deepcopy=False)}
        for run in self.tracker.children(parent):
            if run.info.status != "RUNNING":
                continue
            number = run.data.tags.get(f"{TAG}trial")
            trial = states.get(int(number)) if number and number.isdigit() else None
            if trial is None or trial.state.name not in _STATUS:
                continue
            tags: dict[str, Any] = {f"{TAG}state": trial.state.name}
            for key in (TrialAttrs.DIAGNOSIS, TrialAttrs.RECOMMENDATION, TrialAttrs.ERROR):
                if key in trial.user_attrs:
                    tags[key] = str(trial.user_attrs[key])[:4000]
            metrics = {"objective": trial.value} if trial.value is not None else {}
            self.tracker.log(run.info.run_id, tags=tags, metrics=metrics)
            self.tracker.finish(run.info.run_id, _STATUS[trial.state.name])

    def sweep_finished(self, e: SweepFinished) -> None:
        parent = self.parent
        if parent is None:
            return
        if not e.changed and self.tracker.status(parent) == "FINISHED":
            return  # a finished sweep run again: everything is logged already
        metrics: dict[str, float] = {"spent_usd": round(e.spent_usd, 4), "n_trials": len(e.frame)}
        tags: dict[str, Any] = {}
        if e.best is not None and e.best.value is not None:
            metrics["best_value"] = float(e.best.value)
            tags[f"{TAG}best_trial"] = str(e.best.number)
            for run in self.tracker.children(parent):
                number = run.data.tags.get(f"{TAG}trial")
                best = str(number == str(e.best.number)).lower()
                if run.data.tags.get(f"{TAG}best") != best:
                    self.tracker.log(run.info.run_id, tags={f"{TAG}best": best})
            self._register_best(e.plan, e.study, e.best)
        self.tracker.log(parent, metrics=metrics, tags=tags)
        self._log_report(parent, e)
        self.tracker.finish(parent)

    def _log_report(self, parent: str, e: SweepFinished) -> None:
        from orchestrator.report import render

        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            (folder / "trials.csv").write_text(render(e.frame, "csv"))
            (folder / "report.md").write_text(render(e.frame, "markdown") + "\n")
            (folder / "report.html").write_text(render(e.frame, "html"))
            if e.advice is not None:
                advice = json.dumps(e.advice.__dict__, indent=2, default=str)
                (folder / "advice.json").write_text(advice)
            _optuna_plots(e.study, folder)
            self.tracker.log_file(parent, folder, "report")

    def _register_best(
        self, plan: SweepPlan, study: optuna.Study, best: optuna.trial.FrozenTrial
    ) -> None:
        """Register the best trial's model (once per best trial) in the Model Registry."""
        if study.user_attrs.get(StudyAttrs.REGISTERED_TRIAL) == best.number:
            return
        run_id = best.user_attrs.get(TrialAttrs.MLFLOW_RUN)
        model = best.user_attrs.get(TrialAttrs.FINE_TUNED_MODEL)
        if not run_id or not model:
            return
        from orchestrator.tracking.pyfunc import log_recipe_model

        if not log_recipe_model(self.tracker, run_id, "model", plan.spec.backend.name, best):
            return
        tags = {f"{TAG}trial": str(best.number), f"{TAG}study": plan.study_name}
        version = self.tracker.register_model(run_id, "model", plan.spec.name, tags)
        # the sweep's current model: a later generation that produces none leaves it here
        self.tracker.set_model_alias(plan.spec.name, CURRENT_ALIAS, version)
        study.set_user_attr(StudyAttrs.REGISTERED_TRIAL, best.number)
        study.set_user_attr(StudyAttrs.REGISTERED_VERSION, version)

    # -- trials ------------------------------------------------------------------------------
    def trial_started(self, e: TrialStarted) -> None:
        assert self.parent is not None, "sweep_started comes first"
        t = e.trial
        hp = t.request.hyperparameters.as_dict()
        run_id = str(t.attrs.get(TrialAttrs.MLFLOW_RUN) or "")
        status = self.tracker.status(run_id) if run_id else None
        created = status is None
        if created:
            run_id = self.tracker.child_run(
                self.parent,
                t.number,
                run_name(t.number, hp),
                {
                    f"{TAG}state": "RUNNING",
                    f"{TAG}backend": str(t.attrs.get(TrialAttrs.BACKEND, "")),
                },
            )
            status = self.tracker.status(run_id)
        if t.attrs.get(TrialAttrs.MLFLOW_RUN) != run_id:
            t.set_attr(TrialAttrs.MLFLOW_RUN, run_id)
        self.runs[t.number] = run_id
        if status not in (None, "RUNNING"):
            self.closed.add(t.number)  # finished before a crash: the study is told next
            return
        if not e.reattached or created:
            params: dict[str, Any] = {**hp, "model": t.request.model, "seed": t.request.seed}
            if e.batch_size_pct is not None:
                params["batch_size_pct"] = e.batch_size_pct
            self.tracker.log(run_id, params=params, tags={f"{TAG}backend": _backend(t.attrs)})
        if e.reattached:  # whatever was logged before the crash is not logged again
            self.last_step[t.number] = self.tracker.last_steps(run_id)

    def trial_submitted(self, e: TrialSubmitted) -> None:
        run_id = self.runs.get(e.trial.number)
        if run_id and e.trial.number not in self.closed:
            self.tracker.log(run_id, tags={f"{TAG}job_id": e.job_id})

    def points(self, e: Points) -> None:
        run_id = self.runs.get(e.trial.number)
        if not run_id or e.trial.number in self.closed:
            return
        last = self.last_step.setdefault(e.trial.number, {})
        fresh = [p for p in e.points if p.step > last.get(p.name, 0)]
        if not fresh:
            return
        self.tracker.log_points(run_id, fresh)
        for p in fresh:
            last[p.name] = max(p.step, last.get(p.name, 0))

    def trial_finished(self, e: TrialFinished) -> None:
        number = e.trial.number
        run_id = self.runs.get(number)
        if not run_id or number in self.closed or self.tracker.status(run_id) != "RUNNING":
            return
        diag = e.diagnosis
        tags: dict[str, Any] = {
            f"{TAG}state": e.state,
            f"{TAG}diagnosis": diag.label,
            f"{TAG}recommendation": diag.recommendation,
            "mlflow.note.content": f"{e.state}: {diag.summary()}",
        }
        if e.update is not None:
            tags[f"{TAG}job_status"] = e.update.status.value
            if e.update.fine_tuned_model:
                tags[f"{TAG}fine_tuned_model"] = e.update.fine_tuned_model
        if e.error:
            tags[f"{TAG}error"] = e.error[:4000]
        if e.pruned_at is not None:
            tags[f"{TAG}pruned_at_epoch"] = str(e.pruned_at)
        # the runs table shows KILLED (pruned) and FAILED alike: the name tells them apart
        suffix = {"PRUNED": f" pruned@ep{e.pruned_at}", "FAIL": " FAILED"}.get(e.state)
        if suffix:
            hp = e.trial.request.hyperparameters.as_dict()
            tags["mlflow.runName"] = run_name(number, hp) + suffix
        metrics: dict[str, float] = {f"diagnosis.{k}": v for k, v in diag.evidence.items()}
        if e.cost_usd is not None:
            metrics["cost_usd"] = e.cost_usd
        if e.value is not None and e.state == "COMPLETE":
            metrics["objective"] = e.value
        logged = self.last_step.get(number, {})
        metrics = {k: v for k, v in metrics.items() if k not in logged}  # a crash mid-way
        self.tracker.log(run_id, metrics=metrics, tags=tags)
        if e.update is not None and e.update.checkpoints:
            points = [
                MetricPoint(c.epoch, f"checkpoint.{name}", float(value))
                for c in e.update.checkpoints
                for name, value in c.metrics.items()
                if c.epoch > logged.get(f"checkpoint.{name}", 0)
            ]
            if points:
                self.tracker.log_points(run_id, points)
        if e.curves:
            self.tracker.log_curve_png(run_id, e.curves, f"trial {number} ({e.state})")
        self.tracker.finish(run_id, _STATUS[e.state])
        self.closed.add(number)


def _lineage_tags(e: SweepStarted) -> dict[str, str]:
    gen = e.plan.generation
    tags = {f"{TAG}generation": str(gen.number if gen else 1)}
    if e.fingerprint is not None:
        tags[f"{TAG}fingerprint"] = e.fingerprint.digest()
        tags[f"{TAG}model_id"] = e.fingerprint.model.id
    if gen is not None and gen.previous:
        tags[f"{TAG}previous_study"] = gen.previous
        tags[f"{TAG}changed"] = "; ".join(gen.changes)[:4000]
    return tags


def _backend(attrs: Any) -> str:
    return str(attrs.get(TrialAttrs.BACKEND, ""))


def _optuna_plots(study: optuna.Study, folder: Path) -> None:
    """Optuna's matplotlib plots as PNG (offline; plotly would need a CDN or 4.8 MB each)."""
    import warnings

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as ovm

    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    if not complete:
        return
    plots: list[tuple[str, Callable[..., Any]]] = [
        ("optimization_history", ovm.plot_optimization_history),
        ("slice", ovm.plot_slice),
        ("intermediate_values", ovm.plot_intermediate_values),
    ]
    if len(complete) >= 3 and len(study.best_trial.params) >= 2:
        plots.append(("param_importances", ovm.plot_param_importances))
    for name, fn in plots:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                ax = fn(study)
            except (ValueError, RuntimeError, ZeroDivisionError):
                continue  # too few trials for this plot
        fig = ax.figure if hasattr(ax, "figure") else ax.flat[0].figure
        fig.savefig(folder / f"{name}.png", dpi=90, bbox_inches="tight")
        plt.close(fig)

"""The MLflow listener: everything ftsweep writes to MLflow, driven by engine events.

One experiment per sweep (marked as model training, so the UI opens runs in that view), one
parent run per study, one child run per trial (named ``t007 ep=3 bs=16 lr=0.08``): parameters
incl. the resolved batch size, step metrics in batches, ``ftsweep.*`` tags (trial, state,
backend, job id, diagnosis, recommendation, best), cost, a loss-curve SVG; the parent gets the
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
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestrator.backends.base import MetricPoint
from orchestrator.core.attrs import StudyAttrs, TrialAttrs
from orchestrator.core.params import parameter
from orchestrator.engine.events import (
    Listener,
    Points,
    Records,
    SweepFinished,
    SweepStarted,
    TrialFinished,
    TrialStarted,
    TrialSubmitted,
)
from orchestrator.results.front import primary_value
from orchestrator.tracking.client import TAG, Tracker

if TYPE_CHECKING:
    import optuna

    from orchestrator.plan.sweep import SweepPlan

__all__ = ["CURRENT_ALIAS", "MlflowListener", "run_name"]

#: the registered model's alias of the sweep's current model (the last generation's best)
CURRENT_ALIAS = "champion"

_STATUS = {"COMPLETE": "FINISHED", "PRUNED": "KILLED", "FAIL": "FAILED"}
#: seconds between two ``log_batch`` calls of one trial's points, at the most often: polls
#: that come quicker share one (a trial's points are all logged when it ends)
FLUSH_EVERY_S = 5.0
#: a child run's loss-curve SVG: ``pending`` until the end of the sweep draws it
CURVE_TAG = f"{TAG}loss_curve"
#: with several objectives: on the parent run the front's trial numbers; on a child run
#: "true" when its trial (or an earlier epoch of its job) is on the Pareto front
FRONT_TAG = f"{TAG}pareto_front"
CURVE_PENDING = "pending"
#: the loss curve's artifact (SVG: the MLflow UI shows it as an image)
CURVE_FILE = "loss_curve.svg"
CURVE_METRICS = ("train_loss", "valid_loss", "full_valid_loss")


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

    def __init__(self, tracker: Tracker, clock: Callable[[], float] = time.monotonic) -> None:
        self.tracker = tracker
        self.clock = clock
        self.parent: str | None = None
        self.study: optuna.Study | None = None
        self.runs: dict[int, str] = {}
        self.last_step: dict[int, dict[str, int]] = {}
        self.closed: set[int] = set()
        #: trials whose child run this process created (known to be RUNNING until closed)
        self.fresh: set[int] = set()
        #: what goes with a trial's next ``log_batch`` (see :meth:`points`)
        self.pending: dict[int, _Batch] = {}
        #: trials finished in this run whose loss-curve SVG is drawn at the end
        self.curves: dict[int, tuple[str, Mapping[str, Sequence[tuple[int, float]]], str]] = {}

    # -- the sweep ---------------------------------------------------------------------------
    def sweep_started(self, e: SweepStarted) -> Records | None:
        """The study's parent run, found or made; a new one is recorded on the study (by
        the engine, from what this returns)."""
        self.study = e.study
        known = e.study.user_attrs.get(StudyAttrs.MLFLOW_PARENT_RUN)
        name = e.plan.study_name
        tags = {f"{TAG}study": name, f"{TAG}backend": e.backend, **_lineage_tags(e)}
        parent = self.tracker.parent_run(known, name, tags)
        self.parent = parent
        records: Records | None = None
        if known != parent:
            records = {
                StudyAttrs.MLFLOW_PARENT_RUN: parent,
                StudyAttrs.MLFLOW_EXPERIMENT: self.tracker.experiment_id,
            }
            self._log_parent_start(parent, e)
        self._reconcile(e.study, parent)
        return records

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
            value = primary_value(trial)
            metrics = {"objective": value} if value is not None else {}
            self.tracker.log(run.info.run_id, tags=tags, metrics=metrics)
            self.tracker.finish(run.info.run_id, _STATUS[trial.state.name])

    def sweep_finished(self, e: SweepFinished) -> Records | None:
        """The parent run's end (best tags, the registered model, the report, plots); what
        it records: that MLflow holds the conclusion in full, the registered version."""
        parent = self.parent
        if parent is None:
            return None
        if not e.changed and self.tracker.status(parent) == "FINISHED":
            return self._logged(e.study)  # a finished sweep run again: all is logged already
        records: Records = {}
        metrics: dict[str, float] = {"spent_usd": round(e.spent_usd, 4), "n_trials": len(e.frame)}
        tags: dict[str, Any] = {}
        best_number = None
        best_value = primary_value(e.best) if e.best is not None else None
        if e.best is not None and best_value is not None:
            metrics["best_value"] = best_value
            tags[f"{TAG}best_trial"] = str(e.best.number)
            best_number = str(e.best.number)
        front = self._front(e) if e.plan.spec.multi_objective else None
        if front is not None:
            metrics["pareto_front_size"] = len(front)
            tags[FRONT_TAG] = ",".join(str(row["trial"]) for row in front)[:4000]
        self._close_children(parent, best_number, front)
        if e.best is not None and best_value is not None:
            records.update(self._register_best(e.plan, e.study, e.best))
        self.tracker.log(parent, metrics=metrics, tags=tags)
        self._log_report(parent, e, front)
        self.tracker.finish(parent)
        records.update(self._logged(e.study))
        return records

    @staticmethod
    def _logged(study: optuna.Study) -> Records:
        """That MLflow holds the study's conclusion in full (``run_sweep``'s no-op path then
        skips MLflow), to record once the parent run ended; a crash before the engine records
        it leaves the conclusion unmarked, and the next run logs it again."""
        concluded = study.user_attrs.get(StudyAttrs.CONCLUDED)
        at = concluded.get("at") if isinstance(concluded, dict) else None
        if at is not None and study.user_attrs.get(StudyAttrs.LOGGED) != at:
            return {StudyAttrs.LOGGED: at}
        return {}

    @staticmethod
    def _front(e: SweepFinished) -> list[dict[str, Any]]:
        """The Pareto front's trials, as ``pareto_front.json`` holds them: number, the job's
        trial (a derived epoch lives on its job's run), values by objective, parameters."""
        from orchestrator.results.table import front_numbers

        numbers = front_numbers(e.study)
        names = [o.metric for o in e.plan.spec.objective_list]
        rows = []
        for t in e.study.get_trials(deepcopy=False):
            if t.number in numbers:
                rows.append(
                    {
                        "trial": t.number,
                        "job_trial": t.user_attrs.get(TrialAttrs.DERIVED_FROM, t.number),
                        "values": dict(zip(names, t.values, strict=False)),
                        "params": t.params,
                        "mlflow_run_id": t.user_attrs.get(TrialAttrs.MLFLOW_RUN),
                    }
                )
        return rows

    def _close_children(
        self, parent: str, best: str | None, front: list[dict[str, Any]] | None = None
    ) -> None:
        """Once per sweep, in one pass over the child runs: the ``ftsweep.best`` tag of each
        (and with several objectives ``ftsweep.pareto_front``: its trial, or an earlier epoch
        of its job, is on the front) and the loss-curve SVG of each finished trial that has
        none yet (this run's, from its curves in memory; an interrupted run's, from the
        metrics MLflow holds)."""
        from orchestrator.results.plots import loss_curve

        on_front = {str(row["job_trial"]) for row in front or ()}
        for run in self.tracker.children(parent):
            run_id = run.info.run_id
            number = run.data.tags.get(f"{TAG}trial")
            update: dict[str, Any] = {}
            if best is not None:
                flag = str(number == best).lower()
                if run.data.tags.get(f"{TAG}best") != flag:
                    update[f"{TAG}best"] = flag
            if front is not None:
                flag = str(number in on_front).lower()
                if run.data.tags.get(FRONT_TAG) != flag:
                    update[FRONT_TAG] = flag
            if run.data.tags.get(CURVE_TAG) == CURVE_PENDING:
                mine = self.curves.get(int(number)) if number and number.isdigit() else None
                if mine is None:
                    curves = self.tracker.history(run_id, CURVE_METRICS)
                    state = run.data.tags.get(f"{TAG}state", "")
                    mine = (run_id, curves, f"trial {number} ({state})")
                if mine[1]:
                    self.tracker.log_text(run_id, loss_curve(mine[1], mine[2]), CURVE_FILE)
                update[CURVE_TAG] = CURVE_FILE
            if update:
                self.tracker.log(run_id, tags=update)

    def _log_report(
        self, parent: str, e: SweepFinished, front: list[dict[str, Any]] | None = None
    ) -> None:
        from orchestrator.results.table import render

        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            if front is not None:
                (folder / "pareto_front.json").write_text(json.dumps(front, indent=2, default=str))
            (folder / "trials.csv").write_text(render(e.frame, "csv"))
            (folder / "report.md").write_text(render(e.frame, "markdown") + "\n")
            (folder / "report.html").write_text(self._html(e))
            if e.advice is not None:
                advice = json.dumps(e.advice.__dict__, indent=2, default=str)
                (folder / "advice.json").write_text(advice)
            self.tracker.log_file(parent, folder, "report")

    def _html(self, e: SweepFinished) -> str:
        """The sweep's HTML page (``ftsweep report --format html``): its plots drawn from this
        run's curves in memory (trials of earlier runs: their table row, not their curves)."""
        from orchestrator.results.html import ReportInputs, render_html, steps_per_epoch

        plan = e.plan
        gen = plan.generation
        curves = {
            n: {name: list(points) for name, points in c.items()}
            for n, (_, c, _) in self.curves.items()
            if c
        }
        return render_html(
            ReportInputs(
                sweep=plan.spec.name,
                study=e.study,
                frame=e.frame,
                metric=plan.spec.objective.metric,
                direction=plan.spec.objective.direction,
                backend=plan.spec.backend.name,
                model=plan.spec.backend.model,
                generation=gen.number if gen else 1,
                budget_usd=plan.spec.budget_usd,
                curves=curves,
                curves_note=None if curves else "no trial ran in this process",
                advice=list(e.advice.notes) if e.advice is not None else [],
                space=plan.space.to_dict(),
                steps_per_epoch=steps_per_epoch(e.study),
                objectives=tuple(o.metric for o in plan.spec.objective_list),
                directions=tuple(o.direction for o in plan.spec.objective_list),
            )
        )

    def _register_best(
        self, plan: SweepPlan, study: optuna.Study, best: optuna.trial.FrozenTrial
    ) -> Records:
        """Register the best trial's model (once per best trial) in the Model Registry;
        the trial and version to record on the study. A best trial without a model (an
        earlier epoch whose job kept none) registers the best trial that has one."""
        from orchestrator.tracking.recipe import with_model

        best = with_model(study, best)
        if study.user_attrs.get(StudyAttrs.REGISTERED_TRIAL) == best.number:
            return {}
        run_id = best.user_attrs.get(TrialAttrs.MLFLOW_RUN)
        model = best.user_attrs.get(TrialAttrs.FINE_TUNED_MODEL)
        if not run_id or not model:
            return {}
        from orchestrator.tracking.pyfunc import log_recipe_model

        if not log_recipe_model(self.tracker, run_id, "model", plan.spec.backend.name, best, study):
            return {}
        tags = {f"{TAG}trial": str(best.number), f"{TAG}study": plan.study_name}
        version = self.tracker.register_model(run_id, "model", plan.spec.name, tags)
        # the sweep's current model: a later generation that produces none leaves it here
        self.tracker.set_model_alias(plan.spec.name, CURRENT_ALIAS, version)
        return {StudyAttrs.REGISTERED_TRIAL: best.number, StudyAttrs.REGISTERED_VERSION: version}

    # -- trials ------------------------------------------------------------------------------
    def trial_started(self, e: TrialStarted) -> Records | None:
        """The trial's child run, found or made (its id recorded on the trial's ledger by
        the engine, from what this returns), and its parameters."""
        assert self.parent is not None, "sweep_started comes first"
        t = e.trial
        hp = t.request.hyperparameters.as_dict()
        run_id = str(t.attrs.get(TrialAttrs.MLFLOW_RUN) or "")
        status = self.tracker.status(run_id) if run_id else None
        created = status is None
        if created:
            new = not e.reattached and not run_id  # no run can exist for it yet
            run_id = self.tracker.child_run(
                self.parent,
                t.number,
                run_name(t.number, hp),
                {
                    f"{TAG}state": "RUNNING",
                    f"{TAG}backend": str(t.attrs.get(TrialAttrs.BACKEND, "")),
                },
                new=new,
            )
            if new:
                self.fresh.add(t.number)
                status = "RUNNING"
            else:
                status = self.tracker.status(run_id)
        records: Records | None = None
        if t.attrs.get(TrialAttrs.MLFLOW_RUN) != run_id:
            records = {TrialAttrs.MLFLOW_RUN: run_id}
        self.runs[t.number] = run_id
        if status not in (None, "RUNNING"):
            self.closed.add(t.number)  # finished before a crash: the study is told next
            return records
        params: dict[str, Any] = {**hp, "model": t.request.model, "seed": t.request.seed}
        if e.batch_size_pct is not None:
            params["batch_size_pct"] = e.batch_size_pct
        batch = self.pending[t.number] = _Batch(since=self.clock())
        if e.reattached:  # the same values again are no error: a crash may have lost them
            self.tracker.log(run_id, params=params, tags={f"{TAG}backend": _backend(t.attrs)})
            # whatever was logged before the crash is not logged again
            self.last_step[t.number] = self.tracker.last_steps(run_id)
        else:  # with the trial's first batch
            batch.params.update(params)
        return records

    def trial_submitted(self, e: TrialSubmitted) -> None:
        """The job id goes with the trial's next batch; a process that dies before that
        logs it again when it re-attaches."""
        batch = self.pending.get(e.trial.number)
        if batch is not None and e.trial.number not in self.closed:
            batch.tags[f"{TAG}job_id"] = e.job_id

    def points(self, e: Points) -> None:
        """New points are logged at most once per poll, and at most every
        :data:`FLUSH_EVERY_S` per trial (quick polls share one ``log_batch``), and at the
        trial's end."""
        run_id = self.runs.get(e.trial.number)
        batch = self.pending.get(e.trial.number)
        if not run_id or batch is None or e.trial.number in self.closed:
            return
        last = self.last_step.setdefault(e.trial.number, {})
        fresh = [p for p in e.points if p.step > last.get(p.name, 0)]
        for p in fresh:
            last[p.name] = max(p.step, last.get(p.name, 0))
        batch.points += fresh
        if batch.points and self.clock() - batch.since >= FLUSH_EVERY_S:
            self._flush(e.trial.number, run_id)

    def _flush(
        self,
        number: int,
        run_id: str,
        tags: Mapping[str, Any] | None = None,
        metrics: Mapping[str, float] | None = None,
    ) -> None:
        """Everything pending for the trial (and ``tags``/``metrics``) in one call."""
        batch = self.pending.pop(number, None) or _Batch()
        self.pending[number] = _Batch(since=self.clock())
        all_tags = {**batch.tags, **(tags or {})}
        if batch.points or batch.params or all_tags or metrics:
            self.tracker.log_points(run_id, batch.points, all_tags, batch.params, metrics)

    def trial_finished(self, e: TrialFinished) -> None:
        number = e.trial.number
        run_id = self.runs.get(number)
        if not run_id or number in self.closed:
            return
        # a run this process made is RUNNING until it closes it; another may have been closed
        if number not in self.fresh and self.tracker.status(run_id) != "RUNNING":
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
        if e.curves:  # drawn at the end of the sweep, all in one pass (not in the loop)
            tags[CURVE_TAG] = CURVE_PENDING
            self.curves[number] = (run_id, e.curves, f"trial {number} ({e.state})")
        if e.update is not None and e.update.checkpoints:
            batch = self.pending.setdefault(number, _Batch())
            batch.points += [
                MetricPoint(c.epoch, f"checkpoint.{name}", float(value))
                for c in e.update.checkpoints
                for name, value in c.metrics.items()
                if c.epoch > logged.get(f"checkpoint.{name}", 0)
            ]
        self._flush(number, run_id, tags, metrics)  # the points not yet logged, and the end
        self.pending.pop(number, None)
        self.tracker.finish(run_id, _STATUS[e.state])
        self.closed.add(number)


@dataclass
class _Batch:
    """A trial's values waiting for its next ``log_batch``."""

    since: float = 0.0
    points: list[MetricPoint] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)
    tags: dict[str, Any] = field(default_factory=dict)


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

"""The sweep engine: :func:`run_sweep` plans, opens the stores, runs the loop, and concludes.

``run_sweep`` on a sweep whose study exists resumes it: trials already finished count towards
``trials``, and jobs left running by a dead process are re-attached, not trained again.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestrator.diagnosis import Advice, advise
from orchestrator.engine.budget import Budget
from orchestrator.engine.ledger import A
from orchestrator.engine.loop import Limits, SweepLoop
from orchestrator.engine.study import Stores, open_study, resolve_stores
from orchestrator.plan import SweepPlan, plan_sweep
from orchestrator.report import best_trial, render, trials_frame
from orchestrator.tracking import Tracker

if TYPE_CHECKING:
    import optuna
    import pandas as pd

__all__ = ["Overrides", "SweepResult", "open_sweep", "run_sweep"]


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
    frame: pd.DataFrame
    advice: Advice | None
    experiment_id: str
    parent_run: str
    stop_reason: str | None


@dataclass(frozen=True)
class OpenSweep:
    plan: SweepPlan
    stores: Stores
    study: optuna.Study


def open_sweep(spec_path: str | os.PathLike[str], *, count_tokens: bool = False) -> OpenSweep:
    """Plan a sweep and open (or create) its study, for run, status, report and best."""
    plan = plan_sweep(spec_path, count_tokens=count_tokens)
    stores = resolve_stores(plan.spec)
    return OpenSweep(plan, stores, open_study(plan.spec, plan.space, stores))


def _enqueue(study: optuna.Study, configs: list[dict[str, float]]) -> None:
    for config in configs:
        study.enqueue_trial(dict(config), skip_if_exists=True)


def _spent(study: optuna.Study) -> float:
    return sum(float(t.user_attrs.get(A.COST, 0.0)) for t in study.get_trials(deepcopy=False))


def run_sweep(
    spec_path: str | os.PathLike[str],
    overrides: Overrides = Overrides(),
    *,
    say: Callable[[str], None] = lambda _: None,
) -> SweepResult:
    """Run (or resume) the sweep in ``spec_path`` to its limits and conclude it."""
    opened = open_sweep(spec_path, count_tokens=True)
    plan, stores, study = opened.plan, opened.stores, opened.study
    spec = plan.spec
    options = dict(spec.backend.options)
    if spec.prices and "prices" in getattr(plan.backend, "backend_options", ()):
        options.setdefault("prices", spec.prices)  # estimates and actual costs use one table
    backend = plan.backend.from_options(
        options, workdir=stores.workdir / "backends" / plan.backend.name
    )
    tracker = Tracker(stores.mlflow, spec.name, stores.artifacts)
    parent = tracker.parent_run(
        study.user_attrs.get(A.PARENT),
        spec.name,
        {"ftsweep.study": spec.name, "ftsweep.backend": spec.backend.name},
    )
    if study.user_attrs.get(A.PARENT) != parent:
        study.set_user_attr(A.PARENT, parent)
        study.set_user_attr(A.EXPERIMENT, tracker.experiment_id)
        _log_parent_start(tracker, parent, plan)
    _enqueue(study, spec.enqueue)
    limits = Limits(
        trials=overrides.trials or spec.trials,
        parallel=overrides.parallel or spec.parallel,
        timeout_s=spec.timeout_s,
        target=spec.target,
    )
    budget_limit = overrides.budget_usd if overrides.budget_usd is not None else spec.budget_usd
    budget = Budget(budget_limit, spent=_spent(study))
    loop = SweepLoop(plan, backend, study, tracker, parent, limits, budget, say=say)
    loop.run()
    if loop.stop_reason:
        say(f"stopped: {loop.stop_reason}")
    frame = trials_frame(study, plan.space.fixed())
    advice = _conclude(plan, study, tracker, parent, frame, budget)
    return SweepResult(
        plan, stores, study, frame, advice, tracker.experiment_id, parent, loop.stop_reason
    )


def _log_parent_start(tracker: Tracker, parent: str, plan: SweepPlan) -> None:
    spec = plan.spec
    params: dict[str, Any] = {
        "backend": spec.backend.name,
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
    tracker.log(parent, params=params)
    datasets = {"training": plan.train}
    if plan.valid is not None:
        datasets["validation"] = plan.valid
    tracker.log_datasets(parent, datasets)
    if spec.source is not None and Path(spec.source).is_file():
        tracker.log_file(parent, Path(spec.source), "sweep")


def _conclude(
    plan: SweepPlan,
    study: optuna.Study,
    tracker: Tracker,
    parent: str,
    frame: pd.DataFrame,
    budget: Budget,
) -> Advice | None:
    best = best_trial(study)
    labels = [str(x) for x in frame.get("diagnosis", []) if x]
    advice = None
    metrics: dict[str, float] = {"spent_usd": round(budget.spent, 4), "n_trials": float(len(frame))}
    tags: dict[str, Any] = {}
    if best is not None:
        sign = 1.0 if plan.spec.objective.direction == "minimize" else -1.0
        done = [t for t in study.trials if t.value is not None]
        ranked = sorted(done, key=lambda t: sign * float(t.value or 0.0))
        top = [t.params for t in ranked[:3]]
        params = {**plan.space.fixed(), **best.params}
        advice = advise(plan.space, params, labels, top)
        metrics["best_value"] = float(best.value)  # type: ignore[arg-type]
        tags["ftsweep.best_trial"] = str(best.number)
        for t in study.trials:
            run_id = t.user_attrs.get(A.RUN)
            if run_id:
                tracker.log(run_id, tags={"ftsweep.best": str(t.number == best.number).lower()})
        _register_best(plan, study, tracker, best)
    tracker.log(parent, metrics=metrics, tags=tags)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "trials.csv").write_text(render(frame, "csv"))
        (folder / "report.md").write_text(render(frame, "markdown") + "\n")
        (folder / "report.html").write_text(render(frame, "html"))
        if advice is not None:
            (folder / "advice.json").write_text(json.dumps(advice.__dict__, indent=2, default=str))
        _optuna_plots(study, folder)
        tracker.log_file(parent, folder, "report")
    tracker.finish(parent)
    return advice


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


def _register_best(
    plan: SweepPlan, study: optuna.Study, tracker: Tracker, best: optuna.trial.FrozenTrial
) -> None:
    """Register the best trial's model (once per best trial) in the Model Registry."""
    if study.user_attrs.get("ftsweep.registered_trial") == best.number:
        return
    run_id = best.user_attrs.get(A.RUN)
    model = best.user_attrs.get(A.MODEL)
    if not run_id or not model:
        return
    path = Path(str(model))
    if path.is_dir():
        tracker.log_file(run_id, path, "model")
    else:
        tracker.log_text(
            run_id,
            json.dumps({"fine_tuned_model": model, "backend": plan.spec.backend.name}),
            "model/model.json",
        )
    version = tracker.register_model(
        run_id, "model", plan.spec.name, {"ftsweep.trial": str(best.number)}
    )
    study.set_user_attr("ftsweep.registered_trial", best.number)
    study.set_user_attr("ftsweep.registered_version", version)

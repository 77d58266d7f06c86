"""``ftsweep retune`` and ``ftsweep history``: re-run a sweep when its data or base model
changed, and show its generations."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated

import typer

from orchestrator.cli.common import SpecArg, quiet_libraries, ui_hint
from orchestrator.cli.output import out

__all__ = ["register"]


def retune(
    spec: SpecArg,
    report: Annotated[
        Path | None,
        typer.Option("--report", help="Also write the morning report (HTML) to this file."),
    ] = None,
    trials: Annotated[
        int | None, typer.Option(min=1, max=100_000, help="Trials in the new generation.")
    ] = None,
    parallel: Annotated[
        int | None, typer.Option(min=1, max=1000, help="Jobs in flight at once.")
    ] = None,
    budget: Annotated[
        float | None, typer.Option(min=0, help="USD cap on the new generation's cost.")
    ] = None,
) -> None:
    """Re-run the sweep only if its data, base model or settings changed (for cron/systemd).

    Unchanged since the last sweep that produced a model: says so and exits 0, training
    nothing. Changed: starts a new generation (a new study linked to the previous one),
    warm-started with the previous best configurations (batch size rescaled to the new data
    size), its space moved where the last sweep's advice says. An unfinished generation is
    resumed. Only one retune of a sweep runs at a time (a lock in the study storage). Exit 1
    when the new generation completed no trial: the previous model stays current.

    Example: ftsweep retune sweeps/nightly.yaml --report reports/retune.html
    """
    quiet_libraries()
    import contextlib

    from orchestrator.cli.live import console_for, stderr_mode
    from orchestrator.config import load_spec
    from orchestrator.core.errors import OrchestratorError, UsageError
    from orchestrator.engine import Overrides
    from orchestrator.workflows.retune import retune as run_retune

    if budget is not None and not math.isfinite(budget):
        raise UsageError(f"--budget must be a finite number of dollars, not {budget}")
    console = console_for(out, load_spec(spec).backend.name, stderr_mode(False, False))
    with contextlib.ExitStack() as stack:
        if isinstance(console, contextlib.AbstractContextManager):
            stack.enter_context(console)
        result = run_retune(
            spec,
            Overrides(trials, parallel, budget),
            listeners=[console],
            report=report,
            announce=out.info,
        )
    out.info(result.message)
    if result.sweep is not None:
        sweep = result.sweep
        direction = sweep.plan.spec.objective.direction
        out.info(ui_hint(sweep.stores.mlflow, sweep.experiment_id, spec, direction))
    if result.report is not None:
        out.info(f"report: {result.report}")
    if not result.completed:
        raise OrchestratorError(
            f"generation {result.generation} completed no trial; the previous model stays "
            f"current (`ftsweep report {spec} --format json` has each trial's error)"
        )


def history(
    spec: SpecArg,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Show the sweep's generations: what changed, the best value and model of each.

    Example: ftsweep history sweeps/nightly.yaml
    """
    quiet_libraries()
    import datetime as dt
    import json

    from orchestrator.cli.render import table
    from orchestrator.config import load_spec
    from orchestrator.core.errors import SweepNotStartedError
    from orchestrator.stores.read import generations, optuna_url
    from orchestrator.workflows.importer.warm import imported_summary

    loaded = load_spec(spec)
    found = generations(loaded)
    past = imported_summary(loaded)
    if not found and past is None:
        raise SweepNotStartedError(loaded.name, optuna_url(loaded), str(spec))
    current = next((g.number for g in reversed(found) if g.succeeded), None)
    rows = []
    for g in found:
        c = g.concluded or {}
        started = (
            dt.datetime.fromtimestamp(g.started, dt.UTC).strftime("%Y-%m-%d %H:%M")
            if g.started
            else ""
        )
        rows.append(
            {
                "generation": g.number,
                "study": g.study_name,
                "started": started,
                "trials": g.n_trials,
                "completed": c.get("completed", 0),
                "best_value": c.get("best_value"),
                "best_trial": c.get("best_trial"),
                "model": c.get("model"),
                "current": g.number == current,
                "previous": g.previous,
                "changed": list(g.changes),
                "state": "concluded" if g.succeeded else "unfinished",
            }
        )
    if past is not None:  # `ftsweep import`: the provider's jobs, before any generation
        first = past.first
        rows.insert(
            0,
            {
                "generation": 0,
                "study": past.study_name,
                "started": (
                    dt.datetime.fromtimestamp(first, dt.UTC).strftime("%Y-%m-%d %H:%M")
                    if first
                    else ""
                ),
                "trials": past.jobs,
                "completed": past.completed,
                "best_value": past.best_value,
                "best_trial": None,
                "model": past.model,
                "current": False,
                "previous": None,
                "changed": [f"imported from {past.provider}"],
                "state": "imported",
            },
        )
    if as_json:
        out.data(json.dumps(rows, indent=2, default=str))
        return
    metric = loaded.objective.metric
    out.data(
        table(
            ["gen", "study", "started (UTC)", "trials", metric, "model", "what changed"],
            [
                [
                    f"{r['generation']}{' *' if r['current'] else ''}",
                    r["study"],
                    r["started"],
                    f"{r['completed']}/{r['trials']}",
                    f"{r['best_value']:.4f}" if isinstance(r["best_value"], float) else "-",
                    str(r["model"] or "-"),
                    "; ".join(r["changed"]) or ("first sweep" if r["generation"] == 1 else "-"),
                ]
                for r in rows
            ],
        )
    )
    if current is not None:
        out.info(f"* current: generation {current} (registered model alias 'champion')")


def register(app: typer.Typer) -> None:
    app.command()(retune)
    app.command()(history)

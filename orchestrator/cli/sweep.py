"""``ftsweep run``: run or resume a sweep."""

from __future__ import annotations

import math
from typing import Annotated

import typer

from orchestrator.cli.common import SpecArg, quiet_libraries, ui_hint
from orchestrator.cli.output import out

__all__ = ["register"]


def run(
    spec: SpecArg,
    trials: Annotated[
        int | None, typer.Option(min=1, max=100_000, help="Total trials in the study.")
    ] = None,
    parallel: Annotated[
        int | None, typer.Option(min=1, max=1000, help="Jobs in flight at once.")
    ] = None,
    budget: Annotated[
        float | None, typer.Option(min=0, help="USD cap on spent + committed cost.")
    ] = None,
) -> None:
    """Run the sweep (or resume it: finished trials count, running jobs are re-attached).

    Prints a table of trials with state, objective, diagnosis and the best trial, and the
    link to the runs in the MLflow UI.

    Example: ftsweep run sweeps/quickstart.yaml --trials 8
    """
    quiet_libraries()
    from orchestrator.cli.console import ConsoleListener
    from orchestrator.config import load_spec
    from orchestrator.engine import Overrides, run_sweep
    from orchestrator.errors import OrchestratorError, UsageError
    from orchestrator.report import render

    if budget is not None and not math.isfinite(budget):
        raise UsageError(f"--budget must be a finite number of dollars, not {budget}")
    console = ConsoleListener(out, load_spec(spec).backend.name)
    result = run_sweep(spec, Overrides(trials, parallel, budget), listeners=[console])
    if not result.changed:
        out.info(f"sweep {result.plan.spec.name} is already complete ({len(result.frame)} trials)")
    if result.stop_reason:
        out.info(f"stopped: {result.stop_reason}")
    out.data(render(result.frame, "table"))
    best = result.frame[result.frame["best"]] if "best" in result.frame else None
    if best is not None and len(best):
        row = best.iloc[0]
        out.data(
            f"\nbest: trial {row['trial']}, {result.plan.spec.objective.metric}={row['value']:.4f}"
        )
    if result.advice is not None:
        for note in result.advice.notes:
            out.data(f"next: {note}")
    direction = result.plan.spec.objective.direction
    out.info(ui_hint(result.stores.mlflow, result.experiment_id, spec, direction))
    if not result.completed:
        raise OrchestratorError(
            "no trial completed: see the errors above (`ftsweep report "
            f"{spec} --format json` has each trial's)"
        )


def register(app: typer.Typer) -> None:
    app.command()(run)

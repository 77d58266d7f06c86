"""``ftsweep run``: run or resume a sweep."""

from __future__ import annotations

import contextlib
import json
import math
from typing import Annotated, Any

import typer

from orchestrator.cli.common import SpecArg, quiet_libraries
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
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="Print warnings and the result only.")
    ] = False,
    json_events: Annotated[
        bool,
        typer.Option(
            "--json-events",
            help="One JSON object an event on stdout (for scripts), ending with the result.",
        ),
    ] = False,
) -> None:
    """Run the sweep (or resume it: finished trials count, running jobs are re-attached).

    Prints a table of trials with state, objective, diagnosis and the best trial, and the
    link to the runs in the MLflow UI. In a terminal a live panel shows the trials in flight
    (job state, step, losses, cost), the budget and an ETA; piped or in cron, one plain line
    an event.

    Example: ftsweep run sweeps/quickstart.yaml --trials 8
    """
    quiet_libraries()
    from orchestrator.cli.live import console_for, stderr_mode
    from orchestrator.config import load_spec
    from orchestrator.core.errors import OrchestratorError, UsageError
    from orchestrator.workflows.sweep import Overrides, run_sweep

    if budget is not None and not math.isfinite(budget):
        raise UsageError(f"--budget must be a finite number of dollars, not {budget}")
    mode = stderr_mode(quiet, json_events)
    if mode == "quiet":
        from orchestrator.core.progress import show_on_stderr

        show_on_stderr(False)
    console = console_for(out, load_spec(spec).backend.name, mode)
    with contextlib.ExitStack() as stack:
        if isinstance(console, contextlib.AbstractContextManager):
            stack.enter_context(console)
        result = run_sweep(spec, Overrides(trials, parallel, budget), listeners=[console])
    if mode == "json":
        out.data(json.dumps(result_record(result), default=str))
    else:
        show_result(result, spec, quiet=mode == "quiet")
    if not result.completed:
        raise OrchestratorError(
            "no trial completed: see the errors above (`ftsweep report "
            f"{spec} --format json` has each trial's)"
        )


def result_record(result: Any) -> dict[str, Any]:
    """The sweep's outcome as the last line of ``--json-events``."""
    frame = result.frame
    rows = json.loads(frame.to_json(orient="records")) if len(frame) else []
    advice = result.advice.notes if result.advice is not None else []
    return {
        "event": "result",
        "sweep": result.plan.spec.name,
        "study": result.plan.study_name,
        "completed": result.completed,
        "changed": result.changed,
        "stop_reason": result.stop_reason,
        "trials": rows,
        "advice": list(advice),
        "mlflow_experiment_id": result.experiment_id,
    }


def show_result(result: Any, spec: Any, *, quiet: bool = False) -> None:
    """The table of trials, the best one and the advice on stdout; the rest on stderr."""
    from orchestrator.cli.common import ui_hint
    from orchestrator.results.table import render

    table = result.table  # plain rows: a finished sweep run again imports no pandas
    if not quiet and not result.changed:
        out.info(f"sweep {result.plan.spec.name} is already complete ({len(table)} trials)")
    if not quiet and result.stop_reason:
        out.info(f"stopped: {result.stop_reason}")
    out.data(render(table, "table"))
    best = table.best
    if best is not None:
        metric = result.plan.spec.objective.metric
        out.data(f"\nbest: trial {best['trial']}, {metric}={best['value']:.4f}")
    if result.advice is not None:
        for note in result.advice.notes:
            out.data(f"next: {note}")
    if not quiet:
        direction = result.plan.spec.objective.direction
        out.info(ui_hint(result.stores.mlflow, result.experiment_id, spec, direction))


def register(app: typer.Typer) -> None:
    app.command()(run)

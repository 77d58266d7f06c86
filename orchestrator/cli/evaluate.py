"""``ftsweep evaluate``: score the top trials' models on the sweep's held-out file."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from orchestrator.cli.common import SpecArg, quiet_libraries
from orchestrator.cli.output import out

__all__ = ["register"]


def evaluate(
    spec: SpecArg,
    top: Annotated[
        int, typer.Option("--top", min=1, help="How many of the best trials with a model.")
    ] = 3,
    as_json: Annotated[bool, typer.Option("--json", help="Print the scores as JSON.")] = False,
) -> None:
    """Score the best trials' models on the sweep file's evaluate: file and log the scores.

    Each of the --top best finished trials with a model answers every held-out prompt (the
    local model, or chat completions of the fine-tuned model; on Azure through a Developer
    deployment made and deleted for it); the scores (eval_<scorer>) go to the trial's MLflow
    run and the study. Scores already recorded are shown, not computed again.

    Example: ftsweep evaluate sweeps/tiny.yaml --top 3
    """
    quiet_libraries()
    from orchestrator.workflows.evaluate import evaluate_sweep

    result = evaluate_sweep(spec, top, say=out.info)
    for note in result.notes:
        out.warn(note)
    if as_json:
        rows = [
            {
                "trial": r.trial,
                "value": r.value,
                "model": r.model,
                "mlflow_run_id": r.run_id,
                "recorded_before": r.cached,
                **r.scores,
            }
            for r in result.rows
        ]
        out.data(json.dumps(rows, indent=2))
        return
    head = ["trial", result.objective, *result.metrics, "model"]
    lines = [head]
    for r in result.rows:
        value = "" if r.value is None else f"{r.value:.4f}"
        scores = [f"{r.scores[m]:.3f}" for m in result.metrics]
        lines.append([str(r.trial), value, *scores, r.model + (" (recorded)" if r.cached else "")])
    widths = [max(len(row[i]) for row in lines) for i in range(len(head))]
    out.data(f"sweep {result.sweep}: {result.n_examples} held-out examples")
    for row in lines:
        out.data("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


def register(app: typer.Typer) -> None:
    app.command()(evaluate)

"""``ftsweep diagnose``: label any fine-tuning run from its curves."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from orchestrator.cli.common import quiet_libraries
from orchestrator.cli.output import out

__all__ = ["register"]


def diagnose(
    source: Annotated[
        str,
        typer.Argument(
            metavar="SOURCE",
            help="A result CSV file (OpenAI, Azure or legacy layout), a job id (with --spec) "
            "or an MLflow run id.",
        ),
    ],
    spec: Annotated[
        Path | None,
        typer.Option("--spec", help="Sweep file whose backend runs the job SOURCE names."),
    ] = None,
    tracking_uri: Annotated[
        str | None,
        typer.Option(
            "--tracking-uri",
            help="MLflow store of the run SOURCE names (default: MLFLOW_TRACKING_URI, "
            "else sqlite:///mlruns/mlflow.db).",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON object.")] = False,
) -> None:
    """Diagnose a fine-tuning run, also one ftsweep did not launch: overfit, underfit,
    diverged, good or unknown, with the numbers behind it and what to try next.

    SOURCE is a result CSV file when one exists at that path; with --spec, a job id on
    that sweep's backend; else the id of an MLflow run (a trial's child run). Bad input:
    one error line and exit 2. The --json object is described in docs/diagnosis.md.

    Example: ftsweep diagnose results.csv --json

    Example: ftsweep diagnose ftjob-abc123 --spec sweeps/openai.yaml
    """
    quiet_libraries()
    from orchestrator.workflows.diagnose import diagnose_run, evidence_line, load, thresholds_of

    run = load(source, spec=spec, tracking_uri=tracking_uri)
    result = diagnose_run(run, thresholds_of(spec))
    if as_json:
        out.data(json.dumps(result.to_json(), indent=2))
        return
    d = result.diagnosis
    data = result.to_json()
    curve = data["curve"]
    epochs = f", {curve['epochs']} epoch(s)" if curve["epochs"] else ""
    lines = [
        f"label: {d.label}",
        f"advice: {d.recommendation}",
        f"evidence: {evidence_line(d.evidence) or '-'}",
        f"curve: {curve['steps']} steps{epochs} ({run.kind} {run.source}"
        + (f", {run.status}" if run.status else "")
        + ")",
    ]
    finals = ", ".join(
        f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
        for k, v in curve["final"].items()
        if k != "epoch"
    )
    if finals:
        lines.append(f"final: {finals}")
    out.data("\n".join(lines))


def register(app: typer.Typer) -> None:
    app.command()(diagnose)

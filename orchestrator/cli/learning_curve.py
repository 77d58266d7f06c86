"""``ftsweep learning-curve``: would more data help the sweep's best configuration?"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from orchestrator.cli.common import SpecArg, quiet_libraries
from orchestrator.cli.output import out

__all__ = ["register"]


def learning_curve(
    spec: SpecArg,
    fractions: Annotated[
        str, typer.Option(help="Fractions of the training data, comma-separated.")
    ] = "0.125,0.25,0.5,1",
    plot: Annotated[Path | None, typer.Option("--out", help="Write the plot (PNG) here.")] = None,
    budget: Annotated[
        float | None, typer.Option("--budget", help="USD cap (default: the sweep's budget_usd).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Train the sweep's best configuration on growing fractions of its training data, plot
    the validation loss against examples, fit a power law and say whether more data is worth
    it (tracked in the sweep's MLflow experiment).

    The jobs run one after another, as trials of the curve's own study. Interrupted or
    killed, run it again: it re-attaches to the jobs still running and trains nothing twice.

    Example: ftsweep learning-curve sweeps/tiny.yaml --out curve.png
    """
    quiet_libraries()
    from orchestrator.core.errors import UsageError
    from orchestrator.workflows.learning_curve import learning_curve as run_curve

    try:
        values = [float(f) for f in fractions.split(",") if f.strip()]
    except ValueError:
        raise UsageError(f"--fractions: not a list of numbers: {fractions!r}") from None
    curve = run_curve(spec, fractions=values, out=plot, budget_usd=budget, progress=out.info)
    if as_json:
        out.data(json.dumps(curve.as_dict(), indent=2))
        return
    for p in curve.points:
        loss = f"{p.loss:.4f}" if p.loss is not None else p.status
        acc = f", accuracy {p.accuracy:.3f}" if p.accuracy is not None else ""
        out.data(
            f"{p.fraction * 100:6.2f} %  {p.n_examples:6d} examples  {curve.metric} {loss}{acc}"
        )
    out.info(f"plot: {curve.plot}")
    out.data(curve.answer)


def register(app: typer.Typer) -> None:
    app.command(name="learning-curve")(learning_curve)

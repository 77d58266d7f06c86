"""``ftsweep space`` and ``ftsweep estimate``."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from orchestrator.cli.output import out
from orchestrator.cli.render import table

if TYPE_CHECKING:
    from orchestrator.plan import SweepPlan

__all__ = ["register"]

SpecArg = Annotated[Path, typer.Argument(metavar="SPEC", help="Sweep file (YAML).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON.")]


def space(spec: SpecArg, as_json: JsonOpt = False) -> None:
    """Print the resolved search space for the sweep's data and backend.

    The batch-size range is computed from the number of training examples; clamps are shown.

    Example: ftsweep space sweeps/quickstart.yaml
    """
    from orchestrator.plan import plan_sweep

    plan = plan_sweep(spec)
    if as_json:
        out.data(json.dumps(plan.space.to_dict(), indent=2))
        return
    s = plan.spec
    out.data(
        f"sweep {s.name}: backend {s.backend.name}, model {s.backend.model}, "
        f"{plan.train.n_examples:,} training examples\n"
        + table(
            ["parameter", "search", "notes"],
            [[d.name, d.describe(), "; ".join(d.notes)] for d in plan.space.dimensions],
        )
        + _advice(plan)
    )


def _advice(plan: SweepPlan) -> str:
    """The data's advice that applies to this sweep, as lines to print (or nothing)."""
    from orchestrator.data.advice import for_sweep
    from orchestrator.space import refusal

    names = {d.name for d in plan.space.dimensions}
    advice = for_sweep(
        plan.train.advice,
        takes_prompt_loss_weight=refusal(plan.backend, "prompt_loss_weight", 0.05) is None,
        prompt_loss_weight_low=plan.space.bounds("prompt_loss_weight")[0]
        if "prompt_loss_weight" in names
        else None,
        objective=plan.spec.objective.metric,
        epochs_high=int(plan.space.bounds("n_epochs")[1]) if "n_epochs" in names else None,
    )
    if not advice:
        return ""
    return "\n\nadvice from the data:\n" + "\n".join(f"  - {a.message}" for a in advice)


def estimate(spec: SpecArg, as_json: JsonOpt = False) -> None:
    """Estimate tokens, steps and cost per trial and for the whole sweep.

    Example: ftsweep estimate sweeps/openai.yaml
    """
    from orchestrator.plan import estimate_sweep, plan_sweep

    est = estimate_sweep(plan_sweep(spec, count_tokens=True))
    if as_json:
        out.data(json.dumps(asdict(est), indent=2))
        return

    def usd(r: tuple[float, float] | None) -> str:
        return "-" if r is None else f"${r[0]:,.2f} – ${r[1]:,.2f}"

    tokens = "-" if est.tokens_per_epoch is None else f"{est.tokens_per_epoch:,}"
    price = "-" if est.price_per_million is None else f"${est.price_per_million:.2f} per 1M tokens"
    rows = [
        ["model", est.model],
        ["price", price],
        ["billed tokens per epoch", tokens],
        ["epochs per trial", f"{est.epochs[0]} – {est.epochs[1]}"],
        ["optimizer steps per trial", f"{est.steps_per_trial[0]:,} – {est.steps_per_trial[1]:,}"],
        ["cost per trial", usd(est.cost_per_trial)],
        [f"cost of {est.trials} trials", usd(est.cost_sweep)],
    ]
    if est.budget_usd is not None:
        fits = "-" if est.trials_within_budget is None else str(est.trials_within_budget)
        rows.append(["budget", f"${est.budget_usd:,.2f} (covers {fits} trials at the most)"])
    out.data(table(["", ""], rows).split("\n", 1)[1])


def register(app: typer.Typer) -> None:
    app.command()(space)
    app.command()(estimate)

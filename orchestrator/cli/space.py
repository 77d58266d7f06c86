"""``ftsweep space`` and ``ftsweep estimate``."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from orchestrator.cli.output import out
from orchestrator.cli.render import table

if TYPE_CHECKING:
    from orchestrator.plan.sweep import Estimate, SweepPlan
    from orchestrator.results.speed import MeasuredThroughput

__all__ = ["register"]

SpecArg = Annotated[Path, typer.Argument(metavar="SPEC", help="Sweep file (YAML).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON.")]
PriceOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--price",
        metavar="MODEL[/TIER]=USD",
        help="USD per 1M trained tokens over the price table and the sweep file (repeatable); "
        "also admits a model the backend's table does not know.",
    ),
]


def _prices(given: list[str] | None) -> dict[str, float]:
    import math

    from orchestrator.core.errors import UsageError

    prices: dict[str, float] = {}
    for item in given or []:
        model, sep, usd = item.rpartition("=")
        try:
            value = float(usd)
        except ValueError:
            value = -1.0
        if not sep or not model or not math.isfinite(value) or value < 0:
            raise UsageError(f"--price: expected MODEL[/TIER]=USD (a number >= 0), got {item!r}")
        prices[model] = value
    return prices


def space(spec: SpecArg, as_json: JsonOpt = False) -> None:
    """Print the resolved search space for the sweep's data and backend.

    The batch-size range is computed from the number of training examples; clamps are shown.

    Example: ftsweep space sweeps/quickstart.yaml
    """
    from orchestrator.plan.sweep import check_model, plan_sweep

    plan = plan_sweep(spec)
    if plan.spec.backend.name != "local":  # its counter loads a tokenizer: not for a space
        check_model(plan, str(spec))  # an unknown model: exit 2, as estimate and run say
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
        + _search(plan)
        + _advice(plan)
    )


def _search(plan: SweepPlan) -> str:
    """The objectives, sampler and constraints of a sweep of several objectives."""
    from orchestrator.plan.objectives import describe_search

    line = describe_search(plan.spec)
    return f"\n\n{line}" if line else ""


def _advice(plan: SweepPlan) -> str:
    """The data's advice that applies to this sweep, as lines to print (or nothing)."""
    from orchestrator.data.advice import for_sweep
    from orchestrator.plan.space import refusal

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


def _duration(seconds: float) -> str:
    seconds = max(1, round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s" if m else f"{s}s"


def _measured_speed(spec: Path) -> MeasuredThroughput | None:
    """The tokens per second that the finished trials of the sweep's study measured (its
    latest generation); None before any did, or when the study cannot be read."""
    from orchestrator.core.errors import OrchestratorError
    from orchestrator.results.read import open_results
    from orchestrator.results.speed import measured_throughput

    try:
        results = open_results(spec)
    except OrchestratorError:
        return None
    return measured_throughput(results.study.get_trials(deepcopy=False))


def _time_rows(plan: SweepPlan, est: Any, speed: MeasuredThroughput | None) -> list[list[str]]:
    """Wall time per trial and for the sweep on the local trainer: from the tokens per second
    the study's finished trials measured (``speed``), else from the seconds per example that
    this machine's earlier jobs of the same model took."""
    if plan.spec.backend.name != "local":
        return []
    from orchestrator.backends.local.backend import measured_seconds_per_example
    from orchestrator.stores.study import resolve_stores

    jobs = resolve_stores(plan.spec).backend_dir("local") / "jobs"
    measured = measured_seconds_per_example(jobs, plan.spec.backend.model)
    tokens = plan.train.total_tokens or plan.train.billed_tokens
    if speed is not None and tokens:
        overhead = measured[1] if measured is not None else 0.0
        low, high = (overhead + e * tokens / speed.tokens_per_second for e in est.epochs)
        besides = f" + {overhead:.0f} s start-up and evaluation" if measured is not None else ""
        how = f"{speed.describe()}, {tokens:,} tokens per epoch{besides}"
    elif measured is None:
        why = f"unknown until a {plan.spec.backend.model} job has run on this machine"
        return [["time per trial", why]]
    else:
        per_example, overhead, jobs_seen = measured
        n = plan.train.n_examples
        low, high = (overhead + e * n * per_example for e in est.epochs)
        how = (
            f"{per_example * 1000:.2f} ms per example and epoch + {overhead:.0f} s start-up "
            f"and evaluation, measured over {jobs_seen} earlier jobs"
        )
    cap = plan.make_backend(jobs.parent).capabilities.max_in_flight  # e.g. GPUs per trial
    parallel = max(1, min(plan.spec.parallel, cap or plan.spec.parallel))
    waves = -(-est.trials // parallel)  # ceil: trials run `parallel` at a time
    mean = (low + high) / 2
    return [
        ["time per trial", f"{_duration(low)} – {_duration(high)} ({how})"],
        [
            f"time of {est.trials} trials",
            f"about {_duration(waves * mean)} ({parallel} at a time, before pruning)",
        ],
    ]


def estimate(spec: SpecArg, as_json: JsonOpt = False, given: PriceOpt = None) -> None:
    """Estimate tokens, steps and cost per trial and for the whole sweep (and, for a backend
    with training tiers such as azure, the sweep's cost in each tier).

    Example: ftsweep estimate sweeps/azure.yaml --price gpt-4.1-mini/developer=1.6
    """
    from orchestrator.backends.remote.tiers import estimate_tiers
    from orchestrator.config import load_spec
    from orchestrator.plan.models import notices
    from orchestrator.plan.space import pinned_epochs
    from orchestrator.plan.sweep import estimate_sweep, plan_spec

    loaded, extra = load_spec(spec), _prices(given)
    if extra:
        options = dict(loaded.backend.options)
        if "prices" in options:  # the sweep file's backend.options.prices wins over prices:
            options["prices"] = {**options["prices"], **extra}
        backend = loaded.backend.model_copy(update={"options": options})
        loaded = loaded.model_copy(
            update={"prices": {**loaded.prices, **extra}, "backend": backend}
        )
    plan = plan_spec(loaded, str(spec), count_tokens=True)
    for line in notices(plan.backend, plan.spec.backend.model, plan.options):
        out.warn(line)
    est = estimate_sweep(plan)
    tiers = estimate_tiers(plan, estimate_sweep)
    speed = _measured_speed(spec)
    if as_json:
        data = asdict(est)
        if speed is not None:
            data["measured_throughput"] = asdict(speed)
        if tiers:
            data["tiers"] = [
                {"tier": t.tier, "chosen": t.chosen, **asdict(t.estimate)} for t in tiers
            ]
        out.data(json.dumps(data, indent=2))
        return

    def usd(r: tuple[float, float] | None) -> str:
        return "-" if r is None else f"${r[0]:,.2f} – ${r[1]:,.2f}"

    tokens = "-" if est.tokens_per_epoch is None else f"{est.tokens_per_epoch:,}"
    price = _price(est)
    rows = [
        ["model", est.model],
        ["price", price],
        ["billed tokens per epoch", tokens],
        ["epochs per trial", _epochs(est.epochs, pinned_epochs(plan.space, plan.spec.sampler))],
        ["optimizer steps per trial", f"{est.steps_per_trial[0]:,} – {est.steps_per_trial[1]:,}"],
        ["cost per trial", usd(est.cost_per_trial)],
        [f"cost of {est.trials} trials", usd(est.cost_sweep)],
        *_time_rows(plan, est, speed),
        *([label, value] for label, value in est.resources),
    ]
    if est.budget_usd is not None:
        fits = "-" if est.trials_within_budget is None else str(est.trials_within_budget)
        rows.append(["budget", f"${est.budget_usd:,.2f} (covers {fits} trials at the most)"])
    out.data(table(["", ""], rows).split("\n", 1)[1])
    if tiers:
        per_tier = [
            [
                t.tier + (" (chosen)" if t.chosen else ""),
                "-"
                if t.estimate.price_per_million is None
                else f"${t.estimate.price_per_million:.2f}",
                usd(t.estimate.cost_per_trial),
                usd(t.estimate.cost_sweep),
            ]
            for t in tiers
        ]
        header = ["tier", "per 1M tokens", "cost per trial", f"cost of {est.trials} trials"]
        out.data("\ncost per training tier\n" + table(header, per_tier))


def register(app: typer.Typer) -> None:
    app.command()(space)
    app.command()(estimate)


def _price(est: Estimate) -> str:
    """The backend's price as it charges: per 1M tokens, or per job when its estimate does
    not grow with the tokens (the cost of one trial: one job)."""
    if est.price_basis == "tokens" and est.price_per_million is not None:
        return f"${est.price_per_million:.2f} per 1M tokens"
    if est.price_basis == "job" and est.cost_per_trial is not None:
        low, high = est.cost_per_trial
        each = f"${low:,.2f}" if low == high else f"${low:,.2f} – ${high:,.2f}"
        return f"{each} per job"
    return "-"


def _epochs(epochs: tuple[int, int], pinned: int | None) -> str:
    low, high = epochs
    if pinned is not None:
        return f"{pinned} (each job trains the most; its earlier epochs are told as trials)"
    return str(low) if low == high else f"{low} – {high}"

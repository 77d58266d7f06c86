"""The report's plots, as inline SVG (no CDN): optimization history, parameter importances,
parallel coordinates, slices, and each trial's curves with its best epoch and its divergence
or prune point marked; and the loss curve logged with each trial's MLflow run. Each returns
None (or says why) when it cannot be drawn; :mod:`orchestrator.results.html` lays them out.

They are drawn by :mod:`orchestrator.results.svg`, not matplotlib: every sweep ends with them,
and matplotlib's import and artists cost that end more CPU than the whole trial loop's logging.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from orchestrator.analysis.importance import param_importances
from orchestrator.core.attrs import TrialAttrs
from orchestrator.core.params import NAMES
from orchestrator.results.front import epoch_values, primary_value
from orchestrator.results.svg import CYCLE, Panel, colormap, document, figure, polyline
from orchestrator.results.svg import text as svg_text

if TYPE_CHECKING:
    import optuna
    import pandas as pd

__all__ = [
    "CURVE_METRICS",
    "DIAGNOSIS_COLOURS",
    "MAX_CURVE_PANELS",
    "STATE_COLOURS",
    "ReportInputs",
    "curve_plots",
    "finished_trials",
    "front_plot",
    "history_plot",
    "importance_plot",
    "loss_curve",
    "parallel_plot",
    "param_order",
    "slice_plots",
    "steps_per_epoch",
    "value",
]

Curve = list[tuple[int, float]]

#: the curves drawn per trial, in this order (each only where the trial logged it)
CURVE_METRICS = (
    "train_loss",
    "valid_loss",
    "full_valid_loss",
    "train_accuracy",
    "train_mean_token_accuracy",
    "valid_mean_token_accuracy",
    "full_valid_mean_token_accuracy",
)
#: at most this many trials get their own curve panel (the best first, then by number)
MAX_CURVE_PANELS = 24

DIAGNOSIS_COLOURS = {
    "good": "#1a7f37",
    "overfit": "#bc4c00",
    "underfit": "#9a6700",
    "diverged": "#cf222e",
    "unknown": "#6e7781",
}
STATE_COLOURS = {"COMPLETE": "#1a7f37", "PRUNED": "#9a6700", "FAIL": "#cf222e"}


@dataclass
class ReportInputs:
    """What the page is made of (read by :func:`orchestrator.results.read` and MLflow)."""

    sweep: str
    study: optuna.Study
    frame: pd.DataFrame
    metric: str
    direction: str
    backend: str
    model: str
    generation: int = 1
    budget_usd: float | None = None
    #: per trial number: metric name -> [(step, value)]
    curves: Mapping[int, Mapping[str, Curve]] = field(default_factory=dict)
    #: why the curves are missing, when they are
    curves_note: str | None = None
    advice: Sequence[str] = ()
    space: Mapping[str, Any] = field(default_factory=dict)
    #: steps per epoch, per trial number (to mark epochs on the curves)
    steps_per_epoch: Mapping[int, float] = field(default_factory=dict)
    previous_best: float | None = None
    #: every objective's metric and direction, the primary first (one: ``metric``)
    objectives: tuple[str, ...] = ()
    directions: tuple[str, ...] = ()


# -- plots -----------------------------------------------------------------------------------


def finished_trials(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return [
        t
        for t in study.get_trials(deepcopy=False)
        if t.state.name == "COMPLETE" and math.isfinite(value(t))
    ]


def value(t: optuna.trial.FrozenTrial) -> float:
    """The trial's primary objective (NaN when it has none), in a study of one objective
    or several."""
    found = primary_value(t)
    return math.nan if found is None else found


def _log_axis(values: Sequence[float]) -> bool:
    pos = [v for v in values if v > 0]
    return len(pos) == len(values) and len(pos) > 1 and max(pos) / min(pos) >= 20


def history_plot(inp: ReportInputs) -> str | None:
    done = finished_trials(inp.study)
    if not done:
        return None
    panel = Panel(640, 320, title="Optimization history", xlabel="trial", ylabel=inp.metric)
    xs = [t.number for t in done]
    ys = [value(t) for t in done]
    best: list[float] = []
    for y in ys:
        if not best:
            best.append(y)
        else:
            best.append(min(best[-1], y) if inp.direction == "minimize" else max(best[-1], y))
    # a step after each trial (matplotlib's ``where="post"``)
    step_x = [x for i, x in enumerate(xs) for x in ([x] if i == 0 else [x, x])]
    step_y = [b for i, b in enumerate(best) for b in ([b] if i == 0 else [best[i - 1], b])]
    panel.line(step_x, step_y, "#cf222e", label="best so far")
    pruned = [t for t in inp.study.get_trials(deepcopy=False) if t.state.name == "PRUNED"]
    pv = [(t.number, steps[max(steps)]) for t in pruned if (steps := epoch_values(t))]
    if pv:
        px, py = zip(*pv, strict=True)
        panel.scatter(px, py, "#9a6700", kind="x", size=3, label="pruned (last report)")
    panel.scatter(xs, ys, "#0969da", size=3.5, label="trial")
    return figure([panel])


def importance_plot(inp: ReportInputs) -> tuple[str | None, str | None]:
    """(the SVG, or None and why)."""
    done = finished_trials(inp.study)
    if len(done) < 3:
        return None, "parameter importances need at least 3 completed trials"
    scores = param_importances(
        [_params(t) for t in done],
        [value(t) for t in done],
    )
    if not scores:
        return None, "no searched parameter varied between completed trials"
    names = list(scores)[::-1]
    panel = Panel(
        640,
        60 + 30 * len(names),
        title="Parameter importances",
        xlabel="importance (share of the objective's variance explained, main effects)",
        xlim=(0.0, 1.0),
    )
    panel.barh(names, [scores[n] for n in names])
    return figure([panel]), None


def _params(t: optuna.trial.FrozenTrial) -> dict[str, Any]:
    return {k: v for k, v in t.params.items() if isinstance(v, int | float)}


def parallel_plot(inp: ReportInputs) -> str | None:
    done = finished_trials(inp.study)
    names = sorted({k for t in done for k in _params(t)}, key=param_order)
    if len(done) < 2 or not names:
        return None
    axes_names = [*names, inp.metric]
    cols: dict[str, list[float]] = {n: [] for n in axes_names}
    for t in done:
        p = _params(t)
        for n in names:
            cols[n].append(float(p.get(n, math.nan)))
        cols[inp.metric].append(value(t))
    logs = {n: _log_axis(cols[n]) for n in names}

    def scaled(n: str, v: float) -> float:
        vals = [x for x in cols[n] if math.isfinite(x)]
        lo, hi = min(vals), max(vals)
        if logs.get(n):
            lo, hi, v = math.log10(lo), math.log10(hi), math.log10(v)
        return 0.5 if hi == lo else (v - lo) / (hi - lo)

    values = cols[inp.metric]
    vlo, vhi = min(values), max(values)

    def shade(v: float) -> float:  # 0 the darkest: the best
        t = 0.5 if vhi == vlo else (v - vlo) / (vhi - vlo)
        return t if inp.direction == "minimize" else 1 - t

    width, height = 720.0, 340.0
    left, right, top, bottom = 50.0, width - 110.0, 48.0, height - 56.0
    gap = (right - left) / max(1, len(axes_names) - 1)

    def at(i: int, frac: float) -> tuple[float, float]:
        return left + i * gap, bottom - frac * (bottom - top)

    body = [svg_text(width / 2, 16, "Parallel coordinates (colour: objective, best darkest)")]
    order = sorted(range(len(done)), key=lambda i: values[i], reverse=inp.direction == "minimize")
    for i in order:  # the best drawn last, on top
        pts = [at(k, scaled(n, cols[n][i])) for k, n in enumerate(axes_names)]
        pts = [p for p in pts if math.isfinite(p[1])]
        body.append(polyline(pts, colormap("viridis", shade(values[i])), 1.4, opacity=0.85))
    for k, n in enumerate(axes_names):
        x, _ = at(k, 0)
        body.append(polyline([(x, top), (x, bottom)], "#57606a", 0.8))
        vals = [v for v in cols[n] if math.isfinite(v)]
        body.append(svg_text(x, bottom + 13, f"{min(vals):.3g}", size=7))
        body.append(svg_text(x, top - 5, f"{max(vals):.3g}", size=7))
        body.append(svg_text(x, bottom + 30, _label(n) + (" (log)" if logs.get(n) else "")))
    # the colour bar: the objective from the best (darkest) to the worst
    bar_x, steps = width - 70.0, 24
    for j in range(steps):
        v = vlo + (vhi - vlo) * (1 - j / steps) if vhi > vlo else vlo
        y = top + j * (bottom - top) / steps
        body.append(
            f"<rect x='{bar_x}' y='{y:.1f}' width='12' height='{(bottom - top) / steps + 0.5:.1f}' "
            f"fill='{colormap('viridis', shade(v))}'/>"
        )
    body.append(svg_text(bar_x + 16, top + 4, f"{vhi:.4g}", size=7, anchor="start"))
    body.append(svg_text(bar_x + 16, bottom, f"{vlo:.4g}", size=7, anchor="start"))
    body.append(svg_text(bar_x + 40, (top + bottom) / 2, inp.metric, size=8, rotate=90))
    return document(width, height, "".join(body))


def slice_plots(inp: ReportInputs) -> str | None:
    done = finished_trials(inp.study)
    names = sorted({k for t in done for k in _params(t)}, key=param_order)
    if not done or not names:
        return None
    ys = [value(t) for t in done]
    numbers = [t.number for t in done]
    first, last = min(numbers), max(numbers)
    shades = [
        colormap("blues", 0.5 if last == first else 0.15 + 0.85 * (n - first) / (last - first))
        for n in numbers
    ]
    panels = []
    for i, n in enumerate(names):
        xs = [float(_params(t).get(n, math.nan)) for t in done]
        panel = Panel(
            300,
            280,
            xlabel=_label(n),
            ylabel=inp.metric if i == 0 else "",
            xlog=_log_axis([x for x in xs if math.isfinite(x)]),
        )
        panel.scatter(xs, ys, "#0969da", colours=shades, edge="#0969da", size=3.5)
        panels.append(panel)
    title = "Slice: the objective against each parameter (darker: later trials)"
    return figure(panels, cols=len(panels), title=title)


def curve_plots(inp: ReportInputs) -> str | None:
    if not inp.curves:
        return None
    frame = inp.frame
    rows = {int(r["trial"]): r for r in frame.to_dict(orient="records")} if len(frame) else {}
    numbers = sorted(inp.curves, key=lambda n: (not rows.get(n, {}).get("best"), n))
    numbers = numbers[:MAX_CURVE_PANELS]
    if not numbers:
        return None
    styles = {
        "train_loss": ("#0969da", False),
        "valid_loss": ("#bc4c00", False),
        "full_valid_loss": ("#cf222e", True),
    }
    panels = []
    for n in numbers:
        curves = inp.curves[n]
        row = rows.get(n, {})
        diagnosis = str(row.get("diagnosis") or "")
        title = f"t{n:03d} {row.get('state', '')}"
        if diagnosis:
            title += f" · {diagnosis}"
        colour = DIAGNOSIS_COLOURS.get(diagnosis, "#24292f")
        panel = Panel(360, 270, title=title, title_colour=colour, xlabel="step")
        for name, (line_colour, dots) in styles.items():
            pts = curves.get(name)
            if pts:
                xs, ys = zip(*pts, strict=True)
                panel.line(xs, ys, line_colour, label=name, markers=dots)
        acc = next((curves[m] for m in CURVE_METRICS[3:] if curves.get(m)), None)
        if acc:
            xs, ys = zip(*acc, strict=True)
            panel.right(xs, ys, "#1a7f37", label="accuracy")
        spe = inp.steps_per_epoch.get(n)
        best_epoch = row.get("best_epoch")
        if spe and isinstance(best_epoch, int | float) and math.isfinite(best_epoch):
            label = f"best epoch {int(best_epoch)}"
            panel.vline(float(best_epoch) * spe, "#1a7f37", label=label)
        if row.get("state") == "PRUNED" and spe and row.get("epochs_done"):
            at = float(row["epochs_done"]) * spe
            panel.vline(at, "#9a6700", label="pruned", style=":")
        if diagnosis == "diverged":
            loss = curves.get("train_loss") or []
            finite = [p for p in loss if math.isfinite(p[1])]
            if finite:
                low = min(finite, key=lambda p: p[1])
                panel.vline(low[0], "#cf222e", label="divergence")
        panels.append(panel)
    return figure(panels, cols=3)


def loss_curve(curves: Mapping[str, Sequence[tuple[int, float]]], title: str) -> str:
    """One trial's train/valid loss by step as an SVG document (its run's
    ``loss_curve.svg`` in MLflow)."""
    panel = Panel(700, 400, title=title, xlabel="step", ylabel="loss")
    for name in ("train_loss", "valid_loss", "full_valid_loss"):
        points = curves.get(name) or []
        if points:
            xs, ys = zip(*points, strict=True)
            opacity = 0.6 if name == "train_loss" else 1.0
            markers = name == "full_valid_loss"
            panel.line(xs, ys, CYCLE[len(panel.series)], label=name, markers=markers,
                       opacity=opacity)  # fmt: skip
    return "<?xml version='1.0' encoding='utf-8'?>\n" + figure([panel])


# -- the page --------------------------------------------------------------------------------

_ORDER = {n: i for i, n in enumerate(NAMES)}
_LABELS = {
    "n_epochs": "n_epochs",
    "batch_size": "batch_size",
    "learning_rate_multiplier": "lr_mult",
    "prompt_loss_weight": "prompt_loss_w",
}


def param_order(name: str) -> tuple[int, str]:
    return (_ORDER.get(name, 99), name)


def _label(name: str) -> str:
    return _LABELS.get(name, name)


def steps_per_epoch(study: optuna.Study) -> dict[int, float]:
    """Optimizer steps per epoch of each trial (to mark epochs on its curves)."""
    out: dict[int, float] = {}
    for t in study.get_trials(deepcopy=False):
        steps = t.user_attrs.get(TrialAttrs.STEPS)
        epochs = t.user_attrs.get(TrialAttrs.EPOCHS_DONE) or t.params.get("n_epochs")
        if isinstance(steps, int | float) and isinstance(epochs, int | float) and epochs > 0:
            out[t.number] = float(steps) / float(epochs)
    return out


def front_plot(inp: ReportInputs) -> str | None:
    """The first two objectives of every completed trial, the Pareto front's trials joined
    and labelled, infeasible ones hollow; None with one objective or no completed trial."""
    from orchestrator.results.front import pareto_front, trial_points

    if len(inp.study.directions) < 2:
        return None
    points = trial_points(inp.study.get_trials(deepcopy=False))
    if not points:
        return None
    directions = [d.name.lower() for d in inp.study.directions]
    front = sorted(pareto_front(points, directions), key=lambda p: p.values[0])
    names = list(inp.objectives) or ["objective 0", "objective 1"]
    panel = Panel(
        640,
        360,
        title="Pareto front",
        xlabel=f"{names[0]} ({directions[0]})",
        ylabel=f"{names[1]} ({directions[1]})",
    )
    ok = [p for p in points if p.feasible]
    bad = [p for p in points if not p.feasible]
    if ok:
        panel.scatter(
            [p.values[0] for p in ok], [p.values[1] for p in ok], "#8c959f", label="trial"
        )
    if bad:
        panel.scatter(
            [p.values[0] for p in bad],
            [p.values[1] for p in bad],
            "#ffffff",
            edge="#cf222e",
            size=3.5,
            label="infeasible",
        )
    panel.line(
        [p.values[0] for p in front],
        [p.values[1] for p in front],
        "#0969da",
        label=f"Pareto front ({len(front)}: "
        + ", ".join(f"#{p.number}" for p in front[:8])
        + (", ..." if len(front) > 8 else "")
        + ")",
        markers=True,
    )
    return figure([panel])

"""The report's plots, as inline SVG drawn by matplotlib (no CDN): optimization history,
parameter importances, parallel coordinates, slices, and each trial's curves with its best
epoch and its divergence or prune point marked. Each returns None (or says why) when it
cannot be drawn; :mod:`orchestrator.results.html` lays them out.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from orchestrator.core.attrs import TrialAttrs
from orchestrator.core.params import NAMES
from orchestrator.results.front import epoch_values, primary_value

if TYPE_CHECKING:
    import optuna
    import pandas as pd
    from matplotlib.figure import Figure

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


def _svg(fig: Figure) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    text = buf.getvalue()
    return text[text.index("<svg") :]  # drop the XML prolog and doctype: inline SVG


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    plt.rcParams.update(
        {
            "svg.fonttype": "none",  # text stays text: small files, selectable labels
            "font.size": 9,
            "axes.spines.top": False,
            "axes.spines.right": False,
            "axes.grid": True,
            "grid.alpha": 0.3,
        }
    )
    return plt


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


def _readable_log_ticks(axis: Any) -> None:
    """A log axis with at most a few plain labels (1e-3 .. 1e3 as 0.001 .. 1000), none
    overlapping: the minor ticks carry no labels."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    axis.set_major_locator(LogLocator(base=10, numticks=6))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())


def history_plot(inp: ReportInputs) -> str | None:
    done = finished_trials(inp.study)
    if not done:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 3.2))
    xs = [t.number for t in done]
    ys = [value(t) for t in done]
    ax.scatter(xs, ys, s=22, color="#0969da", label="trial", zorder=3)
    best: list[float] = []
    for y in ys:
        if not best:
            best.append(y)
        else:
            best.append(min(best[-1], y) if inp.direction == "minimize" else max(best[-1], y))
    ax.step(xs, best, where="post", color="#cf222e", label="best so far")
    pruned = [t for t in inp.study.get_trials(deepcopy=False) if t.state.name == "PRUNED"]
    pv = [(t.number, steps[max(steps)]) for t in pruned if (steps := epoch_values(t))]
    if pv:
        ax.scatter(
            *zip(*pv, strict=True),
            s=18,
            marker="x",
            color="#9a6700",
            label="pruned (last report)",
            zorder=2,
        )
    ax.set_xlabel("trial")
    ax.set_ylabel(inp.metric)
    ax.set_title("Optimization history")
    ax.legend(loc="best", fontsize=8)
    return _svg(fig)


def _importances(study: optuna.Study) -> dict[str, float]:
    """Optuna's parameter importances; of the primary objective in a study of several
    (oriented so lower is better, as its evaluator reads a target)."""
    import warnings

    import optuna

    if len(study.directions) < 2:
        return dict(optuna.importance.get_param_importances(study))
    sign = -1.0 if study.directions[0].name == "MAXIMIZE" else 1.0
    with warnings.catch_warnings():  # "importances to achieve low target values": it is
        warnings.simplefilter("ignore", UserWarning)
        return dict(
            optuna.importance.get_param_importances(study, target=lambda t: sign * value(t))
        )


def importance_plot(inp: ReportInputs) -> tuple[str | None, str | None]:
    """(the SVG, or None and why)."""
    done = finished_trials(inp.study)
    if len(done) < 3:
        return None, "parameter importances need at least 3 completed trials"

    try:
        scores = _importances(inp.study)
    except (RuntimeError, ValueError, ZeroDivisionError) as exc:
        return None, f"parameter importances could not be computed ({exc})"
    if not scores:
        return None, "no searched parameter varied between completed trials"
    plt = _pyplot()
    names = list(scores)[::-1]
    fig, ax = plt.subplots(figsize=(6.4, 0.5 + 0.45 * len(names)))
    ax.barh(names, [scores[n] for n in names], color="#0969da")
    ax.set_xlabel("importance (share of the objective's variance)")
    ax.set_title("Parameter importances")
    ax.set_xlim(0, 1)
    return _svg(fig), None


def _params(t: optuna.trial.FrozenTrial) -> dict[str, Any]:
    return {k: v for k, v in t.params.items() if isinstance(v, int | float)}


def parallel_plot(inp: ReportInputs) -> str | None:
    done = finished_trials(inp.study)
    names = sorted({k for t in done for k in _params(t)}, key=param_order)
    if len(done) < 2 or not names:
        return None
    plt = _pyplot()
    from matplotlib import cm, colors

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
    norm = colors.Normalize(min(values), max(values))
    import matplotlib

    cmap = matplotlib.colormaps["viridis" if inp.direction == "minimize" else "viridis_r"]
    fig, ax = plt.subplots(figsize=(7.2, 3.4))
    order = sorted(range(len(done)), key=lambda i: values[i], reverse=inp.direction == "minimize")
    for i in order:  # the best drawn last, on top
        ys = [scaled(n, cols[n][i]) for n in axes_names]
        ax.plot(range(len(axes_names)), ys, color=cmap(norm(values[i])), alpha=0.85, lw=1.4)
    for x, n in enumerate(axes_names):
        ax.axvline(x, color="#57606a", lw=0.8)
        vals = [v for v in cols[n] if math.isfinite(v)]
        lo, hi = min(vals), max(vals)
        ax.text(x, -0.08, f"{lo:.3g}", ha="center", va="top", fontsize=7)
        ax.text(x, 1.05, f"{hi:.3g}", ha="center", va="bottom", fontsize=7)
    ax.set_xticks(range(len(axes_names)))
    ax.set_xticklabels([_label(n) + (" (log)" if logs.get(n) else "") for n in axes_names])
    ax.set_yticks([])
    ax.set_ylim(-0.15, 1.15)
    ax.grid(False)
    ax.set_title("Parallel coordinates (colour: objective, best darkest)")
    sm = cm.ScalarMappable(norm=norm, cmap=cmap)
    fig.colorbar(sm, ax=ax, label=inp.metric, pad=0.02)
    return _svg(fig)


def slice_plots(inp: ReportInputs) -> str | None:
    done = finished_trials(inp.study)
    names = sorted({k for t in done for k in _params(t)}, key=param_order)
    if not done or not names:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(
        1, len(names), figsize=(3.0 * len(names), 2.8), squeeze=False, sharey=True
    )
    ys = [value(t) for t in done]
    for ax, n in zip(axes[0], names, strict=True):
        xs = [float(_params(t).get(n, math.nan)) for t in done]
        ax.scatter(
            xs,
            ys,
            s=22,
            c=[t.number for t in done],
            cmap="Blues",
            edgecolors="#0969da",
            linewidths=0.6,
        )
        if _log_axis([x for x in xs if math.isfinite(x)]):
            ax.set_xscale("log")
            _readable_log_ticks(ax.xaxis)
        ax.set_xlabel(_label(n))
        ax.tick_params(axis="x", labelrotation=30)
    axes[0][0].set_ylabel(inp.metric)
    fig.suptitle("Slice: the objective against each parameter (darker: later trials)")
    return _svg(fig)


def curve_plots(inp: ReportInputs) -> str | None:
    if not inp.curves:
        return None
    frame = inp.frame
    rows = {int(r["trial"]): r for r in frame.to_dict(orient="records")} if len(frame) else {}
    numbers = sorted(inp.curves, key=lambda n: (not rows.get(n, {}).get("best"), n))
    numbers = numbers[:MAX_CURVE_PANELS]
    if not numbers:
        return None
    plt = _pyplot()
    cols = min(3, len(numbers))
    nrows = math.ceil(len(numbers) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(3.6 * cols, 2.7 * nrows), squeeze=False)
    styles = {
        "train_loss": ("#0969da", "-"),
        "valid_loss": ("#bc4c00", "-"),
        "full_valid_loss": ("#cf222e", "o-"),
    }
    for i, n in enumerate(numbers):
        ax = axes[i // cols][i % cols]
        curves = inp.curves[n]
        row = rows.get(n, {})
        drawn = False
        for name in ("train_loss", "valid_loss", "full_valid_loss"):
            pts = curves.get(name)
            if pts:
                colour, style = styles[name]
                xs, ys = zip(*pts, strict=True)
                ax.plot(xs, ys, style, color=colour, lw=1.2, ms=3, label=name)
                drawn = True
        acc = next((curves[m] for m in CURVE_METRICS[3:] if curves.get(m)), None)
        if acc:
            twin = ax.twinx()
            xs, ys = zip(*acc, strict=True)
            twin.plot(xs, ys, ":", color="#1a7f37", lw=1.0, label="accuracy")
            twin.set_ylim(0, 1)
            twin.tick_params(labelsize=7)
            twin.grid(False)
        spe = inp.steps_per_epoch.get(n)
        best_epoch = row.get("best_epoch")
        if spe and isinstance(best_epoch, int | float):
            ax.axvline(
                float(best_epoch) * spe,
                color="#1a7f37",
                ls="--",
                lw=1,
                label=f"best epoch {int(best_epoch)}",
            )
        if row.get("state") == "PRUNED" and spe and row.get("epochs_done"):
            ax.axvline(
                float(row["epochs_done"]) * spe, color="#9a6700", ls=":", lw=1.2, label="pruned"
            )
        diagnosis = str(row.get("diagnosis") or "")
        if diagnosis == "diverged":
            loss = curves.get("train_loss") or []
            finite = [p for p in loss if math.isfinite(p[1])]
            if finite:
                low = min(finite, key=lambda p: p[1])
                ax.axvline(low[0], color="#cf222e", ls="--", lw=1, label="divergence")
        title = f"t{n:03d} {row.get('state', '')}"
        if diagnosis:
            title += f" · {diagnosis}"
        ax.set_title(title, fontsize=9, color=DIAGNOSIS_COLOURS.get(diagnosis, "#24292f"))
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
        if drawn:
            ax.legend(fontsize=6, loc="upper right")
    for j in range(len(numbers), nrows * cols):
        axes[j // cols][j % cols].set_visible(False)
    # margins fixed in inches (the saved SVG is cropped to its content anyway), not
    # tight_layout(): measuring every panel's texts once more took a quarter of the report
    width, height = 3.6 * cols, 2.7 * nrows
    fig.subplots_adjust(
        left=0.45 / width,
        right=1 - 0.4 / width,
        bottom=0.4 / height,
        top=1 - 0.3 / height,
        wspace=0.4,
        hspace=0.55,
    )
    return _svg(fig)


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
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    ok = [p for p in points if p.feasible]
    bad = [p for p in points if not p.feasible]
    ax.scatter(
        [p.values[0] for p in ok],
        [p.values[1] for p in ok],
        s=20,
        color="#8c959f",
        label="trial",
        zorder=2,
    )
    if bad:
        ax.scatter(
            [p.values[0] for p in bad],
            [p.values[1] for p in bad],
            s=24,
            facecolors="none",
            edgecolors="#cf222e",
            label="infeasible",
            zorder=2,
        )
    ax.plot(
        [p.values[0] for p in front],
        [p.values[1] for p in front],
        "o-",
        color="#0969da",
        label=f"Pareto front ({len(front)})",
        zorder=3,
    )
    for p in front:
        ax.annotate(
            f"#{p.number}",
            (p.values[0], p.values[1]),
            fontsize=7,
            xytext=(3, 3),
            textcoords="offset points",
        )
    ax.set_xlabel(f"{names[0]} ({directions[0]})")
    ax.set_ylabel(f"{names[1]} ({directions[1]})")
    ax.set_title("Pareto front")
    ax.legend(loc="best", fontsize=8)
    return _svg(fig)

"""The morning report of a retune: what changed, the new best against the old, the trials,
and what to try next, as one self-contained HTML page (:func:`retune_report`)."""

from __future__ import annotations

import datetime as dt
import html
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from orchestrator.config import SweepSpec
from orchestrator.core.attrs import TrialAttrs
from orchestrator.core.errors import OrchestratorError
from orchestrator.stores.read import GenerationInfo
from orchestrator.workflows.generation import load_generation

if TYPE_CHECKING:
    import optuna
    import pandas as pd

    from orchestrator.analysis.diagnosis import Advice
    from orchestrator.plan.sweep import SweepPlan
    from orchestrator.workflows.retune import RetuneResult

__all__ = ["Swept", "retune_report"]


class Swept(Protocol):
    """What the report reads of a generation's sweep: the engine's result
    (:class:`~orchestrator.engine.SweepResult`), or its end as the listeners see it
    (:class:`~orchestrator.engine.events.SweepFinished`)."""

    @property
    def plan(self) -> SweepPlan: ...

    @property
    def study(self) -> optuna.Study: ...

    @property
    def frame(self) -> pd.DataFrame: ...

    @property
    def advice(self) -> Advice | None: ...


def _best_of(info: GenerationInfo | None, spec: SweepSpec) -> dict[str, Any] | None:
    if info is None or not info.succeeded:
        return None
    from orchestrator.results.table import trial_hyperparameters

    concluded = dict(info.concluded or {})
    try:
        study = load_generation(info, spec)
        trial = study.trials[int(concluded["best_trial"])]
        concluded["params"] = trial_hyperparameters(trial)
    except (OrchestratorError, KeyError, IndexError, ValueError, TypeError):
        pass
    concluded["study"] = info.study_name
    concluded["generation"] = info.number
    return concluded


_CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,sans-serif;margin:2rem auto;max-width:60rem;
color:#1d2433;padding:0 1rem}h1{font-size:1.4rem;margin-bottom:.2rem}h2{font-size:1.1rem;
margin-top:1.8rem}.sub{color:#5b6478}table{border-collapse:collapse;margin:.6rem 0;width:100%}
th,td{border-bottom:1px solid #e2e5eb;padding:.3rem .5rem;text-align:left;font-variant-numeric:
tabular-nums}th{background:#f4f6f9}.verdict{padding:.7rem 1rem;border-radius:6px;
background:#eef6ee;border:1px solid #b9dbb9}.verdict.bad{background:#fbeeee;border-color:#e3b5b5}
.verdict.same{background:#f4f6f9;border-color:#d6dae2}ul{padding-left:1.2rem}
"""


def retune_report(result: RetuneResult, spec: SweepSpec, sweep: Swept | None = None) -> str:
    """The morning report of a retune: what changed, the new best against the old, the
    trials, and what to try next. One self-contained HTML page. ``sweep``: the generation's
    sweep (default ``result.sweep``; the MLflow listener renders it from the sweep's end)."""
    from orchestrator.results.table import TABLE_COLUMNS, render

    sweep = sweep if sweep is not None else result.sweep
    done = _completed(sweep.study) if sweep is not None else 0
    esc = html.escape
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    metric = spec.objective.metric
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>ftsweep retune: {esc(spec.name)}</title><style>{_CSS}</style></head><body>",
        f"<h1>Retune of {esc(spec.name)}</h1>",
        f"<div class='sub'>{esc(now)} · objective: {esc(spec.objective.direction)} "
        f"{esc(metric)}</div>",
    ]
    kind = {"unchanged": "same", "locked": "same"}.get(result.action, "")
    if result.action in ("started", "resumed", "first") and not done:
        kind = "bad"
    verdict = result.message
    if kind == "bad":
        verdict += " — no trial completed; the previous model stays current"
    parts.append(f"<p class='verdict {kind}'>{esc(verdict)}</p>")
    parts.append("<h2>What changed</h2>")
    if result.action == "first":
        parts.append(f"<p>The first sweep of {esc(spec.name)}: nothing to compare with yet.</p>")
    elif result.changes:
        parts.append("<ul>" + "".join(f"<li>{esc(c)}</li>" for c in result.changes) + "</ul>")
    else:
        parts.append("<p>Nothing: the data, the base model and the settings are as before.</p>")
    old = _best_of(result.previous, spec)
    new = None
    from orchestrator.results.front import primary_value
    from orchestrator.results.table import best_trial, trial_hyperparameters

    best = best_trial(sweep.study) if sweep is not None and done else None
    if sweep is not None and best is not None:
        new = {
            "study": sweep.plan.study_name,
            "generation": result.generation,
            "best_trial": best.number,
            "best_value": primary_value(best),
            "model": best.user_attrs.get(TrialAttrs.FINE_TUNED_MODEL),
            "completed": done,
            "params": trial_hyperparameters(best),
        }
    if old or new:
        parts.append("<h2>Best: new against old</h2><table><tr><th></th>")
        if result.action == "unchanged":
            cols = [("current", old)]
        elif old is None:
            cols = [("new", new)]
        else:
            cols = [("previous", old), ("new", new)]
        parts += [f"<th>{esc(label)}</th>" for label, _ in cols]
        parts.append("</tr>")
        rows: list[tuple[str, Callable[[dict[str, Any]], str]]] = [
            ("generation", lambda b: f"{b.get('generation')} ({b.get('study')})"),
            (metric, lambda b: _num(b.get("best_value"))),
            ("trial", lambda b: str(b.get("best_trial", ""))),
            ("trials completed", lambda b: str(b.get("completed", ""))),
            ("model", lambda b: str(b.get("model") or "")),
            ("hyper-parameters", lambda b: _params(b.get("params"))),
        ]
        for label, cell in rows:
            parts.append(f"<tr><th>{esc(label)}</th>")
            parts += [f"<td>{esc(cell(b)) if b else '—'}</td>" for _, b in cols]
            parts.append("</tr>")
        parts.append("</table>")
        if old and new and old.get("best_value") is not None and new.get("best_value") is not None:
            parts.append(
                "<p class='sub'>The data changed between the two, so the values are not "
                "strictly comparable: the new model is the current one.</p>"
                if result.changes
                else ""
            )
    if sweep is not None:
        parts.append("<h2>Trials</h2><div style='overflow-x:auto'>")
        frame = sweep.frame
        shown = [c for c in TABLE_COLUMNS if c in frame.columns]
        parts.append(render(frame[shown], "html") + "</div>")
        if sweep.advice is not None and sweep.advice.notes:
            parts.append("<h2>Next</h2><ul>")
            parts += [f"<li>{esc(n)}</li>" for n in sweep.advice.notes]
            parts.append("</ul>")
    parts.append("</body></html>")
    return "".join(parts) + "\n"


def _completed(study: optuna.Study) -> int:
    return sum(1 for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE")


def _num(v: Any) -> str:
    return f"{v:.4f}" if isinstance(v, int | float) else ""


def _params(p: Any) -> str:
    if not isinstance(p, Mapping):
        return ""
    return ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in p.items())

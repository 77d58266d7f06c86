"""``ftsweep report --format html``: one self-contained page a user reads in the morning.

Everything is inline (CSS, SVG plots by :mod:`orchestrator.results.svg`): the file opens
offline, from a mail attachment or an MLflow artifact, with no CDN. Sections:

* the summary: sweep, generation (and what changed since the previous one), backend and model,
  data fingerprint, search space, budget and spend, the best trial and its model;
* the trials table, the best row highlighted and diagnoses coloured, with each trial's
  tokens per second, MFU and peak memory where the backend measured them;
* the loss/accuracy curves of each trial (from MLflow) with the best epoch and a divergence or
  prune point marked;
* optimization history, parameter importances, parallel coordinates, a slice plot per
  parameter;
* the advice for the next sweep.

A plot that cannot be made (too few trials, MLflow not answering) is replaced by a line that
says why; the page is still written.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from orchestrator.core.attrs import StudyAttrs, TrialAttrs
from orchestrator.core.params import NAMES
from orchestrator.results.plots import (
    CURVE_METRICS,
    DIAGNOSIS_COLOURS,
    MAX_CURVE_PANELS,
    STATE_COLOURS,
    ReportInputs,
    curve_plots,
    finished_trials,
    front_plot,
    history_plot,
    importance_plot,
    parallel_plot,
    param_order,
    slice_plots,
    steps_per_epoch,
    value,
)
from orchestrator.results.speed import THROUGHPUT_COLUMNS, THROUGHPUT_HEADINGS, format_throughput
from orchestrator.results.table import best_trial, front_numbers

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["CURVE_METRICS", "MAX_CURVE_PANELS", "ReportInputs", "render_html", "steps_per_epoch"]


_CSS = """
body{font:14px/1.45 -apple-system,Segoe UI,Helvetica,Arial,sans-serif;color:#24292f;
max-width:1180px;margin:24px auto;padding:0 16px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid
#d0d7de;padding-bottom:4px}.sub{color:#57606a;margin:0 0 16px}
.cards{display:flex;flex-wrap:wrap;gap:10px}.card{border:1px solid #d0d7de;border-radius:6px;
padding:8px 12px;min-width:150px}.card b{display:block;font-size:18px}.card span{color:#57606a;
font-size:12px}
table{border-collapse:collapse;font-size:12.5px;width:100%}th,td{padding:4px 7px;
border-bottom:1px solid #eaeef2;text-align:left;white-space:nowrap}th{background:#f6f8fa}
tr.best td{background:#dafbe1;font-weight:600}td.rec{white-space:normal;min-width:260px;
max-width:420px;color:#57606a}.wide{overflow-x:auto}
.tag{border-radius:10px;padding:1px 7px;color:#fff;font-size:11.5px}
dl{display:grid;grid-template-columns:max-content auto;gap:3px 14px;margin:0}dt{color:#57606a}
dd{margin:0;font-family:ui-monospace,Menlo,monospace;font-size:12.5px;word-break:break-all}
.plot svg{max-width:100%;height:auto}.note{color:#57606a;font-style:italic}
ul.advice li{margin:3px 0}.changed{background:#fff8c5;border:1px solid #d4a72c;
border-radius:6px;padding:8px 12px}
"""


def _tag(text: str, colour: str) -> str:
    return f"<span class='tag' style='background:{colour}'>{html.escape(text)}</span>"


def _fmt(v: Any) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return ""
    if isinstance(v, bool):
        return "*" if v else ""
    if isinstance(v, float):
        return f"{v:.4g}"
    return html.escape(str(v))


def _trials_table(frame: pd.DataFrame) -> str:
    if not len(frame):
        return "<p class='note'>no trials yet</p>"
    shown = [
        c
        for c in (
            "trial",
            "state",
            "imported",
            "value",
            *(c for c in frame.columns if str(c).startswith("objective:")),
            *NAMES,
            "epochs_done",
            "best_epoch",
            "diagnosis",
            "derived_from",
            "cost_usd",
            "duration_s",
            *THROUGHPUT_COLUMNS,
            "epochs",
            "front",
            "recommendation",
        )
        if c in frame.columns and frame[c].notna().any()  # folded: derived_from is empty
    ]
    names = {**THROUGHPUT_HEADINGS, "epochs": "per epoch"}
    head = "".join(f"<th>{html.escape(names.get(c, c))}</th>" for c in shown)
    body = []
    for r in frame.to_dict(orient="records"):
        cells = []
        for c in shown:
            v = r.get(c)
            if c == "state" and v:
                cells.append(f"<td>{_tag(str(v), STATE_COLOURS.get(str(v), '#6e7781'))}</td>")
            elif c == "diagnosis" and v:
                cells.append(f"<td>{_tag(str(v), DIAGNOSIS_COLOURS.get(str(v), '#6e7781'))}</td>")
            elif c == "recommendation":
                cells.append(f"<td class='rec'>{_fmt(v)}</td>")
            elif c in THROUGHPUT_COLUMNS:
                text = format_throughput(c, v) if v is not None else ""
                cells.append(f"<td>{html.escape(text)}</td>")
            else:
                cells.append(f"<td>{_fmt(v)}</td>")
        cls = " class='best'" if r.get("best") else ""
        body.append(f"<tr{cls}>{''.join(cells)}</tr>")
    return (
        f"<div class='wide'><table><thead><tr>{head}</tr></thead>"
        f"<tbody>{''.join(body)}</tbody></table></div>"
    )


def _section(title: str, svg: str | None, why: str | None = None) -> str:
    if svg:
        return f"<h2>{html.escape(title)}</h2><div class='plot'>{svg}</div>"
    return (
        f"<h2>{html.escape(title)}</h2><p class='note'>{html.escape(why or 'not enough data')}</p>"
    )


def _summary(inp: ReportInputs) -> str:
    study = inp.study
    trials = study.get_trials(deepcopy=False)
    counts: dict[str, int] = {}
    for t in trials:
        counts[t.state.name] = counts.get(t.state.name, 0) + 1
    spent = sum(
        float(t.user_attrs[TrialAttrs.COST])
        for t in trials
        if isinstance(t.user_attrs.get(TrialAttrs.COST), int | float)
    )
    done = finished_trials(study)
    best = None
    if done:
        best = (min if inp.direction == "minimize" else max)(done, key=value)
        if len(study.directions) > 1:  # the best feasible primary, as `best --pick best`
            chosen = best_trial(study)
            best = chosen if chosen is not None else best
    cards = [
        (
            "trials",
            f"{len(trials)}",
            ", ".join(f"{v} {k.lower()}" for k, v in sorted(counts.items())),
        ),
        (
            "best " + inp.metric,
            f"{value(best):.4g}" if best is not None else "-",
            f"trial {best.number}" if best is not None else "nothing completed",
        ),
        (
            "spent",
            f"${spent:,.2f}",
            f"of a ${inp.budget_usd:,.2f} budget"
            if inp.budget_usd is not None
            else "no budget set",
        ),
    ]
    if inp.previous_best is not None and best is not None:
        delta = value(best) - inp.previous_best
        cards.append(
            ("previous generation's best", f"{inp.previous_best:.4g}", f"change {delta:+.4g}")
        )
    parts = ["<div class='cards'>"]
    for label, big, small in cards:
        parts.append(
            f"<div class='card'><span>{html.escape(label)}</span><b>{html.escape(big)}</b>"
            f"<span>{html.escape(small)}</span></div>"
        )
    parts.append("</div>")
    facts: list[tuple[str, str]] = [
        ("study", study.study_name),
        ("backend / model", f"{inp.backend} / {inp.model}"),
        ("objective", f"{inp.direction} {inp.metric}"),
    ]
    if len(inp.objectives) > 1:
        facts[-1] = (
            "objectives",
            ", ".join(f"{d} {m}" for m, d in zip(inp.objectives, inp.directions, strict=False)),
        )
        front = front_numbers(study)
        facts.append(("Pareto front", ", ".join(f"#{n}" for n in sorted(front)) or "-"))
    if best is not None:
        a = best.user_attrs
        params = ", ".join(
            f"{k}={_fmt(v)}"
            for k, v in sorted(best.params.items(), key=lambda kv: param_order(kv[0]))
        )
        facts.append(("best configuration", params))
        if a.get(TrialAttrs.FINE_TUNED_MODEL):
            facts.append(("best model", str(a[TrialAttrs.FINE_TUNED_MODEL])))
        if a.get(TrialAttrs.BEST_CHECKPOINT):
            facts.append(("best checkpoint", str(a[TrialAttrs.BEST_CHECKPOINT])))
    attrs = study.user_attrs
    fp = attrs.get(StudyAttrs.FINGERPRINT)
    if isinstance(fp, Mapping):
        for key in ("data", "model"):
            part = fp.get(key)
            if part:
                facts.append((f"{key} fingerprint", _compact(part)))
    if inp.space:
        facts.append(("search space", _compact(inp.space)))
    parts.append("<h2>Summary</h2><dl>")
    for k, v in facts:
        parts.append(f"<dt>{html.escape(k)}</dt><dd>{html.escape(v)}</dd>")
    parts.append("</dl>")
    changes = attrs.get(StudyAttrs.CHANGES)
    if inp.generation > 1 and changes:
        items = "".join(f"<li>{html.escape(str(c))}</li>" for c in changes)
        parts.append(
            f"<h2>What changed since generation {inp.generation - 1}</h2>"
            f"<div class='changed'><ul>{items}</ul></div>"
        )
    return "".join(parts)


def _compact(value: Any, limit: int = 600) -> str:
    import json

    text = json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def render_html(inp: ReportInputs) -> str:
    """The whole page."""
    esc = html.escape
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    gen = f", generation {inp.generation}" if inp.generation > 1 else ""
    source = inp.study.user_attrs.get(StudyAttrs.IMPORTED_FROM)
    if source:  # `ftsweep import`: past jobs at the provider, not trials this sweep ran
        gen = f", imported from {source}"
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width,initial-scale=1'>",
        f"<title>ftsweep report: {esc(inp.sweep)}</title><style>{_CSS}</style></head><body>",
        f"<h1>Sweep {esc(inp.sweep)}{esc(gen)}</h1>",
        f"<p class='sub'>written {esc(now)} by ftsweep"
        + (
            f"; past jobs at {esc(str(source))} imported by <code>ftsweep import</code>"
            if source
            else ""
        )
        + "</p>",
        _summary(inp),
        "<h2>Trials</h2>",
        _trials_table(inp.frame),
    ]
    advice = list(inp.advice)
    parts.append("<h2>Next sweep</h2>")
    if advice:
        parts.append(
            "<ul class='advice'>" + "".join(f"<li>{esc(a)}</li>" for a in advice) + "</ul>"
        )
    else:
        parts.append("<p class='note'>no advice: the best configuration is inside the ranges</p>")
    if len(inp.objectives) > 1:
        parts.append(_section("Pareto front", front_plot(inp), "no completed trial yet"))
    parts.append(_section("Optimization history", history_plot(inp), "no completed trial yet"))
    svg, why = importance_plot(inp)
    parts.append(_section("Parameter importances", svg, why))
    parts.append(
        _section(
            "Parallel coordinates",
            parallel_plot(inp),
            "needs at least 2 completed trials with searched parameters",
        )
    )
    parts.append(_section("Slice plots", slice_plots(inp), "no completed trial yet"))
    parts.append(
        _section(
            "Training curves",
            curve_plots(inp),
            inp.curves_note or "no curves were logged",
        )
    )
    parts.append("</body></html>")
    return "".join(parts)

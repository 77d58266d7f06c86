"""The trials of a study as a pandas DataFrame, and its renderings.

Formats: ``table`` (plain text), ``csv``, ``json``, ``markdown``, ``html``. The columns are the
trial number, state, objective value, the hyper-parameters actually trained (with the resolved
integer batch size and its share of the examples), diagnosis, recommendation, cost, job id,
duration and, where the backend measured them (the local trainer), tokens per second, MFU and
peak memory (:mod:`.speed`); the best trial is marked.
"""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING, Any

from orchestrator.backends.base import Hyperparameters
from orchestrator.core.attrs import TrialAttrs
from orchestrator.core.params import NAMES, PARAMETERS
from orchestrator.results.speed import (
    THROUGHPUT_COLUMNS,
    THROUGHPUT_HEADINGS,
    format_throughput,
    throughput_cells,
)

if TYPE_CHECKING:
    import optuna
    import pandas as pd

__all__ = [
    "FORMATS",
    "TABLE_COLUMNS",
    "best_trial",
    "render",
    "trial_hyperparameters",
    "trials_frame",
]

FORMATS = ("table", "csv", "json", "markdown", "html")
#: the hyper-parameter columns, from the registry
PARAMS = NAMES


def best_trial(study: optuna.Study) -> optuna.trial.FrozenTrial | None:
    try:
        return study.best_trial
    except ValueError:
        return None


def trial_hyperparameters(
    trial: optuna.trial.FrozenTrial,
    fixed: dict[str, Any] | None = None,
    request: Any = None,
) -> dict[str, Any]:
    """The hyper-parameters ``trial`` trained: those of its request (the resolved batch size
    included), else its sampled values over the ``fixed`` ones (a trial never submitted).
    ``request``: its request already parsed from JSON (:func:`trials_frame` parses all at
    once)."""
    raw = trial.user_attrs.get(TrialAttrs.REQUEST)
    if raw is not None:
        try:  # only its hyper-parameters: TrainingRequest.from_json's part that reads them
            found = json.loads(str(raw)) if request is None else request
            return Hyperparameters.from_dict(found["hyperparameters"]).as_dict()
        except (KeyError, TypeError, ValueError, AttributeError):
            pass  # an unreadable ledger entry: show what the sampler proposed
    return {**(fixed or {}), **trial.params}


def _requests(trials: list[optuna.trial.FrozenTrial]) -> list[Any]:
    """Each trial's request parsed from JSON (None where it has none), in one parse when
    every one is valid JSON (10,000 requests: a tenth of the time)."""
    raws = [t.user_attrs.get(TrialAttrs.REQUEST) for t in trials]
    try:
        parsed: list[Any] = json.loads("[" + ",".join(r or "null" for r in raws) + "]")
    except (TypeError, ValueError):
        return [None] * len(trials)  # parsed one by one, each unreadable one apart
    return parsed if len(parsed) == len(trials) else [None] * len(trials)


def _value(v: Any) -> Any:
    if isinstance(v, float) and math.isnan(v):
        return None
    return v


def trials_frame(study: optuna.Study, fixed: dict[str, Any] | None = None) -> pd.DataFrame:
    """One row per trial, in trial order."""
    import pandas as pd

    best = best_trial(study)
    rows = []
    trials = study.get_trials(deepcopy=False)
    for t, request in zip(trials, _requests(trials), strict=True):
        a = t.user_attrs
        params = trial_hyperparameters(t, fixed, request)
        duration = None
        if t.datetime_start and t.datetime_complete:
            duration = round((t.datetime_complete - t.datetime_start).total_seconds(), 1)
        rows.append(
            {
                "trial": t.number,
                "state": t.state.name,
                "value": _value(t.value),
                **{p: params.get(p) for p in PARAMS},
                "batch_size_pct": a.get(TrialAttrs.BATCH_PCT),
                "epochs_done": a.get(TrialAttrs.EPOCHS_DONE),
                "diagnosis": a.get(TrialAttrs.DIAGNOSIS),
                "best_epoch": a.get(TrialAttrs.BEST_EPOCH),
                "recommendation": a.get(TrialAttrs.RECOMMENDATION),
                "cost_usd": a.get(TrialAttrs.COST),
                "job_id": a.get(TrialAttrs.JOB_ID),
                "reused_from": a.get(TrialAttrs.REUSED_FROM),
                "derived_from": a.get(TrialAttrs.DERIVED_FROM),
                "imported": True if a.get(TrialAttrs.IMPORTED) else None,
                "error": a.get(TrialAttrs.ERROR),
                "duration_s": duration,
                **throughput_cells(a),
                "best": best is not None and t.number == best.number,
            }
        )
    columns = [
        "trial",
        "state",
        "value",
        *PARAMS,
        "batch_size_pct",
        "epochs_done",
        "diagnosis",
        "best_epoch",
        "recommendation",
        "cost_usd",
        "job_id",
        "reused_from",
        "derived_from",
        "imported",
        "error",
        "duration_s",
        *THROUGHPUT_COLUMNS,
        "best",
    ]
    frame = pd.DataFrame(rows, columns=columns)
    if rows:  # with no trial every column is empty: keep them all, as headers
        frame = frame.dropna(axis=1, how="all")
    return frame.astype(object).where(frame.notna(), None)


def _cell(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "*" if v else ""
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


_SHORT = {**{p.name: p.short for p in PARAMETERS}, "epochs_done": "done", **THROUGHPUT_HEADINGS}
#: the columns of the table format (and of the morning report's trials)
TABLE_COLUMNS = _TABLE = [
    "trial",
    "state",
    "value",
    *PARAMS,
    "epochs_done",
    "diagnosis",
    "cost_usd",
    "tokens_per_second",
    "mfu",
    "best",
]


def _shown(column: str, v: Any) -> str:
    """A text cell; throughput in its unit (csv and json keep the numbers)."""
    return format_throughput(column, v) if column in THROUGHPUT_COLUMNS else _cell(v)


def render(frame: pd.DataFrame, fmt: str) -> str:
    """The frame in one of :data:`FORMATS`."""
    if fmt == "csv":
        return str(frame.to_csv(index=False))
    if fmt == "json":
        return json.dumps(frame.to_dict(orient="records"), indent=2, default=str)
    if fmt == "html":
        return str(frame.to_html(index=False, na_rep="", classes="ftsweep-trials", border=0))
    cols = [c for c in (_TABLE if fmt == "table" else frame.columns) if c in frame.columns]
    heads = [_SHORT.get(c, c) for c in cols]
    rows = [[_shown(c, r[c]) for c in cols] for r in frame.to_dict(orient="records")]
    if fmt == "markdown":
        lines = ["| " + " | ".join(heads) + " |", "|" + "---|" * len(heads)]
        lines += ["| " + " | ".join(x.replace("|", "\\|") for x in row) + " |" for row in rows]
        return "\n".join(lines)
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(heads)
    ]
    out = ["  ".join(h.ljust(w) for h, w in zip(heads, widths, strict=True)).rstrip()]
    out += ["  ".join(x.ljust(w) for x, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return "\n".join(out)

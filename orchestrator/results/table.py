"""The trials of a study as a table (:class:`TrialTable`, plain rows; a pandas DataFrame on
demand), and its renderings.

Formats: ``table`` (plain text), ``csv``, ``json``, ``markdown``, ``html``. The columns are the
trial number, state, objective value, the hyper-parameters actually trained (with the resolved
integer batch size and its share of the examples), diagnosis, recommendation, cost, job id,
duration and, where the backend measured them (the local trainer), tokens per second, MFU and
peak memory (:mod:`.speed`); the best trial is marked, and in a sweep of several objectives
each further objective has a column and the trials on the Pareto front are marked
(``front``).

Every row is marked ``derived`` (an earlier epoch of a job, told as a trial of its own) and
``job_trial`` (the trial whose job trained it: its own number for a job); a job's row
carries its values at each epoch end (``epochs``). :func:`jobs_frame` folds the derived rows
under their job: one row per job, as ``ftsweep report`` shows by default.

The plain text table renders from the rows without pandas (``ftsweep run`` of a finished sweep
imports none); the other formats, and :func:`jobs_frame`, use the DataFrame.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from orchestrator.backends.base import Hyperparameters
from orchestrator.core.attrs import TrialAttrs
from orchestrator.core.params import NAMES, PARAMETERS
from orchestrator.results.front import (
    epoch_values,
    front_numbers,
    pick,
    primary_value,
    trial_points,
)
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
    "TrialTable",
    "best_trial",
    "front_numbers",
    "jobs_frame",
    "render",
    "trial_hyperparameters",
    "trials_frame",
    "trials_table",
]

FORMATS = ("table", "csv", "json", "markdown", "html")
#: the hyper-parameter columns, from the registry
PARAMS = NAMES


def best_trial(study: optuna.Study) -> optuna.trial.FrozenTrial | None:
    """The best completed (feasible) trial; with several objectives, the best on the
    primary objective (:func:`~orchestrator.results.front.pick`'s ``best``)."""
    if len(study.directions) == 1:
        try:
            return study.best_trial
        except ValueError:
            return None
    trials = study.get_trials(deepcopy=False)
    chosen = pick(trial_points(trials), [d.name.lower() for d in study.directions])
    return next(t for t in trials if t.number == chosen.number) if chosen else None


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


@dataclass(frozen=True)
class TrialTable:
    """One row per trial, in trial order, as plain records (``columns``: every column, empty
    ones included); :attr:`frame` is the same as a pandas DataFrame (built on first use)."""

    columns: tuple[str, ...]
    rows: tuple[dict[str, Any], ...]

    def __len__(self) -> int:
        return len(self.rows)

    @functools.cached_property
    def frame(self) -> pd.DataFrame:
        """The rows as a DataFrame: the columns no row has a value in left out (all of them
        kept, as headers, when there is no row), every missing value None."""
        import pandas as pd

        frame = pd.DataFrame(list(self.rows), columns=list(self.columns))
        if self.rows:  # with no trial every column is empty: keep them all, as headers
            frame = frame.dropna(axis=1, how="all")
        return frame.astype(object).where(frame.notna(), None)

    def shown_columns(self) -> list[str]:
        """The columns :attr:`frame` keeps: those some row has a value in (all, with no row)."""
        if not self.rows:
            return list(self.columns)
        return [c for c in self.columns if any(not _missing(r.get(c)) for r in self.rows)]

    @property
    def best(self) -> dict[str, Any] | None:
        """The best trial's row, or None."""
        return next((r for r in self.rows if r.get("best") is True), None)


def _missing(v: Any) -> bool:
    """What pandas counts as missing in a row: None and NaN."""
    return v is None or (isinstance(v, float) and math.isnan(v))


def trials_frame(study: optuna.Study, fixed: dict[str, Any] | None = None) -> pd.DataFrame:
    """One row per trial, in trial order (:attr:`TrialTable.frame`)."""
    return trials_table(study, fixed).frame


def trials_table(study: optuna.Study, fixed: dict[str, Any] | None = None) -> TrialTable:
    """One row per trial, in trial order, without pandas."""
    best = best_trial(study)
    front = front_numbers(study)
    several = len(study.directions) > 1
    rows = []
    trials = study.get_trials(deepcopy=False)
    maximize = study.directions[0].name == "MAXIMIZE"
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
                "value": _value(primary_value(t)),
                **_further_objectives(t, several),
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
                "derived": TrialAttrs.DERIVED_FROM in a,
                "job_trial": a.get(TrialAttrs.DERIVED_FROM, t.number),
                "epochs": _epochs_cell(t, maximize),
                "front": t.number in front if several else None,
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
        "derived",
        "job_trial",
        "epochs",
        "front",
        "best",
    ]
    columns[3:3] = sorted({k for r in rows for k in r if k.startswith(_OBJ)})
    return TrialTable(tuple(columns), tuple(rows))


#: the prefix of a further objective's column (the primary is ``value``)
_OBJ = "objective:"


def _further_objectives(t: optuna.trial.FrozenTrial, several: bool) -> dict[str, Any]:
    """``objective:METRIC`` -> value of each objective after the primary."""
    if not several:
        return {}
    told = t.user_attrs.get(TrialAttrs.OBJECTIVES)
    names = list(told) if isinstance(told, dict) else []
    values = t.values or []
    return {f"{_OBJ}{name}": float(v) for name, v in zip(names[1:], values[1:], strict=False)}


def _epochs_cell(t: optuna.trial.FrozenTrial, maximize: bool) -> str | None:
    """The primary objective at each epoch end, ``epochs 1..4: 0.52 0.41 0.39 0.44 (best
    @3)`` (best in the primary's direction); None when none was reported."""
    steps = epoch_values(t)
    if not steps:
        return None
    ordered = sorted(steps.items())
    first, last = ordered[0][0], ordered[-1][0]
    shown = " ".join(f"{v:.4g}" for _, v in ordered)
    if first == last:
        return f"epoch {first}: {shown}"
    best = (max if maximize else min)(steps, key=lambda k: steps[k])
    return f"epochs {first}..{last}: {shown} (best @{best})"


def jobs_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per job: the derived rows (earlier epochs told as trials) folded into their
    job's row. Where one of them is the best or on the front, the job's ``best``/``front``
    cell names it (``@12``; ``* @12`` when the job's own trial is marked too)."""
    if "derived" not in frame.columns or frame.empty:
        return frame
    derived = frame["derived"].astype(bool)
    out = frame[~derived].copy()
    folded = frame[derived]
    for mark in ("best", "front"):
        if mark not in frame.columns or folded.empty:
            continue
        for job, group in folded.groupby("job_trial"):
            hits = [f"@{n}" for n, hit in zip(group["trial"], group[mark], strict=True) if hit]
            where = out["trial"] == job
            if not hits or not where.any():
                continue
            own = out.loc[where, mark].iloc[0] is True
            out.loc[where, mark] = " ".join(["*"] * own + hits)
    out = out.reset_index(drop=True)
    out.attrs["folded"] = True
    return out


def _cell(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "*" if v else ""
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


_SHORT = {
    **{p.name: p.short for p in PARAMETERS},
    "epochs_done": "done",
    "epochs": "per epoch",  # a job's objective at each epoch end (n_epochs is "epochs")
    **THROUGHPUT_HEADINGS,
}
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
    "front",
    "best",
]


def _shown(column: str, v: Any) -> str:
    """A text cell; throughput in its unit (csv and json keep the numbers)."""
    return format_throughput(column, v) if column in THROUGHPUT_COLUMNS else _cell(v)


def render(frame: pd.DataFrame | TrialTable, fmt: str) -> str:
    """The trials in one of :data:`FORMATS`; a :class:`TrialTable` as the plain text table
    without pandas."""
    if isinstance(frame, TrialTable):
        if fmt != "table":
            return render(frame.frame, fmt)
        return _text(frame.shown_columns(), frame.rows, fmt, folded=False)
    if fmt == "csv":
        return str(frame.to_csv(index=False))
    if fmt == "json":
        return json.dumps(frame.to_dict(orient="records"), indent=2, default=str)
    if fmt == "html":
        return str(frame.to_html(index=False, na_rep="", classes="ftsweep-trials", border=0))
    columns = [str(c) for c in frame.columns]
    records = frame.to_dict(orient="records")
    return _text(columns, records, fmt, folded=bool(frame.attrs.get("folded")))


def _text(
    columns: list[str], records: Sequence[Mapping[Any, Any]], fmt: str, *, folded: bool
) -> str:
    """The ``table`` or ``markdown`` rendering of ``records`` (the cells of ``columns``)."""
    table = [*_TABLE[:3], *(c for c in columns if c.startswith(_OBJ)), *_TABLE[3:]]
    if folded:  # one row per job: its values at each epoch end too
        table.insert(table.index("cost_usd") + 1, "epochs")
    cols = [c for c in (table if fmt == "table" else columns) if c in columns]
    heads = [_SHORT.get(c, c) for c in cols]
    rows = [[_shown(c, None if _missing(r[c]) else r[c]) for c in cols] for r in records]
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

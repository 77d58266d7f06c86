"""The live view of ``ftsweep run`` in a terminal, and the event stream for scripts.

Three ways to follow a sweep, chosen by :func:`console_for`:

* **live** (stderr is a terminal): a panel redrawn in place, a few times a second — each trial
  in flight with its job's state, step and epoch, latest train and validation loss, cost so
  far and time running (and its tokens per second and MFU once the backend measured them at
  an epoch's end: the local trainer); the trials done out of the total, the best so far,
  dollars spent and committed against the budget, and an ETA. Every finished trial and every
  note is also printed above the panel as a plain line, so the scrollback is the same log the
  plain mode writes.
* **plain** (stderr is a pipe, a file, cron, CI, ``TERM=dumb``): :class:`ConsoleListener`'s
  one line an event, no control characters.
* **json** (``--json-events``): one JSON object an event on stdout (``{"event": "trial_finished",
  ...}``), for scripts; the result table is replaced by a final ``{"event": "result", ...}``.

``--quiet`` keeps warnings and the result only.
"""

from __future__ import annotations

import json
import math
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from orchestrator.cli.console import ConsoleListener, short_value
from orchestrator.cli.output import Output
from orchestrator.core.attrs import TrialAttrs
from orchestrator.engine.events import (
    EpochReported,
    Event,
    Listener,
    Note,
    Points,
    Records,
    SweepFinished,
    SweepStarted,
    TrialFinished,
    TrialReused,
    TrialStarted,
    TrialSubmitted,
)
from orchestrator.results.front import front_numbers, primary_value
from orchestrator.results.speed import format_mfu, format_tokens_per_second

if TYPE_CHECKING:
    from rich.console import Console, RenderableType
    from rich.live import Live

__all__ = ["Mode", "console_for", "mode_for"]

Mode = Literal["live", "plain", "quiet", "json"]

TRAIN_LOSS = ("train_loss",)
VALID_LOSS = ("valid_loss", "full_valid_loss")
#: finished trials kept in the panel (all of them are in the scrollback)
RECENT = 5


def mode_for(stream: Any, *, quiet: bool = False, json_events: bool = False) -> Mode:
    """``json`` and ``quiet`` when asked; ``live`` on a terminal that can redraw; else ``plain``."""
    if json_events:
        return "json"
    if quiet:
        return "quiet"
    term = os.environ.get("TERM", "")
    isatty = getattr(stream, "isatty", None)
    if callable(isatty) and isatty() and term not in ("", "dumb"):
        return "live"
    return "plain"


def console_for(out: Output, backend: str, mode: Mode) -> Listener:
    if mode == "live":
        return LiveConsole(out, backend)
    if mode == "json":
        return JsonEvents(out)
    if mode == "quiet":
        return QuietConsole()
    return ConsoleListener(out, backend)


class QuietConsole(Listener):
    """Warnings only (the result still goes to stdout)."""

    name = "console"

    def __init__(self, out: Output | None = None) -> None:
        self.out = out or Output()

    def note(self, e: Note) -> None:
        if e.level == "warning":
            text = f"trial {e.trial}: {e.text}" if e.trial is not None else e.text
            self.out.warn(text)


# -- the event stream ------------------------------------------------------------------------


def _hp(trial: Any) -> dict[str, Any]:
    return dict(trial.request.hyperparameters.as_dict())


def event_record(e: Event) -> dict[str, Any] | None:
    """One event as a JSON-able object (None for events that carry nothing a script needs)."""
    now = round(time.time(), 3)
    if isinstance(e, SweepStarted):
        return {
            "event": e.hook,
            "time": now,
            "sweep": e.plan.spec.name,
            "study": e.plan.study_name,
            "backend": e.backend,
            "resumed": e.resumed,
            "trials": e.plan.spec.trials,
            "budget_usd": e.plan.spec.budget_usd,
        }
    if isinstance(e, TrialStarted):
        return {
            "event": e.hook,
            "time": now,
            "trial": e.trial.number,
            "reattached": e.reattached,
            "params": _hp(e.trial),
        }
    if isinstance(e, TrialSubmitted):
        return {"event": e.hook, "time": now, "trial": e.trial.number, "job_id": e.job_id}
    if isinstance(e, Points):
        return {
            "event": e.hook,
            "time": now,
            "trial": e.trial.number,
            "points": [{"step": p.step, "name": p.name, "value": p.value} for p in e.points],
        }
    if isinstance(e, EpochReported):
        return {
            "event": e.hook,
            "time": now,
            "trial": e.trial.number,
            "epoch": e.epoch,
            "step": e.step,
            "metric": e.metric,
            "value": e.value,
            "pruned": e.pruned,
        }
    if isinstance(e, TrialFinished):
        return {
            "event": e.hook,
            "time": now,
            "trial": e.trial.number,
            "state": e.state,
            "value": e.value,
            "cost_usd": e.cost_usd,
            "diagnosis": e.diagnosis.label,
            "recommendation": e.diagnosis.recommendation,
            "pruned_at": e.pruned_at,
            "error": e.error,
        }
    if isinstance(e, TrialReused):
        return {
            "event": e.hook,
            "time": now,
            "trial": e.number,
            "twin": e.twin,
            "state": e.state,
            "waiting": e.waiting,
        }
    if isinstance(e, Note):
        return {"event": e.hook, "time": now, "level": e.level, "trial": e.trial, "text": e.text}
    if isinstance(e, SweepFinished):
        return {
            "event": e.hook,
            "time": now,
            "spent_usd": round(e.spent_usd, 6),
            "stop_reason": e.stop_reason,
            "best_trial": e.best.number if e.best is not None else None,
            "best_value": primary_value(e.best) if e.best is not None else None,
            **(
                {"pareto_front": sorted(front_numbers(e.study))}
                if e.plan.spec.multi_objective
                else {}
            ),
        }
    return None


def _front_of(e: SweepFinished) -> dict[str, Any]:
    if not e.plan.spec.multi_objective:
        return {}
    return {"pareto_front": sorted(front_numbers(e.study))}


def _finite(v: Any) -> Any:
    return v if not isinstance(v, float) or math.isfinite(v) else None


class JsonEvents(Listener):
    """One JSON line an event on stdout."""

    name = "json-events"

    def __init__(self, out: Output) -> None:
        self.out = out

    def handle(self, event: Event) -> None:
        record = event_record(event)
        if record is not None:
            clean = {k: _finite(v) for k, v in record.items()}
            self.out.data(json.dumps(clean, default=str, allow_nan=False))


# -- the live panel --------------------------------------------------------------------------


@dataclass
class _Flight:
    number: int
    params: dict[str, Any]
    started: float
    job_id: str | None = None
    status: str = "starting"
    step: int = 0
    steps: int | None = None
    epoch: int = 0
    epochs: int | None = None
    train_loss: float | None = None
    valid_loss: float | None = None
    estimate: float | None = None
    tokens_per_second: float | None = None
    mfu: float | None = None


@dataclass
class _Done:
    number: int
    state: str
    value: float | None
    diagnosis: str
    seconds: float | None


@dataclass
class _Board:
    """What the panel shows; changed by events, read by the redraw thread (under ``lock``)."""

    sweep: str = ""
    backend: str = ""
    total: int = 0
    parallel: int = 1
    direction: str = "minimize"
    budget: float | None = None
    examples: int = 0
    done_before: int = 0
    spent: float = 0.0
    flights: dict[int, _Flight] = field(default_factory=dict)
    finished: list[_Done] = field(default_factory=list)
    durations: list[float] = field(default_factory=list)
    best: tuple[int, float] | None = None
    #: several objectives: the study (read for the front as trials finish) and its front
    study: Any = None
    front: list[int] | None = None
    queue_note: str | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def better(self, value: float) -> bool:
        if self.best is None:
            return True
        return value < self.best[1] if self.direction == "minimize" else value > self.best[1]


def _fmt_s(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "-"
    seconds = max(0, int(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s" if m else f"{s}s"


def _fmt_v(v: float | None) -> str:
    return "-" if v is None else f"{v:.4g}"


def _usd(v: float | None) -> str:
    return "-" if v is None else f"${v:,.2f}"


class LiveConsole(ConsoleListener):
    """A panel redrawn in place on stderr, over the plain log lines of finished trials."""

    name = "console"

    def __init__(
        self,
        out: Output,
        backend: str,
        *,
        console: Console | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._console, self._plain = console, out
        # the plain mode's lines, written above the panel while it is shown
        super().__init__(_Above(self._print), backend)
        self.clock = clock
        self.board = _Board(backend=backend)
        self._live: Live | None = None
        self._pending = False  # started: no panel until an event (a no-op run has none: no rich)

    # -- lifecycle -------------------------------------------------------------------------
    def __enter__(self) -> LiveConsole:
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop()

    def _start(self) -> None:
        """Show the panel (once the stores are open: what comes before is plain lines)."""
        from rich.console import Console
        from rich.live import Live

        if self._live is not None:
            return
        self._console = self._console or Console(file=self._plain.stderr, highlight=False)
        self._live = Live(
            get_renderable=self.render,
            console=self._console,
            refresh_per_second=4,
            transient=True,
            redirect_stdout=False,
            redirect_stderr=True,  # anything else written to stderr goes above the panel
        )
        self._live.start()

    def _stop(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None

    def _print(self, text: str) -> None:
        # above the panel while it is shown; a plain line otherwise (before it: without rich)
        if self._console is None:
            return self._plain.info(text)
        self._console.print(text, markup=False, highlight=False, soft_wrap=True)

    def handle(self, event: Event) -> Records | None:
        if self._pending and not isinstance(event, SweepFinished):
            self._pending = False
            self._start()
        return super().handle(event)

    # -- events ----------------------------------------------------------------------------
    def sweep_started(self, e: SweepStarted) -> None:
        b = self.board
        spec = e.plan.spec
        with b.lock:
            b.sweep = e.plan.study_name
            b.total = spec.trials
            b.parallel = max(1, int(getattr(spec, "parallel", 1) or 1))
            b.direction = spec.objective.direction
            b.budget = spec.budget_usd
            b.examples = e.plan.train.n_examples
            done = 0
            for t in e.study.get_trials(deepcopy=False):
                a = t.user_attrs
                if TrialAttrs.DERIVED_FROM in a or a.get(TrialAttrs.NOT_STARTED):
                    continue  # an earlier epoch of another trial's job, or never started
                if t.state.is_finished():
                    done += 1
                    cost = t.user_attrs.get(TrialAttrs.COST)
                    if isinstance(cost, int | float):
                        b.spent += float(cost)
                    value = primary_value(t)
                    if t.state.name == "COMPLETE" and value is not None and b.better(value):
                        b.best = (t.number, value)
            b.done_before = done
            if spec.multi_objective:
                b.study, b.front = e.study, sorted(front_numbers(e.study))
        self._print(
            f"sweep {b.sweep} on {b.backend}: {b.total} trials, {b.parallel} at a time"
            + (f", budget {_usd(b.budget)}" if b.budget is not None else "")
            + (f" ({done} done before)" if done else "")
        )
        self._pending = True

    def trial_started(self, e: TrialStarted) -> None:
        super().trial_started(e)
        hp = _hp(e.trial)
        epochs = hp.get("n_epochs")
        bs = hp.get("batch_size")
        b = self.board
        steps = None
        if isinstance(epochs, int) and isinstance(bs, int) and bs > 0 and b.examples:
            steps = epochs * math.ceil(b.examples / bs)
        estimate = e.trial.attrs.get(TrialAttrs.ESTIMATE)
        with b.lock:
            b.flights[e.trial.number] = _Flight(
                number=e.trial.number,
                params=hp,
                started=self.clock(),
                job_id=e.trial.job_id,
                status="re-attached" if e.reattached else "starting",
                steps=steps,
                epochs=epochs if isinstance(epochs, int) else None,
                estimate=float(estimate) if isinstance(estimate, int | float) else None,
            )

    def trial_submitted(self, e: TrialSubmitted) -> None:
        with self.board.lock:
            f = self.board.flights.get(e.trial.number)
            if f is not None:
                f.job_id = e.job_id
                if f.status == "starting":
                    f.status = "queued"
        hp = _hp(e.trial)
        if e.trial.number not in self._reattached:
            self._print(
                f"trial {e.trial.number} started ({self.backend} job {e.job_id}): "
                + ", ".join(f"{k}={short_value(v)}" for k, v in hp.items())
            )

    def points(self, e: Points) -> None:
        with self.board.lock:
            f = self.board.flights.get(e.trial.number)
            if f is None:
                return
            f.status = "running"
            for p in e.points:
                f.step = max(f.step, p.step)
                if p.name in TRAIN_LOSS:
                    f.train_loss = p.value
                elif p.name in VALID_LOSS:
                    f.valid_loss = p.value
                elif p.name == "tokens_per_second":
                    f.tokens_per_second = p.value
                elif p.name == "mfu":
                    f.mfu = p.value

    def epoch_reported(self, e: EpochReported) -> None:
        with self.board.lock:
            f = self.board.flights.get(e.trial.number)
            if f is not None:
                f.epoch = max(f.epoch, e.epoch)
                f.step = max(f.step, e.step)
                if e.pruned:
                    f.status = "pruning"
        if e.pruned:
            self._print(
                f"trial {e.trial.number} pruned at epoch {e.epoch} "
                f"({e.metric}={e.value:.4f}): cancelling job {e.trial.job_id}"
            )

    def trial_finished(self, e: TrialFinished) -> None:
        b = self.board
        with b.lock:
            f = b.flights.pop(e.trial.number, None)
            seconds = self.clock() - f.started if f is not None else None
            if seconds is not None and f is not None and f.status != "re-attached":
                b.durations.append(seconds)
            if e.cost_usd is not None:
                b.spent += e.cost_usd
            if e.state == "COMPLETE" and e.value is not None and b.better(e.value):
                b.best = (e.trial.number, e.value)
            b.finished.append(_Done(e.trial.number, e.state, e.value, e.diagnosis.label, seconds))
            if b.study is not None:  # the front as the study stands (told after this event)
                b.front = sorted(front_numbers(b.study))
        super().trial_finished(e)  # the same line the plain mode writes

    def note(self, e: Note) -> None:
        if "queue" in e.text:
            with self.board.lock:
                self.board.queue_note = e.text
        super().note(e)

    def sweep_finished(self, e: SweepFinished) -> None:
        with self.board.lock:
            self.board.flights.clear()
            if self.board.study is not None:
                self.board.front = sorted(front_numbers(e.study))
        self._stop()

    # -- drawing ---------------------------------------------------------------------------
    def eta(self) -> float | None:
        """Seconds until the sweep ends, from the mean duration of this run's trials."""
        b = self.board
        if not b.durations:
            return None
        mean = sum(b.durations) / len(b.durations)
        done = b.done_before + len(b.finished)
        waiting = max(0, b.total - done - len(b.flights))
        now = self.clock()
        running = [max(0.0, mean - (now - f.started)) for f in b.flights.values()]
        slots = max(1, b.parallel)
        longest_running = max(running, default=0.0)
        return longest_running + math.ceil(waiting / slots) * mean

    def render(self) -> RenderableType:
        from rich.console import Group
        from rich.table import Table
        from rich.text import Text

        b = self.board
        with b.lock:
            now = self.clock()
            done = b.done_before + len(b.finished)
            committed = sum(f.estimate or 0.0 for f in b.flights.values())
            head = Text()
            head.append(f"{b.sweep or 'sweep'}", style="bold")
            head.append(f"  {done}/{b.total} trials done  ")
            if b.best is not None:
                head.append(f"best t{b.best[0]:03d} = {b.best[1]:.4g}  ", style="green")
            if b.front is not None:
                shown = " ".join(f"t{n:03d}" for n in b.front[:8]) + (" ..." * (len(b.front) > 8))
                head.append(f"front {len(b.front)}: {shown}  ", style="green")
            if b.budget is not None or b.spent or committed:
                head.append(f"spent {_usd(b.spent)} + committed {_usd(committed)}")
                head.append(f" of {_usd(b.budget)}  " if b.budget is not None else "  ")
            head.append(f"ETA {_fmt_s(self.eta())}", style="cyan")
            table = Table(box=None, pad_edge=False, header_style="bold", expand=False)
            for col in ("trial", "params", "job", "status", "epoch", "step", "train", "valid"):
                table.add_column(col)
            table.add_column("cost", justify="right")
            table.add_column("time", justify="right")
            speed = any(f.tokens_per_second is not None for f in b.flights.values())
            mfu = any(f.mfu is not None for f in b.flights.values())
            if speed:
                table.add_column("tok/s", justify="right")
            if mfu:
                table.add_column("MFU", justify="right")
            for f in sorted(b.flights.values(), key=lambda f: f.number):
                params = " ".join(
                    f"{_abbrev(k)}={short_value(v)}" for k, v in f.params.items() if k != "seed"
                )
                frac = f.step / f.steps if f.steps else None
                cost = f.estimate * min(1.0, frac) if f.estimate is not None and frac else None
                table.add_row(
                    f"t{f.number:03d}",
                    params,
                    (f.job_id or "-")[-14:],
                    f.status,
                    f"{f.epoch}/{f.epochs}" if f.epochs else str(f.epoch),
                    f"{f.step}/{f.steps}" if f.steps else str(f.step),
                    _fmt_v(f.train_loss),
                    _fmt_v(f.valid_loss),
                    _usd(cost) if f.estimate is not None else "-",
                    _fmt_s(now - f.started),
                    *([format_tokens_per_second(f.tokens_per_second)] if speed else []),
                    *([format_mfu(f.mfu)] if mfu else []),
                )
            parts: list[RenderableType] = [head, table]
            recent = b.finished[-RECENT:]
            if recent:
                done_table = Table(box=None, pad_edge=False, header_style="bold dim")
                for col in ("done", "state", "objective", "diagnosis", "time"):
                    done_table.add_column(col)
                for d in recent:
                    style = {"COMPLETE": "green", "PRUNED": "yellow", "FAIL": "red"}[d.state]
                    done_table.add_row(
                        f"t{d.number:03d}",
                        Text(d.state, style=style),
                        _fmt_v(d.value),
                        d.diagnosis,
                        _fmt_s(d.seconds),
                    )
                parts.append(done_table)
            if b.queue_note:
                parts.append(Text(b.queue_note, style="dim"))
            return Group(*parts)


_ABBREV = {
    "n_epochs": "ep",
    "batch_size": "bs",
    "learning_rate_multiplier": "lr",
    "prompt_loss_weight": "plw",
}


def _abbrev(name: str) -> str:
    return _ABBREV.get(name, name)


class _Above(Output):
    """An :class:`Output` whose messages go above the live panel."""

    def __init__(self, emit: Callable[[str], None]) -> None:
        super().__init__()
        self._emit = emit

    def info(self, text: str) -> None:
        self._emit(text)


def stderr_mode(quiet: bool, json_events: bool) -> Mode:
    return mode_for(sys.stderr, quiet=quiet, json_events=json_events)

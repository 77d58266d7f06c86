"""The ``--serve`` loop: wait for the next time, run the retune, log, repeat.

Clock, sleep and runner are injectable, so tests need not wait. Times follow the local zone
(:func:`~.cron.local_zone`) across daylight-saving changes the way cron does. A run takes the
job's lock first (:func:`orchestrator.stores.locks.try_flock`, the lock of the crontab line's
``flock -n``), so it skips while a cron-started or manual retune holds it.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime, tzinfo
from pathlib import Path

from orchestrator.stores.locks import try_flock
from orchestrator.workflows.schedule.cron import CronSchedule, local_zone
from orchestrator.workflows.schedule.jobs import printable

__all__ = ["CLOCK", "MEANINGS", "SLEEP", "RetuneRunner", "RunNotStarted", "serve"]

#: what an exit status of ``ftsweep retune`` means
MEANINGS = {0: "ok", 1: "failed", 2: "bad input", 130: "interrupted", 143: "terminated"}


def _duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours}h{minutes:02d}m"
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


@contextlib.contextmanager
def _locked(path: Path | None) -> Iterator[tuple[bool, int | None]]:
    """``(acquired, fd)`` of the job's lock on ``path``; ``(True, None)`` without a path."""
    if path is None:
        yield True, None
        return
    with try_flock(path) as fd:
        yield fd is not None, fd


class RetuneRunner:
    """Runs the retune as a subprocess in its own session (so a terminal's Ctrl-C reaches only
    the scheduler, which passes it on once) and returns its exit status. The lock's descriptor
    is inherited, as ``flock CMD`` does: the lock lasts while the retune does. Interrupted
    while it runs, it forwards SIGINT (Ctrl-C) or SIGTERM (anything else), waits ``grace``
    seconds, kills it if needed, and re-raises."""

    def __init__(
        self,
        argv: Sequence[str],
        cwd: Path,
        env: Mapping[str, str] | None = None,
        grace: float = 60.0,
    ) -> None:
        self.argv, self.cwd, self.env, self.grace = list(argv), cwd, env, grace

    def __call__(self, lock_fd: int | None) -> int:
        try:
            proc = subprocess.Popen(
                self.argv,
                cwd=self.cwd,
                env=dict(self.env) if self.env is not None else None,
                pass_fds=(lock_fd,) if lock_fd is not None else (),
                start_new_session=True,
            )
        except OSError as exc:
            raise RunNotStarted(f"{exc.strerror or exc}: {printable(self.argv[0])}") from None
        try:
            return proc.wait()
        except BaseException as exc:
            sig = signal.SIGINT if isinstance(exc, KeyboardInterrupt) else signal.SIGTERM
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(sig)
            try:
                proc.wait(self.grace)
            except BaseException:
                proc.kill()
                proc.wait()
            raise


class RunNotStarted(Exception):
    """The retune command could not be started (its message says why)."""


Clock = Callable[[], float]

#: the defaults of :func:`serve`'s clock and sleep
CLOCK: Clock = time.time
SLEEP: Callable[[float], None] = time.sleep


def serve(
    schedule: CronSchedule,
    run: Callable[[int | None], int],
    *,
    log: Callable[[str], None],
    what: str = "retune",
    lock: Path | None = None,
    clock: Clock | None = None,
    sleep: Callable[[float], None] | None = None,
    tz: tzinfo | None = None,
    max_runs: int | None = None,
    max_nap: float = 60.0,
) -> int:
    """Run ``run`` at every time of ``schedule`` until interrupted (or ``max_runs`` runs,
    counting skipped ones); returns the number of runs started.

    Each loop logs the next time, sleeps until it (in naps of at most ``max_nap`` seconds, so a
    changed clock or a suspend is noticed), takes ``lock`` (a run that finds it held, by a cron
    job or a manual retune, is skipped and logged), runs, and logs the exit status and the
    duration. Runs never overlap: the next time is computed when a run ends, and times that
    passed while it ran are logged as missed. A run that cannot start is logged, not raised.
    Times are wall-clock in ``tz`` (None: the local zone, like cron), daylight-saving changes
    included: a time a spring-forward skips runs at the change, one a fall-back repeats runs
    once. ``clock`` and ``sleep`` default to :data:`CLOCK` and :data:`SLEEP`, read at the call
    (tests of the CLI swap those).
    """
    clock = clock or CLOCK
    sleep = sleep or SLEEP
    zone = tz if tz is not None else local_zone()

    def wall(t: float) -> datetime:
        """Aware in ``zone``; naive local time when no zone is known."""
        return datetime.fromtimestamp(t, zone)

    def stamp(t: float) -> str:
        return datetime.fromtimestamp(t, zone).astimezone(zone).strftime("%Y-%m-%d %H:%M:%S%z")

    def say(text: str) -> None:
        log(f"{stamp(clock())} {text}")

    started = 0
    while max_runs is None or started < max_runs:
        now = clock()
        due_wall = schedule.next_after(wall(now))
        due = due_wall.timestamp()
        say(f"next {what} at {stamp(due)} (in {_duration(due - now)})")
        while (left := due - clock()) > 0:
            sleep(min(left, max_nap))
        started += 1
        with _locked(lock) as (acquired, fd):
            if not acquired:
                say(f"skipped the {what} due at {stamp(due)}: the last one still runs ({lock})")
                continue
            say(f"starting {what}")
            begin = clock()
            try:
                code = run(fd)
            except RunNotStarted as exc:
                say(f"{what} could not start: {exc}")
                continue
            end = clock()
        meaning = MEANINGS.get(code, "signal" if code < 0 else "failed")
        say(f"{what} finished: exit {code} ({meaning}) after {_duration(end - begin)}")
        missed, probe = 0, due_wall
        while missed < 1000 and (probe := schedule.next_after(probe)).timestamp() <= end:
            missed += 1
        if missed:
            say(f"missed {missed} scheduled time(s) while it ran (runs never overlap)")
    return started

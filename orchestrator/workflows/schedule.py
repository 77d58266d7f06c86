"""Scheduling ``ftsweep retune``: cron expressions, crontab lines, systemd units, a foreground loop.

Nothing here prints or exits; the CLI (:mod:`orchestrator.cli.schedule`) does. The parts:

* :func:`parse_cron` -- a standard 5-field cron expression (numbers, ``*``, lists, ranges,
  steps, month and weekday names, the ``@daily``-style shorthands) to a :class:`CronSchedule`
  that says whether a minute matches and computes the next run (:meth:`CronSchedule.next_after`).
  Days follow Vixie/Debian cron: when both day fields are restricted (neither starts with
  ``*``) a day matches when EITHER matches; otherwise both must.
* :func:`on_calendar` -- the same schedule as systemd ``OnCalendar=`` values. systemd ANDs the
  weekday with the date, so cron's OR becomes two values (a timer elapses on either).
* :func:`cron_block` / :func:`install_cron` / :func:`uninstall_cron` -- a crontab entry
  between marker comments, added, replaced or removed through ``crontab -l`` / ``crontab -``.
* :func:`systemd_units` / :func:`write_units` / :func:`remove_units` -- a ``Type=oneshot``
  service and its timer.
* :func:`serve` -- the foreground loop: wait for the next time, run the retune, log, repeat;
  clock, sleep and runner are injectable, so tests need not wait.
* :func:`read_env_file` -- the ``KEY=VALUE`` subset that ``sh`` (cron), systemd's
  ``EnvironmentFile=`` and :func:`serve` all read the same way.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import shlex
import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta, tzinfo
from pathlib import Path

from orchestrator.core.errors import OrchestratorError, UsageError

__all__ = [
    "DEFAULT_CRON",
    "CronError",
    "CronSchedule",
    "EnvFileError",
    "Job",
    "RetuneRunner",
    "cron_block",
    "install_cron",
    "on_calendar",
    "parse_cron",
    "randomized_delay",
    "read_env_file",
    "remove_block",
    "remove_units",
    "serve",
    "systemd_units",
    "uninstall_cron",
    "write_units",
]

#: nightly at 02:30 local time
DEFAULT_CRON = "30 2 * * *"

SHORTHANDS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}

MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
WEEKDAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
#: systemd's weekday names, indexed like cron (0 = Sunday)
SYSTEMD_DAYS = ("Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat")

#: (name, low, high) of the five fields; day-of-week 7 is Sunday, like 0
FIELDS = (
    ("minute", 0, 59),
    ("hour", 0, 23),
    ("day-of-month", 1, 31),
    ("month", 1, 12),
    ("day-of-week", 0, 7),
)

#: how far :meth:`CronSchedule.next_after` looks: 29 years hold every calendar there is
SEARCH_DAYS = 366 * 29


class CronError(UsageError):
    """An invalid cron expression; the message names the field (``minute field '61' out of
    range 0-59``)."""


class EnvFileError(UsageError):
    """An env file that sh and systemd would read differently, or not at all. The message names
    the file, the line and the key, never a value."""


# -- cron expressions ----------------------------------------------------------------------


@dataclass(frozen=True)
class CronSchedule:
    """A parsed cron expression: the matching values of each field (day-of-week 0-6, Sunday 0)
    and whether each day field was unrestricted (started with ``*``), which decides cron's
    day rule."""

    expression: str
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]
    days_star: bool
    weekdays_star: bool

    def day_matches(self, day: date) -> bool:
        if day.month not in self.months:
            return False
        dom = day.day in self.days
        dow = day.isoweekday() % 7 in self.weekdays
        if self.days_star or self.weekdays_star:
            return dom and dow
        return dom or dow

    def matches(self, when: datetime) -> bool:
        return (
            when.minute in self.minutes
            and when.hour in self.hours
            and self.day_matches(when.date())
        )

    def next_after(self, when: datetime) -> datetime:
        """The first matching minute strictly after ``when`` (wall-clock time; a time zone, if
        any, is kept but not used)."""
        start = when.replace(second=0, microsecond=0) + timedelta(minutes=1)
        hours = sorted(self.hours)
        minutes = sorted(self.minutes)
        day = start.date()
        for _ in range(SEARCH_DAYS):
            if self.day_matches(day):
                first = day == start.date()
                for hour in hours:
                    if first and hour < start.hour:
                        continue
                    floor = start.minute if first and hour == start.hour else 0
                    minute = next((m for m in minutes if m >= floor), None)
                    if minute is not None:
                        return start.replace(
                            year=day.year, month=day.month, day=day.day, hour=hour, minute=minute
                        )
            day += timedelta(days=1)
        raise CronError(f"{self.expression!r} never runs (no date matches its day fields)")

    def upcoming(self, when: datetime, n: int) -> list[datetime]:
        """The next ``n`` run times after ``when``."""
        times: list[datetime] = []
        for _ in range(n):
            when = self.next_after(when)
            times.append(when)
        return times


def _value(field: str, text: str, low: int, high: int) -> int:
    names = MONTHS if field == "month" else WEEKDAYS if field == "day-of-week" else ()
    lowered = text.lower()
    if lowered in names:
        return names.index(lowered) + (1 if field == "month" else 0)
    if not text.isascii() or not text.isdigit():
        what = {"month": " or a month name (jan-dec)", "day-of-week": " or a day name (sun-sat)"}
        raise CronError(f"{field} field {text!r} is not a number{what.get(field, '')}")
    number = int(text)
    if not low <= number <= high:
        raise CronError(f"{field} field {text!r} out of range {low}-{high}")
    return number


def _field(field: str, text: str, low: int, high: int) -> frozenset[int]:
    values: set[int] = set()
    for item in text.split(","):
        base, slash, step_text = item.partition("/")
        step = 1
        if slash:
            if not step_text.isascii() or not step_text.isdigit():
                raise CronError(f"{field} field {item!r}: the step must be a number")
            step = int(step_text)
            if not 1 <= step <= high:
                raise CronError(f"{field} field {item!r}: the step must be 1-{high}")
        if base == "*":
            first, last = low, high
        elif "-" in base:
            a, _, b = base.partition("-")
            first, last = _value(field, a, low, high), _value(field, b, low, high)
            if first > last:
                raise CronError(f"{field} field {item!r}: the range goes backwards")
        elif base:
            first = _value(field, base, low, high)
            last = high if slash else first  # "5/15" is "5-59/15"
        else:
            raise CronError(f"{field} field {text!r} has an empty item")
        values.update(range(first, last + 1, step))
    if field == "day-of-week" and 7 in values:
        values = (values - {7}) | {0}
    return frozenset(values)


def parse_cron(expression: str) -> CronSchedule:
    """Parse and check a cron expression; raise :class:`CronError` naming the bad field."""
    text = " ".join(expression.split())
    if text.startswith("@"):
        if text.lower() not in SHORTHANDS:
            known = ", ".join(SHORTHANDS)
            raise CronError(f"unknown shorthand {text!r} (known: {known})")
        fields = SHORTHANDS[text.lower()].split()
    else:
        fields = text.split()
    if len(fields) != 5:
        raise CronError(
            "expected 5 fields (minute hour day-of-month month day-of-week) or a shorthand "
            f"such as @daily, got {len(fields)}"
        )
    minutes, hours, days, months, weekdays = (
        _field(name, f, lo, hi) for (name, lo, hi), f in zip(FIELDS, fields, strict=True)
    )
    schedule = CronSchedule(
        text,
        minutes,
        hours,
        days,
        months,
        weekdays,
        days_star=fields[2].startswith("*"),
        weekdays_star=fields[4].startswith("*"),
    )
    schedule.next_after(datetime(2000, 1, 1))  # raises when no date ever matches
    return schedule


# -- systemd OnCalendar --------------------------------------------------------------------


def _progression(values: list[int]) -> int | None:
    """The common step of ``values`` (sorted, at least 3) when they are evenly spaced."""
    if len(values) < 3:
        return None
    step = values[1] - values[0]
    ok = all(b - a == step for a, b in itertools.pairwise(values))
    return step if ok else None


def _component(values: frozenset[int], low: int, high: int, width: int = 2) -> str:
    """One OnCalendar component: ``*``, ``a..b``, ``a..b/s`` or a list of values and ranges."""
    if values == frozenset(range(low, high + 1)):
        return "*"
    ordered = sorted(values)

    def num(n: int) -> str:
        return str(n).zfill(width)

    step = _progression(ordered)
    if step is not None:
        first, last = ordered[0], ordered[-1]
        if step == 1:
            return f"{num(first)}..{num(last)}"
        # always bounded: systemd 252 misses the first hour of a new year with an open "0/5"
        return f"{num(first)}..{num(last)}/{step}"
    return ",".join(_runs(ordered, num, ".."))


def _runs(ordered: list[int], show: Callable[[int], str], dots: str) -> list[str]:
    """Consecutive runs of three or more as ranges, the rest one by one."""
    parts: list[str] = []
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and ordered[j + 1] == ordered[j] + 1:
            j += 1
        if j - i >= 2:
            parts.append(f"{show(ordered[i])}{dots}{show(ordered[j])}")
        else:
            parts.extend(show(n) for n in ordered[i : j + 1])
        i = j + 1
    return parts


def _weekdays(values: frozenset[int]) -> str:
    """systemd weekdays, Monday first (Sunday is 7 here, so ``Fri..Sun`` is a range)."""
    ordered = sorted(7 if d == 0 else d for d in values)
    return ",".join(_runs(ordered, lambda d: SYSTEMD_DAYS[d % 7], ".."))


def on_calendar(schedule: CronSchedule) -> list[str]:
    """The ``OnCalendar=`` values that elapse exactly when ``schedule`` runs (local time)."""
    clock = f"{_component(schedule.hours, 0, 23)}:{_component(schedule.minutes, 0, 59)}:00"
    month = _component(schedule.months, 1, 12)
    days = _component(schedule.days, 1, 31)
    all_week = schedule.weekdays == frozenset(range(7))
    if not schedule.days_star and not schedule.weekdays_star:  # cron ORs: two timers' worth
        return [f"*-{month}-{days} {clock}", f"{_weekdays(schedule.weekdays)} *-{month}-* {clock}"]
    prefix = "" if all_week else _weekdays(schedule.weekdays) + " "
    return [f"{prefix}*-{month}-{days} {clock}"]


def randomized_delay(schedule: CronSchedule) -> str:
    """``RandomizedDelaySec=``: 5 minutes, or a tenth of the shortest gap between runs when
    that is less (a minutely schedule gets 6 s)."""
    times = schedule.upcoming(datetime(2030, 1, 1), 30)
    gap = min(int((b - a).total_seconds()) for a, b in itertools.pairwise(times))
    seconds = min(300, gap // 10)
    return f"{seconds // 60}min" if seconds % 60 == 0 else f"{seconds}s"


# -- what is scheduled ---------------------------------------------------------------------


@dataclass(frozen=True)
class Job:
    """One scheduled retune. Every path is absolute; ``command`` is how ``ftsweep`` is started
    (its executable, or ``python -m orchestrator``)."""

    name: str
    spec: Path
    workdir: Path
    command: tuple[str, ...]
    schedule: CronSchedule
    report: Path | None
    env_file: Path
    env_file_required: bool
    log: Path
    lock: Path

    @classmethod
    def create(
        cls,
        name: str,
        spec: Path,
        *,
        command: Sequence[str],
        schedule: CronSchedule,
        workdir: Path,
        report: Path | None = None,
        env_file: Path | None = None,
        log: Path | None = None,
    ) -> Job:
        """Defaults: the env file ``WORKDIR/.env`` (optional), the log
        ``WORKDIR/mlruns/retune-NAME.log``, the lock ``WORKDIR/mlruns/.retune-NAME.lock``."""
        workdir = Path(os.path.abspath(workdir))
        runs = workdir / "mlruns"
        job = cls(
            name=name,
            spec=Path(os.path.abspath(spec)),
            workdir=workdir,
            command=tuple(command),
            schedule=schedule,
            report=Path(os.path.abspath(report)) if report is not None else None,
            env_file=Path(os.path.abspath(env_file)) if env_file else workdir / ".env",
            env_file_required=env_file is not None,
            log=Path(os.path.abspath(log)) if log is not None else runs / f"retune-{name}.log",
            lock=runs / f".retune-{name}.lock",
        )
        for path in (job.spec, job.workdir, job.env_file, job.log, job.report, *job.command):
            if path is not None and re.search(r"[\x00-\x1f\x7f]", str(path)):
                raise UsageError(f"{printable(str(path))}: control characters in a path")
        return job

    @property
    def unit(self) -> str:
        return f"ftsweep-retune-{self.name}"

    def argv(self) -> list[str]:
        """The retune command line: ``ftsweep retune SPEC [--report PATH]``."""
        report = ["--report", str(self.report)] if self.report is not None else []
        return [*self.command, "retune", str(self.spec), *report]


def printable(text: str) -> str:
    return re.sub(r"[\x00-\x1f\x7f]", "?", text)


# -- cron ----------------------------------------------------------------------------------


def _begin(name: str) -> str:
    return f"# >>> ftsweep schedule {name} >>>"


def _end(name: str) -> str:
    return f"# <<< ftsweep schedule {name} <<<"


def _cron_quote(word: str) -> str:
    """A shell word for a crontab: cron turns an unescaped ``%`` into a newline."""
    return shlex.quote(word).replace("%", "\\%")


def cron_block(job: Job) -> str:
    """The crontab entry: a marker comment, the line, an end marker (each ending in a newline).

    The line changes to the work directory (so the embedded stores under ``mlruns/`` are the
    sweep's), reads the env file into the environment, runs the retune under ``flock -n`` (a run
    still going makes the next one skip, exit 75, and say so) and appends everything to the log.
    """
    q = _cron_quote
    env = q(str(job.env_file))
    if job.env_file_required:
        source = f"set -a && . {env} && set +a && "
    else:
        source = f"{{ [ ! -f {env} ] || {{ set -a; . {env}; set +a; }}; }} && "
    folders = sorted({str(job.log.parent), str(job.lock.parent)})
    stamp = f'echo "$(date -Iseconds) ftsweep schedule {job.name}:'
    command = (
        f"cd {q(str(job.workdir))} && mkdir -p {' '.join(q(f) for f in folders)} && "
        f"{{ PATH={q(str(Path(job.command[0]).parent))}:/usr/local/bin:/usr/bin:/bin && "
        f'{source}{stamp} start" && '
        f"flock -n -E 75 {q(str(job.lock))} {' '.join(q(a) for a in job.argv())}; rc=$?; "
        f'[ $rc -ne 75 ] || {stamp} skipped, the last retune still runs"; '
        f'{stamp} exit $rc"; }} >> {q(str(job.log))} 2>&1'
    )
    return (
        f"{_begin(job.name)}\n"
        f"# retune {printable(str(job.spec))} (managed by `ftsweep schedule`)\n"
        f"{job.schedule.expression} {command}\n"
        f"{_end(job.name)}\n"
    )


def remove_block(crontab: str, name: str) -> tuple[str, bool]:
    """``crontab`` without the sweep's entry, and whether there was one."""
    lines = crontab.splitlines(keepends=True)
    begin, end = _begin(name), _end(name)
    kept: list[str] = []
    found = inside = False
    for line in lines:
        stripped = line.rstrip("\n")
        if stripped == begin:
            if inside:
                break
            found = inside = True
        elif stripped == end and inside:
            inside = False
        elif not inside:
            kept.append(line)
    if inside:
        raise OrchestratorError(
            f"the crontab has the start marker of {name!r} but not its end marker: "
            "fix it with `crontab -e`"
        )
    return "".join(kept), found


def _crontab(crontab: str, args: list[str], text: str | None = None) -> str:
    try:
        proc = subprocess.run(
            [crontab, *args], input=text, capture_output=True, text=True, timeout=60, check=False
        )
    except FileNotFoundError:
        raise OrchestratorError(
            f"{crontab} is not installed (Debian: apt-get install cron); "
            "or use --kind systemd, or --serve"
        ) from None
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise OrchestratorError(f"{crontab} {' '.join(args)} failed: {exc}") from None
    if proc.returncode != 0:
        if args == ["-l"] and "no crontab" in proc.stderr.lower():
            return ""
        why = printable(proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "")
        raise OrchestratorError(
            f"{crontab} {' '.join(args)} failed (exit {proc.returncode}){': ' + why if why else ''}"
        )
    return proc.stdout


def install_cron(job: Job, crontab: str = "crontab") -> bool:
    """Add the job's entry to the user's crontab, replacing the previous one for this sweep in
    place. Returns whether one was replaced."""
    current = _crontab(crontab, ["-l"])
    if current and not current.endswith("\n"):
        current += "\n"
    block = cron_block(job)
    begin = _begin(job.name)
    replaced = any(line == begin for line in current.splitlines())
    if replaced:
        at = current.splitlines(keepends=True).index(begin + "\n")
        rest, _ = remove_block(current, job.name)
        kept = rest.splitlines(keepends=True)
        new = "".join(kept[:at]) + block + "".join(kept[at:])
    else:
        new = current + block
    _crontab(crontab, ["-"], new)
    return replaced


def uninstall_cron(name: str, crontab: str = "crontab") -> bool:
    """Remove the sweep's entry from the user's crontab; returns whether there was one."""
    current = _crontab(crontab, ["-l"])
    rest, found = remove_block(current, name)
    if found:
        _crontab(crontab, ["-"], rest)
    return found


# -- systemd -------------------------------------------------------------------------------


def _unit_path(path: Path) -> str:
    """A path in a unit file setting: ``%`` starts a specifier."""
    return str(path).replace("%", "%%")


def _exec_word(word: str) -> str:
    """One ``ExecStart=`` argument: quoted when needed; ``%`` and ``$`` escaped."""
    word = word.replace("%", "%%").replace("$", "$$")
    if re.fullmatch(r"[A-Za-z0-9_@%+=:,./-]+", word):
        return word
    return '"' + word.replace("\\", "\\\\").replace('"', '\\"') + '"'


def systemd_units(job: Job) -> dict[str, str]:
    """``{file name: text}``: the oneshot service and the timer that starts it. Neither holds a
    secret: variables come from ``EnvironmentFile=`` (optional when it is the default
    ``WORKDIR/.env``)."""
    env_file = ("" if job.env_file_required else "-") + _unit_path(job.env_file)
    service = (
        f"# Written by `ftsweep schedule` for the sweep {job.name} ({printable(str(job.spec))}).\n"
        "# No secrets here: they belong in the EnvironmentFile (KEY=VALUE lines, chmod 600).\n"
        "[Unit]\n"
        f"Description=ftsweep retune of the sweep {job.name}\n"
        "\n"
        "[Service]\n"
        "Type=oneshot\n"
        f"WorkingDirectory={_unit_path(job.workdir)}\n"
        f"EnvironmentFile={env_file}\n"
        f"ExecStart={' '.join(_exec_word(a) for a in job.argv())}\n"
        "# a retune takes as long as its trials; stopping it is like Ctrl-C (its jobs re-attach)\n"
        "TimeoutStartSec=infinity\n"
        "KillSignal=SIGINT\n"
    )
    calendars = "".join(f"OnCalendar={c}\n" for c in on_calendar(job.schedule))
    timer = (
        f"# Written by `ftsweep schedule` for the sweep {job.name}: "
        f"cron '{job.schedule.expression}'\n"
        "[Unit]\n"
        f"Description=Scheduled ftsweep retune of the sweep {job.name}\n"
        "\n"
        "[Timer]\n"
        f"{calendars}"
        "Persistent=true\n"
        f"RandomizedDelaySec={randomized_delay(job.schedule)}\n"
        f"Unit={job.unit}.service\n"
        "\n"
        "[Install]\n"
        "WantedBy=timers.target\n"
    )
    return {f"{job.unit}.service": service, f"{job.unit}.timer": timer}


def write_units(units: Mapping[str, str], unit_dir: Path) -> list[Path]:
    """Write the unit files into ``unit_dir`` (created), each replaced atomically."""
    unit_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in units.items():
        path = unit_dir / name
        tmp = unit_dir / f".{name}.tmp"
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
        written.append(path)
    return written


def remove_units(unit: str, unit_dir: Path) -> list[Path]:
    """Remove the service, the timer and the timer's ``timers.target.wants`` link (what
    ``systemctl --user disable`` would remove); returns what was there."""
    removed = []
    for path in (
        unit_dir / "timers.target.wants" / f"{unit}.timer",
        unit_dir / f"{unit}.timer",
        unit_dir / f"{unit}.service",
    ):
        if path.is_symlink() or path.exists():
            path.unlink()
            removed.append(path)
    return removed


# -- env files -----------------------------------------------------------------------------

_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
#: unquoted values that sh and systemd read alike
_PLAIN = re.compile(r"[A-Za-z0-9_./:@%+,=-]*")


def read_env_file(path: Path) -> dict[str, str]:
    """Read ``KEY=VALUE`` lines (``#`` comments, blank lines; a value plain or in single quotes,
    or in double quotes without ``$``, backquotes or backslashes): the subset that ``sh``
    (which cron uses to source it) and systemd's ``EnvironmentFile=`` agree on."""
    shown = printable(str(path))
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise EnvFileError(f"{shown}: cannot read the env file: {why}") from None
    values: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, eq, value = line.partition("=")
        where = f"{shown}:{number}"
        if key.startswith("export "):
            raise EnvFileError(f"{where}: write KEY=VALUE without 'export' (systemd reads none)")
        if not eq or not _KEY.fullmatch(key):
            raise EnvFileError(f"{where}: not a KEY=VALUE line")
        quoted = len(value) >= 2 and value[0] == value[-1] in "'\""
        inner = value[1:-1]
        if quoted and not re.search(r"'" if value[0] == "'" else r'["$`\\]', inner):
            value = inner
        elif not _PLAIN.fullmatch(value):
            raise EnvFileError(
                f"{where}: {key}: put the value in single quotes: it has characters that sh and "
                "systemd read differently"
            )
        values[key] = value
    return values


# -- the foreground loop -------------------------------------------------------------------

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
    """``(acquired, fd)``: an exclusive non-blocking ``flock`` on ``path`` (the lock the crontab
    line takes too); ``(True, None)`` without a path."""
    if path is None:
        yield True, None
        return
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False, None
            return
        yield True, fd
    finally:
        os.close(fd)


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
    Times are wall-clock in ``tz`` (None: local time, like cron). ``clock`` and ``sleep``
    default to :data:`CLOCK` and :data:`SLEEP`, read at the call (tests of the CLI swap those).
    """
    clock = clock or CLOCK
    sleep = sleep or SLEEP

    def wall(t: float) -> datetime:
        return datetime.fromtimestamp(t, tz).replace(tzinfo=None)

    def epoch(w: datetime) -> float:
        return w.replace(tzinfo=tz).timestamp() if tz is not None else w.timestamp()

    def stamp(t: float) -> str:
        return datetime.fromtimestamp(t, tz).astimezone(tz).strftime("%Y-%m-%d %H:%M:%S%z")

    def say(text: str) -> None:
        log(f"{stamp(clock())} {text}")

    started = 0
    while max_runs is None or started < max_runs:
        now = clock()
        due_wall = schedule.next_after(wall(now))
        due = epoch(due_wall)
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
        while missed < 1000 and epoch(probe := schedule.next_after(probe)) <= end:
            missed += 1
        if missed:
            say(f"missed {missed} scheduled time(s) while it ran (runs never overlap)")
    return started

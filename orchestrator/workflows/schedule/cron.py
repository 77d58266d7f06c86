"""Cron expressions: checked here (one-line errors naming the field), evaluated by ``cronsim``.

:func:`parse_cron` checks a standard 5-field expression (numbers, ``*``, lists, ranges, steps,
month and weekday names, the ``@daily``-style shorthands) and returns a :class:`CronSchedule`:
its fields as sets and its next run times. The times come from `cronsim
<https://pypi.org/project/cronsim/>`_, which follows Debian's cron: when both day fields are
restricted (neither starts with ``*``) a day matches when EITHER matches, otherwise both must;
across a daylight-saving change (an aware start time) a time skipped by a spring-forward runs
at the change, and one repeated by a fall-back runs once. cronsim also reads extensions
(``L``, ``#``, seconds) that cron does not: the check here refuses them first.

:func:`on_calendar` writes the same schedule as systemd ``OnCalendar=`` values (systemd ANDs the
weekday with the date, so cron's OR becomes two values: a timer elapses on either).
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, tzinfo

from orchestrator.core.errors import UsageError

__all__ = [
    "DEFAULT_CRON",
    "SHORTHANDS",
    "CronError",
    "CronSchedule",
    "local_zone",
    "on_calendar",
    "parse_cron",
    "randomized_delay",
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


class CronError(UsageError):
    """An invalid cron expression; the message names the field (``minute field '61' out of
    range 0-59``)."""


@dataclass(frozen=True)
class CronSchedule:
    """A checked cron expression: the matching values of each field (day-of-week 0-6,
    Sunday 0), whether each day field was unrestricted (started with ``*``, which decides
    cron's day rule), and ``fields``, the five fields cronsim evaluates (a shorthand
    spelled out)."""

    expression: str
    fields: str
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]
    days_star: bool
    weekdays_star: bool

    def next_after(self, when: datetime) -> datetime:
        """The first run strictly after ``when``. A naive ``when`` is wall-clock time (no
        daylight saving); an aware one (a :class:`zoneinfo.ZoneInfo`) follows its zone's
        changes as Debian's cron does, and the result is aware too."""
        from cronsim import CronSim

        runs = CronSim(self.fields, when)
        try:
            found = next(runs)
            # after a fall-back, the wall time just passed comes again: cron runs it once
            while when.tzinfo is not None and found.timestamp() <= when.timestamp():
                found = next(runs)
        except StopIteration:
            raise CronError(
                f"{self.expression!r} never runs (no date matches its day fields)"
            ) from None
        return found

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


def _check_field(field: str, text: str, low: int, high: int) -> None:
    """Refuse what cron would refuse, naming the field and the item; cronsim, which reads
    more than cron, only gets what passes."""
    for item in text.split(","):
        base, slash, step = item.partition("/")
        if slash:
            if not step.isascii() or not step.isdigit():
                raise CronError(f"{field} field {item!r}: the step must be a number")
            if not 1 <= int(step) <= high:
                raise CronError(f"{field} field {item!r}: the step must be 1-{high}")
        if base == "*":
            continue
        if "-" in base:
            a, _, b = base.partition("-")
            if _value(field, a, low, high) > _value(field, b, low, high):
                raise CronError(f"{field} field {item!r}: the range goes backwards")
        elif base:
            _value(field, base, low, high)
        else:
            raise CronError(f"{field} field {text!r} has an empty item")


def parse_cron(expression: str) -> CronSchedule:
    """Parse and check a cron expression; raise :class:`CronError` naming the bad field, or
    saying that it never runs (``0 0 30 2 *``)."""
    from cronsim import CronSim, CronSimError

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
    for (name, low, high), field in zip(FIELDS, fields, strict=True):
        _check_field(name, field, low, high)
    never = CronError(f"{text!r} never runs (no date matches its day fields)")
    try:
        sim = CronSim(" ".join(fields), datetime(2000, 1, 1))
    except CronSimError:  # what passed the check: only days no month has (31 in February)
        raise never from None
    weekdays = frozenset(d % 7 for d in sim.weekdays if isinstance(d, int))
    schedule = CronSchedule(
        text,
        " ".join(fields),
        frozenset(sim.minutes),
        frozenset(sim.hours),
        frozenset(sim.days),
        frozenset(sim.months),
        weekdays,
        days_star=fields[2].startswith("*"),
        weekdays_star=fields[4].startswith("*"),
    )
    schedule.next_after(datetime(2000, 1, 1))  # raises when no date ever matches
    return schedule


def local_zone() -> tzinfo | None:
    """The local time zone with its daylight-saving rules, as cron reads it: ``TZ`` (a zone
    name such as ``Europe/Berlin``), else ``/etc/localtime``. None when neither names one
    (then times are naive local wall-clock time)."""
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    name = os.environ.get("TZ")
    try:
        if name is not None:
            return ZoneInfo(name.removeprefix(":")) if name.strip(":") else None
        with open("/etc/localtime", "rb") as f:
            return ZoneInfo.from_file(f, key="localtime")
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return None


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

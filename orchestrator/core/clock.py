""" "Now" and "today" for the rules that depend on the date (provider deadlines, shutdowns).

One function answers for the whole package, so a test (or a user rehearsing a deadline) can
set the date once: ``FTSWEEP_NOW`` (an ISO date, ``2027-01-07``, or date-time,
``2027-01-07T09:30:00Z``; a date-time without a zone is UTC) replaces the system clock for
these rules. A testing aid: the engine's timers, heartbeats and MLflow timestamps keep the
real clock.
"""

from __future__ import annotations

import datetime
import os

from orchestrator.core.errors import UsageError

__all__ = ["NOW_ENV", "now", "today"]

#: the environment variable that sets the date the deadline rules see
NOW_ENV = "FTSWEEP_NOW"


def now() -> datetime.datetime:
    """The current time, in UTC: ``FTSWEEP_NOW`` when set, else the system clock. A value
    that is not an ISO date or date-time is a :class:`UsageError` naming the variable."""
    given = os.environ.get(NOW_ENV, "").strip()
    if not given:
        return datetime.datetime.now(datetime.UTC)
    try:
        if len(given) == 10:
            day = datetime.date.fromisoformat(given)
            moment = datetime.datetime(day.year, day.month, day.day, tzinfo=datetime.UTC)
        else:
            moment = datetime.datetime.fromisoformat(given)
    except ValueError:
        raise UsageError(
            f"{NOW_ENV}={given[:40]!r}: expected an ISO date (2027-01-07) or date-time "
            "(2027-01-07T09:30:00Z)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return moment.astimezone(datetime.UTC)


def today() -> datetime.date:
    """The current day in UTC (:func:`now`'s date)."""
    return now().date()

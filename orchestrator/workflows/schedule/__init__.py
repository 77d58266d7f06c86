"""Scheduling ``ftsweep retune``: cron expressions, crontab lines, systemd units, a foreground loop.

Nothing here prints or exits; the CLI (:mod:`orchestrator.cli.schedule`) does. The parts:

* :mod:`~.cron` -- :func:`parse_cron` checks a standard 5-field cron expression (one-line
  errors naming the field) and gives a :class:`CronSchedule`, whose next times come from
  ``cronsim`` (Debian cron's day rule and daylight-saving behaviour);
  :func:`on_calendar` writes it as systemd ``OnCalendar=`` values.
* :mod:`~.jobs` -- :class:`Job`, one sweep's scheduled retune, and :func:`read_env_file`, the
  ``KEY=VALUE`` subset that ``sh`` (cron), systemd's ``EnvironmentFile=`` and :func:`serve`
  all read the same way.
* :mod:`~.install` -- :func:`cron_block` / :func:`install_cron` / :func:`uninstall_cron` (a
  crontab entry between marker comments) and :func:`systemd_units` / :func:`write_units` /
  :func:`remove_units` (a ``Type=oneshot`` service and its timer).
* :mod:`~.loop` -- :func:`serve`, the foreground loop: wait for the next time, run the
  retune, log, repeat; clock, sleep and runner are injectable, so tests need not wait.
"""

from __future__ import annotations

from orchestrator.workflows.schedule.cron import (
    DEFAULT_CRON,
    CronError,
    CronSchedule,
    on_calendar,
    parse_cron,
    randomized_delay,
)
from orchestrator.workflows.schedule.install import (
    cron_block,
    install_cron,
    remove_block,
    remove_units,
    systemd_units,
    uninstall_cron,
    write_units,
)
from orchestrator.workflows.schedule.jobs import EnvFileError, Job, read_env_file
from orchestrator.workflows.schedule.loop import RetuneRunner, serve

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

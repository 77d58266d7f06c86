"""What is scheduled: a :class:`Job` (one sweep's retune, every path absolute) and the env file
its scheduled runs read.

:func:`read_env_file` reads the ``KEY=VALUE`` subset that ``sh`` (cron), systemd's
``EnvironmentFile=`` and the ``--serve`` loop all read the same way.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from orchestrator.core.errors import UsageError
from orchestrator.workflows.schedule.cron import CronSchedule

__all__ = ["EnvFileError", "Job", "printable", "read_env_file"]


class EnvFileError(UsageError):
    """An env file that sh and systemd would read differently, or not at all. The message names
    the file, the line and the key, never a value."""


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
    """``text`` (a path, a command's message) with control characters shown as ``?``: one
    line in a log, a crontab comment or a unit file."""
    return re.sub(r"[\x00-\x1f\x7f]", "?", text)


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

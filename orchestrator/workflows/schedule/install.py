"""Installing a :class:`~orchestrator.workflows.schedule.jobs.Job`: a crontab entry or systemd
units.

* :func:`cron_block` / :func:`install_cron` / :func:`uninstall_cron` -- a crontab entry
  between marker comments, added, replaced or removed through ``crontab -l`` / ``crontab -``.
  Its line runs the retune under ``flock -n`` on the job's lock, the lock the ``--serve`` loop
  takes too (:func:`orchestrator.stores.locks.try_flock`).
* :func:`systemd_units` / :func:`write_units` / :func:`remove_units` -- a ``Type=oneshot``
  service and its timer (``OnCalendar=`` from :func:`~.cron.on_calendar`).
"""

from __future__ import annotations

import re
import shlex
import subprocess
from collections.abc import Mapping
from pathlib import Path

from orchestrator.core.errors import OrchestratorError
from orchestrator.workflows.schedule.cron import on_calendar, randomized_delay
from orchestrator.workflows.schedule.jobs import Job, printable

__all__ = [
    "cron_block",
    "install_cron",
    "remove_block",
    "remove_units",
    "systemd_units",
    "uninstall_cron",
    "write_units",
]


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

"""``ftsweep schedule``: run ``ftsweep retune`` on a schedule (crontab, systemd timer, or in the
foreground for containers).

Programs and paths it uses can be swapped (tests do): ``FTSWEEP_CRONTAB`` (the ``crontab``
program), ``FTSWEEP_SYSTEMCTL`` (``systemctl``), ``XDG_CONFIG_HOME`` (where user units go), and,
for ``--serve`` only, ``FTSWEEP_SCHEDULE_COMMAND`` (a command line run instead of
``ftsweep retune``, for tests).
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from orchestrator.cli.common import SpecArg
from orchestrator.cli.output import out

if TYPE_CHECKING:
    from orchestrator.workflows.schedule import Job

__all__ = ["register"]

KINDS = ("cron", "systemd")

#: variables ftsweep reads that a scheduled run does not inherit from the shell
SCHEDULED_VARIABLES = (
    "OPENAI_API_KEY",
    "OPENAI_BASE_URL",
    "AZURE_OPENAI_API_KEY",
    "AZURE_OPENAI_ENDPOINT",
    "OPENAI_API_VERSION",
    "MLFLOW_TRACKING_URI",
    "MLFLOW_TRACKING_USERNAME",
    "MLFLOW_TRACKING_PASSWORD",
    "MLFLOW_TRACKING_TOKEN",
    "FTSWEEP_OPTUNA_STORAGE",
    "FTSWEEP_RUNS_DIR",
    "FTSWEEP_HOME",
    "HF_TOKEN",
)


class _Terminated(Exception):
    """SIGTERM arrived (``docker stop``): stop serving, exit 0."""


def _ftsweep_command() -> list[str]:
    """How to start the ``ftsweep`` that is running now: its script (``sys.argv[0]``), the one
    beside this Python, the one on PATH, or ``python -m orchestrator``."""
    argv0 = sys.argv[0]
    if Path(argv0).name == "ftsweep" and os.path.isfile(argv0) and os.access(argv0, os.X_OK):
        return [os.path.abspath(argv0)]
    beside = Path(sys.executable).parent / "ftsweep"
    if beside.is_file() and os.access(beside, os.X_OK):
        return [os.path.abspath(beside)]
    found = shutil.which("ftsweep")
    if found:
        return [os.path.abspath(found)]
    return [os.path.abspath(sys.executable), "-m", "orchestrator"]


def _unit_dir() -> Path:
    config = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(config) / "systemd" / "user"


def _systemctl(args: list[str]) -> subprocess.CompletedProcess[str] | None:
    """Run ``systemctl --user ARGS``; None when there is no systemctl or no user manager."""
    program = os.environ.get("FTSWEEP_SYSTEMCTL") or "systemctl"
    try:
        return subprocess.run(
            [program, "--user", *args], capture_output=True, text=True, timeout=60, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None


def _systemd_reachable() -> bool:
    probe = _systemctl(["show-environment"])
    return probe is not None and probe.returncode == 0


def _warn_about_environment(job: Job) -> None:
    """Name (never show) the variables set here that the scheduled run would not get."""
    from orchestrator.workflows.schedule import read_env_file

    in_file: set[str] = set()
    if job.env_file.is_file():
        in_file = set(read_env_file(job.env_file))
        mode = job.env_file.stat().st_mode
        if mode & 0o077:
            out.warn(f"{job.env_file} is readable by other users: chmod 600 {job.env_file}")
    missing = [v for v in SCHEDULED_VARIABLES if os.environ.get(v) and v not in in_file]
    if missing:
        out.warn(
            f"{', '.join(missing)} set here but not in {job.env_file}: the scheduled run "
            "will not see them (put KEY=VALUE lines there, or pass --env-file)"
        )


def _upcoming(job: Job, n: int = 3) -> str:
    from orchestrator.workflows.schedule.cron import local_zone

    times = job.schedule.upcoming(datetime.now(local_zone()), n)
    return ", ".join(t.strftime("%a %Y-%m-%d %H:%M") for t in times)


def _serve(job: Job, max_runs: int | None) -> None:
    from orchestrator.workflows.schedule import RetuneRunner, read_env_file, serve

    env = dict(os.environ)
    if job.env_file_required or job.env_file.is_file():
        env.update(read_env_file(job.env_file))
    argv = job.argv()
    fake = os.environ.get("FTSWEEP_SCHEDULE_COMMAND")
    if fake:  # tests: run this instead of `ftsweep retune`
        argv = [*shlex.split(fake), *argv[len(job.command) + 1 :]]
    runner = RetuneRunner(argv, job.workdir, env)

    def on_term(signum: int, frame: Any) -> None:
        raise _Terminated

    def log(line: str) -> None:
        out.info(f"{line} [ftsweep schedule {job.name}]")

    previous = signal.signal(signal.SIGTERM, on_term)
    # Ctrl-C stops it even when started in the background of a shell script, which starts
    # it with SIGINT ignored (and Python then leaves it so)
    previous_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        out.info(
            f"ftsweep schedule {job.name}: cron '{job.schedule.expression}', runs "
            f"{shlex.join(argv)} in {job.workdir} (Ctrl-C exits 130, SIGTERM exits 0)"
        )
        serve(job.schedule, runner, log=log, what="retune", lock=job.lock, max_runs=max_runs)
    except _Terminated:
        out.info(f"ftsweep schedule {job.name}: stopped (SIGTERM)")
    finally:
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, previous_int)


def _install_systemd(job: Job, unit_dir: Path | None) -> None:
    from orchestrator.workflows.schedule import systemd_units, write_units

    default = _unit_dir()
    folder = unit_dir if unit_dir is not None else default
    written = write_units(systemd_units(job), folder)
    out.info(f"wrote {', '.join(str(p) for p in written)}")
    timer = f"{job.unit}.timer"
    enable = f"systemctl --user daemon-reload && systemctl --user enable --now {timer}"
    if os.path.abspath(folder) != os.path.abspath(default):
        files = " ".join(shlex.quote(str(p)) for p in written)
        out.info(f"to use them: systemctl --user link {files} && {enable}")
        return
    if not _systemd_reachable():
        out.info(f"systemd is not reachable here: to start the timer, run: {enable}")
        return
    for args in (["daemon-reload"], ["enable", "--now", timer]):
        done = _systemctl(args)
        if done is None or done.returncode != 0:
            why = (done.stderr.strip().splitlines() or [""])[-1] if done is not None else ""
            from orchestrator.core.errors import OrchestratorError

            raise OrchestratorError(f"systemctl --user {' '.join(args)} failed: {why}")
    out.info(f"enabled {timer}; see it with: systemctl --user list-timers {timer}")


def _uninstall_systemd(job: Job, unit_dir: Path | None) -> None:
    from orchestrator.workflows.schedule import remove_units

    default = _unit_dir()
    folder = unit_dir if unit_dir is not None else default
    timer = f"{job.unit}.timer"
    is_default = os.path.abspath(folder) == os.path.abspath(default)
    reachable = is_default and (folder / timer).exists() and _systemd_reachable()
    if reachable:
        _systemctl(["disable", "--now", timer])
    removed = remove_units(job.unit, folder)
    if not removed:
        out.info(f"no units of {job.name} in {folder}: nothing to remove")
        return
    out.info(f"removed {', '.join(str(p) for p in removed)}")
    if reachable:
        _systemctl(["daemon-reload"])
    else:
        out.info(f"where systemd runs, also run: systemctl --user stop {timer}; "
                 "systemctl --user daemon-reload")  # fmt: skip


def schedule(
    spec: SpecArg,
    print_: Annotated[
        bool, typer.Option("--print", help="Print what --install would write (stdout).")
    ] = False,
    install: Annotated[
        bool, typer.Option("--install", help="Add it to the crontab, or write the units.")
    ] = False,
    uninstall: Annotated[
        bool, typer.Option("--uninstall", help="Remove what --install added.")
    ] = False,
    serve: Annotated[
        bool,
        typer.Option("--serve", help="Run in the foreground instead (containers); logs to stderr."),
    ] = False,
    kind: Annotated[
        str | None,
        typer.Option("--kind", help="cron (a crontab line, the default) or systemd (units)."),
    ] = None,
    cron: Annotated[
        str,
        typer.Option(
            "--cron",
            metavar="EXPR",
            help="When: 5 cron fields or @hourly/@daily/@weekly/@monthly, local time.",
        ),
    ] = "30 2 * * *",
    report: Annotated[
        Path | None, typer.Option("--report", help="Passed on: ftsweep retune --report PATH.")
    ] = None,
    env_file: Annotated[
        Path | None,
        typer.Option(
            "--env-file",
            help="KEY=VALUE file with the run's variables and secrets [default: WORKDIR/.env, "
            "if it exists].",
        ),
    ] = None,
    workdir: Annotated[
        Path | None,
        typer.Option(
            "--workdir",
            help="Where the retune runs: the folder whose mlruns/ holds the sweep's stores "
            "[default: the current folder].",
        ),
    ] = None,
    log: Annotated[
        Path | None,
        typer.Option(
            "--log", help="cron: append output here [default: WORKDIR/mlruns/retune-NAME.log]."
        ),
    ] = None,
    unit_dir: Annotated[
        Path | None,
        typer.Option(
            "--unit-dir", help="systemd: write the units here [default: ~/.config/systemd/user]."
        ),
    ] = None,
    max_runs: Annotated[int | None, typer.Option("--max-runs", min=1, hidden=True)] = None,
) -> None:
    """Run `ftsweep retune SPEC` on a schedule: a crontab line, a systemd timer, or --serve.

    Choose one action: --print (show it), --install (crontab entry, or systemd units), --uninstall,
    or --serve (stay in the foreground: for a container). The default schedule is nightly at
    02:30 local time. The retune runs in WORKDIR (so `mlruns/` is the sweep's), with the
    variables of the env file (default WORKDIR/.env; KEY=VALUE lines, plain or 'single-quoted'
    values): cron and systemd pass nothing of your shell on. cron output goes to the --log
    file, a run still going makes the next one skip (flock); systemd logs to the journal.
    A missing crontab program is an error (exit 1). With --serve, Ctrl-C exits 130 and SIGTERM
    exits 0.

    \b
    Example: ftsweep schedule sweeps/nightly.yaml --print
    Example: ftsweep schedule sweeps/nightly.yaml --install --kind systemd --cron '0 3 * * 1-5'
    Example: ftsweep schedule sweeps/nightly.yaml --serve --report reports/nightly.json
    """
    from orchestrator.config import load_spec
    from orchestrator.core.errors import UsageError
    from orchestrator.workflows.schedule import (
        CronError,
        Job,
        cron_block,
        install_cron,
        parse_cron,
        read_env_file,
        systemd_units,
        uninstall_cron,
    )

    actions = [n for n, on in (("--print", print_), ("--install", install),
                               ("--uninstall", uninstall), ("--serve", serve)) if on]  # fmt: skip
    if len(actions) != 1:
        raise UsageError("choose one of --print, --install, --uninstall or --serve")
    if kind is not None and kind not in KINDS:
        raise UsageError(f"--kind must be cron or systemd, not {kind!r}")
    if serve and kind is not None:
        raise UsageError("--kind does not apply to --serve (it runs in the foreground)")
    chosen = kind or "cron"
    if log is not None and (serve or chosen != "cron"):
        raise UsageError("--log is for --kind cron (systemd and --serve log elsewhere)")
    if unit_dir is not None and (serve or chosen != "systemd"):
        raise UsageError("--unit-dir is for --kind systemd")
    try:
        when = parse_cron(cron)
    except CronError as exc:
        raise UsageError(f"--cron: {exc}") from None
    sweep = load_spec(spec)  # exit 2 naming the file when it is missing or invalid
    folder = workdir if workdir is not None else Path.cwd()
    if not folder.is_dir():
        raise UsageError(f"--workdir: {folder} is not a folder")
    if env_file is not None:
        if not env_file.is_file():
            raise UsageError(f"--env-file: {env_file} is not a file")
        read_env_file(env_file)  # exit 2 at the line sh and systemd would read differently
    job = Job.create(
        sweep.name,
        spec,
        command=_ftsweep_command(),
        schedule=when,
        workdir=folder,
        report=report,
        env_file=env_file,
        log=log,
    )
    if serve:
        _serve(job, max_runs)
        return
    if uninstall:
        if chosen == "cron":
            crontab = os.environ.get("FTSWEEP_CRONTAB") or "crontab"
            found = uninstall_cron(job.name, crontab)
            out.info(f"removed the crontab entry of {job.name}" if found
                     else f"no crontab entry of {job.name}: nothing to remove")  # fmt: skip
        else:
            _uninstall_systemd(job, unit_dir)
        return
    _warn_about_environment(job)
    if print_:
        if chosen == "cron":
            out.data(cron_block(job))
        else:
            folder_shown = unit_dir if unit_dir is not None else _unit_dir()
            for name, text in systemd_units(job).items():
                out.data(f"# {folder_shown / name}\n{text}\n")
        out.info(f"next runs: {_upcoming(job)}")
        return
    if chosen == "cron":
        crontab = os.environ.get("FTSWEEP_CRONTAB") or "crontab"
        replaced = install_cron(job, crontab)
        out.info(f"{'replaced' if replaced else 'added'} the crontab entry of {job.name} "
                 f"(log: {job.log}); see it with: crontab -l")  # fmt: skip
    else:
        _install_systemd(job, unit_dir)
    out.info(f"next runs: {_upcoming(job)}")


def register(app: typer.Typer) -> None:
    app.command()(schedule)

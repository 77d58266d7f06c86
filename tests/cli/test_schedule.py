"""``ftsweep schedule``: print, install and uninstall (crontab, systemd units) and --serve.

No test touches the real crontab, home or systemd: ``FTSWEEP_CRONTAB`` and ``FTSWEEP_SYSTEMCTL``
name fakes, ``HOME`` and ``XDG_CONFIG_HOME`` point into the test's folder.
"""

from __future__ import annotations

import os
import select
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from orchestrator.workflows.schedule import loop as schedule_loop
from tests.conftest import Result
from tests.helpers import SignalledWhileCollected
from tests.test_schedule import (
    SYSTEMD_ANALYZE,
    FakeCrontab,
    FakeTime,
    _verify,
    ftsweep_executable,
    needs_systemd_analyze,
)

ROOT = Path(__file__).resolve().parents[2]
NAME = "nightly-test"
UNIT = f"ftsweep-retune-{NAME}"

Cli = Callable[..., Result]


class FakeSystemctl:
    """A ``systemctl`` that records its calls; ``reachable`` decides whether a user manager
    answers."""

    def __init__(self, tmp_path: Path, reachable: bool) -> None:
        self.calls = tmp_path / "systemctl.calls"
        self.program = tmp_path / "systemctl"
        self.program.write_text(
            "#!/bin/sh\n"
            f"echo \"$*\" >> '{self.calls}'\n"
            + ("exit 0\n" if reachable else "echo 'Failed to connect to bus' >&2; exit 1\n")
        )
        self.program.chmod(0o755)

    def called(self) -> list[str]:
        return self.calls.read_text().splitlines() if self.calls.exists() else []


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project folder with a sweep file, the current folder; a fake crontab, an unreachable
    fake systemctl, a temporary home, none of the scheduled variables set."""
    work = tmp_path / "project"
    (work / "sweeps").mkdir(parents=True)
    (work / "sweeps" / "nightly.yaml").write_text(
        f"name: {NAME}\n"
        "data: {train: ../data/train.jsonl}\n"
        "backend: {name: openai, model: gpt-4o-mini}\n"
        "objective: {metric: train_loss}\n"
        "trials: 4\n"
    )
    monkeypatch.chdir(work)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "home" / ".config"))
    monkeypatch.setenv("FTSWEEP_CRONTAB", str(FakeCrontab(tmp_path).program))
    monkeypatch.setenv("FTSWEEP_SYSTEMCTL", str(FakeSystemctl(tmp_path, False).program))
    monkeypatch.delenv("FTSWEEP_SCHEDULE_COMMAND", raising=False)
    from orchestrator.cli.schedule import SCHEDULED_VARIABLES

    for name in SCHEDULED_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(sys, "argv", [ftsweep_executable()])
    return work


def _lines(text: str) -> list[str]:
    return text.splitlines()


def test_print_cron_by_default(cli: Cli, project: Path, tmp_path: Path) -> None:
    r = cli("schedule", "sweeps/nightly.yaml", "--print")
    assert r.code == 0, r.err
    lines = _lines(r.out)
    assert lines[0] == f"# >>> ftsweep schedule {NAME} >>>"
    line = lines[2]
    assert line.startswith(f"30 2 * * * cd {project} && ")
    assert f"flock -n -E 75 {project}/mlruns/.retune-{NAME}.lock " in line
    assert f"{ftsweep_executable()} retune {project}/sweeps/nightly.yaml;" in line
    assert f"[ ! -f {project}/.env ] || {{ set -a; . {project}/.env; set +a; }}" in line
    assert line.endswith(f">> {project}/mlruns/retune-{NAME}.log 2>&1")
    assert _lines(r.err)[-1].startswith("next runs: ")
    assert all(" 02:30" in t for t in _lines(r.err)[-1].split(": ", 1)[1].split(", "))
    assert not (tmp_path / "crontab.txt").exists() and not (project / "mlruns").exists()


def test_print_systemd(cli: Cli, project: Path, tmp_path: Path) -> None:
    r = cli(
        "schedule", "sweeps/nightly.yaml", "--print", "--kind", "systemd",
        "--cron", "0 3 13 * fri", "--report", "reports/n.json",
    )  # fmt: skip
    assert r.code == 0, r.err
    units = tmp_path / "home" / ".config" / "systemd" / "user"
    assert f"# {units / UNIT}.service\n" in r.out and f"# {units / UNIT}.timer\n" in r.out
    assert f"WorkingDirectory={project}\n" in r.out
    assert f"EnvironmentFile=-{project}/.env\n" in r.out
    assert (
        f"ExecStart={ftsweep_executable()} retune {project}/sweeps/nightly.yaml "
        f"--report {project}/reports/n.json\n"
    ) in r.out
    assert "OnCalendar=*-*-13 03:00:00\nOnCalendar=Fri *-*-* 03:00:00\n" in r.out
    assert not units.exists()


@needs_systemd_analyze
def test_install_systemd_units_that_verify(cli: Cli, project: Path, tmp_path: Path) -> None:
    folder = tmp_path / "units"
    r = cli("schedule", "sweeps/nightly.yaml", "--install", "--kind", "systemd",
            "--unit-dir", folder, "--cron", "*/10 8-18 * * mon-fri")  # fmt: skip
    assert r.code == 0, r.err
    service, timer = folder / f"{UNIT}.service", folder / f"{UNIT}.timer"
    assert _lines(r.err)[0] == f"wrote {service}, {timer}"
    assert _lines(r.err)[1] == (
        f"to use them: systemctl --user link {service} {timer} && systemctl --user "
        f"daemon-reload && systemctl --user enable --now {UNIT}.timer"
    )
    assert SYSTEMD_ANALYZE is not None
    v = _verify([service, timer], tmp_path)
    assert (v.returncode, v.stdout, v.stderr) == (0, "", "")

    r = cli("schedule", "sweeps/nightly.yaml", "--uninstall", "--kind", "systemd",
            "--unit-dir", folder)  # fmt: skip
    assert r.code == 0 and not service.exists() and not timer.exists()


def test_install_systemd_where_systemd_is_not_reachable(
    cli: Cli, project: Path, tmp_path: Path
) -> None:
    r = cli("schedule", "sweeps/nightly.yaml", "--install", "--kind", "systemd")
    assert r.code == 0, r.err
    units = tmp_path / "home" / ".config" / "systemd" / "user"
    assert (units / f"{UNIT}.timer").is_file()
    assert _lines(r.err)[1] == (
        "systemd is not reachable here: to start the timer, run: systemctl --user "
        f"daemon-reload && systemctl --user enable --now {UNIT}.timer"
    )
    r = cli("schedule", "sweeps/nightly.yaml", "--uninstall", "--kind", "systemd")
    assert r.code == 0 and not (units / f"{UNIT}.timer").exists()
    assert _lines(r.err)[-1] == (
        f"where systemd runs, also run: systemctl --user stop {UNIT}.timer; "
        "systemctl --user daemon-reload"
    )
    r = cli("schedule", "sweeps/nightly.yaml", "--uninstall", "--kind", "systemd")
    assert r.code == 0 and r.err == f"no units of {NAME} in {units}: nothing to remove\n"


def test_install_systemd_enables_the_timer_when_systemd_runs(
    cli: Cli, project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakeSystemctl(tmp_path, True)  # replaces the fixture's unreachable one
    monkeypatch.setenv("FTSWEEP_SYSTEMCTL", str(fake.program))
    r = cli("schedule", "sweeps/nightly.yaml", "--install", "--kind", "systemd")
    assert r.code == 0, r.err
    assert fake.called() == [
        "--user show-environment",
        "--user daemon-reload",
        f"--user enable --now {UNIT}.timer",
    ]
    assert _lines(r.err)[1] == (
        f"enabled {UNIT}.timer; see it with: systemctl --user list-timers {UNIT}.timer"
    )
    fake.calls.unlink()
    r = cli("schedule", "sweeps/nightly.yaml", "--uninstall", "--kind", "systemd")
    assert r.code == 0, r.err
    assert fake.called() == [
        "--user show-environment",
        f"--user disable --now {UNIT}.timer",
        "--user daemon-reload",
    ]


def test_install_cron_twice_then_uninstall(cli: Cli, project: Path, tmp_path: Path) -> None:
    table = tmp_path / "crontab.txt"
    table.write_text("MAILTO=me\n")
    r = cli("schedule", "sweeps/nightly.yaml", "--install")
    assert r.code == 0, r.err
    assert _lines(r.err)[0] == (
        f"added the crontab entry of {NAME} (log: {project}/mlruns/retune-{NAME}.log); "
        "see it with: crontab -l"
    )
    r = cli("schedule", "sweeps/nightly.yaml", "--install", "--cron", "@hourly")
    assert r.code == 0 and _lines(r.err)[0].startswith(f"replaced the crontab entry of {NAME}")
    text = table.read_text()
    assert text.count(f"# >>> ftsweep schedule {NAME} >>>") == 1
    assert "\n@hourly cd " in text and text.startswith("MAILTO=me\n")
    r = cli("schedule", "sweeps/nightly.yaml", "--uninstall")
    assert (r.code, r.err) == (0, f"removed the crontab entry of {NAME}\n")
    assert table.read_text() == "MAILTO=me\n"
    r = cli("schedule", "sweeps/nightly.yaml", "--uninstall")
    assert (r.code, r.err) == (0, f"no crontab entry of {NAME}: nothing to remove\n")


def test_no_crontab_program_is_one_line_exit_1(
    cli: Cli, project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FTSWEEP_CRONTAB", str(tmp_path / "nowhere" / "crontab"))
    r = cli("schedule", "sweeps/nightly.yaml", "--install")
    assert r.code == 1
    assert r.err == (
        f"error: {tmp_path}/nowhere/crontab is not installed (Debian: apt-get install cron); "
        "or use --kind systemd, or --serve\n"
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--print", "--cron", "61 * * * *"], "--cron: minute field '61' out of range 0-59"),
        (["--install", "--cron", "0 0 * * 9"], "--cron: day-of-week field '9' out of range 0-7"),
        (["--install", "--cron", "@reboot"], "--cron: unknown shorthand '@reboot' (known: "
         "@yearly, @annually, @monthly, @weekly, @daily, @midnight, @hourly)"),
        ([], "choose one of --print, --install, --uninstall or --serve"),
        (["--print", "--install"], "choose one of --print, --install, --uninstall or --serve"),
        (["--install", "--kind", "launchd"], "--kind must be cron or systemd, not 'launchd'"),
        (["--serve", "--kind", "cron"], "--kind does not apply to --serve (it runs in the "
         "foreground)"),
        (["--install", "--kind", "systemd", "--log", "x.log"], "--log is for --kind cron "
         "(systemd and --serve log elsewhere)"),
        (["--install", "--unit-dir", "u"], "--unit-dir is for --kind systemd"),
        (["--install", "--workdir", "missing"], "--workdir: missing is not a folder"),
        (["--install", "--env-file", "missing.env"], "--env-file: missing.env is not a file"),
    ],
)  # fmt: skip
def test_bad_usage_exits_2_writing_nothing(
    cli: Cli, project: Path, tmp_path: Path, args: list[str], message: str
) -> None:
    r = cli("schedule", "sweeps/nightly.yaml", *args)
    assert (r.code, r.out, r.err) == (2, "", f"error: {message}\n")
    assert not (tmp_path / "crontab.txt").exists()
    assert not (tmp_path / "home" / ".config").exists()


@pytest.mark.parametrize("kind", ["cron", "systemd"])
@pytest.mark.parametrize("action", ["--print", "--install", "--serve"])
def test_a_bad_spec_exits_2_naming_the_file(
    cli: Cli, project: Path, tmp_path: Path, kind: str, action: str
) -> None:
    (project / "sweeps" / "broken.yaml").write_text("name: x\ntrials: many\n")
    kind_args = [] if action == "--serve" else ["--kind", kind]
    for spec, problem in (
        ("sweeps/missing.yaml", "sweeps/missing.yaml: "),
        ("sweeps/broken.yaml", "sweeps/broken.yaml: "),
    ):
        r = cli("schedule", spec, action, *kind_args)
        assert r.code == 2 and r.out == ""
        assert r.err.startswith(f"error: {problem}") and r.err.count("\n") == 1, r.err
    assert not (tmp_path / "crontab.txt").exists()
    assert not (tmp_path / "home" / ".config").exists()
    assert not (project / "mlruns").exists()


def test_a_bad_env_file_exits_2_naming_the_line_not_the_value(cli: Cli, project: Path) -> None:
    (project / "secrets.env").write_text("OPENAI_API_KEY=sk 123\n")
    r = cli("schedule", "sweeps/nightly.yaml", "--print", "--env-file", "secrets.env")
    assert r.code == 2
    assert r.err == (
        "error: secrets.env:1: OPENAI_API_KEY: put the value in single quotes: it has "
        "characters that sh and systemd read differently\n"
    )


def test_variables_the_scheduled_run_would_miss_are_named(
    cli: Cli, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-s3cret")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://u:pw@host:5000")
    r = cli("schedule", "sweeps/nightly.yaml", "--print")
    assert r.code == 0
    assert _lines(r.err)[0] == (
        f"warning: OPENAI_API_KEY, MLFLOW_TRACKING_URI set here but not in {project}/.env: the "
        "scheduled run will not see them (put KEY=VALUE lines there, or pass --env-file)"
    )
    env = project / ".env"
    env.write_text("OPENAI_API_KEY=sk-s3cret\nMLFLOW_TRACKING_URI='http://u:pw@host:5000'\n")
    env.chmod(0o644)
    r = cli("schedule", "sweeps/nightly.yaml", "--print", "--kind", "systemd")
    assert r.code == 0
    assert _lines(r.err)[0] == f"warning: {env} is readable by other users: chmod 600 {env}"
    env.chmod(0o600)
    r = cli("schedule", "sweeps/nightly.yaml", "--print")
    assert _lines(r.err) == [_lines(r.err)[-1]] and r.err.startswith("next runs: ")
    assert "s3cret" not in r.out + r.err and "pw@" not in r.out + r.err


FAKE_RETUNE = (
    "import json, os, sys\n"
    "with open(os.environ['FAKE_OUT'], 'a') as f:\n"
    "    f.write(json.dumps({'argv': sys.argv[1:], 'cwd': os.getcwd(),\n"
    "                        'token': os.environ.get('MY_TOKEN')}) + '\\n')\n"
    "sys.exit(3)\n"
)


def test_serve_runs_the_retune_at_each_time_and_logs(
    cli: Cli, project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    script = tmp_path / "fake_retune.py"
    script.write_text(FAKE_RETUNE)
    out_file = tmp_path / "runs.jsonl"
    monkeypatch.setenv("FAKE_OUT", str(out_file))
    monkeypatch.setenv("FTSWEEP_SCHEDULE_COMMAND", f"{shlex.quote(sys.executable)} {script}")
    (project / "run.env").write_text("MY_TOKEN='from the env file'\n")
    t = FakeTime(datetime(2026, 3, 1, 12, 0, 30, tzinfo=UTC))
    monkeypatch.setattr(schedule_loop, "CLOCK", t.clock)
    monkeypatch.setattr(schedule_loop, "SLEEP", t.sleep)
    r = cli("schedule", "sweeps/nightly.yaml", "--serve", "--cron", "* * * * *",
            "--report", "r.json", "--env-file", "run.env", "--max-runs", "2")  # fmt: skip
    assert r.code == 0, r.err
    runs = [json.loads(line) for line in out_file.read_text().splitlines()]
    assert runs == 2 * [
        {
            "argv": [f"{project}/sweeps/nightly.yaml", "--report", f"{project}/r.json"],
            "cwd": str(project),
            "token": "from the env file",
        }
    ]
    err = _lines(r.err)
    assert err[0].startswith(f"ftsweep schedule {NAME}: cron '* * * * *', runs ")
    assert sum("next retune at" in line for line in err) == 2
    assert sum("retune finished: exit 3 (failed) after 0s" in line for line in err) == 2
    assert all(line.endswith(f"[ftsweep schedule {NAME}]") for line in err[1:])
    assert "from the env file" not in r.err
    assert sum(t.naps) == 90  # 30 s to 12:01, 60 s to 12:02: no waiting for real


def _start_serving(project: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "FTSWEEP_SCHEDULE_COMMAND": "true"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "orchestrator", "schedule", "sweeps/nightly.yaml", "--serve",
         "--cron", "0 0 1 1 *"],
        cwd=project, env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    assert proc.stderr is not None
    deadline = time.monotonic() + 60
    seen = ""
    while "next retune at" not in seen:
        left = deadline - time.monotonic()
        assert left > 0, f"no 'next retune' line in time: {seen!r}"
        ready, _, _ = select.select([proc.stderr], [], [], left)
        if ready:  # unbuffered: select() knows nothing of a file object's buffer
            chunk = os.read(proc.stderr.fileno(), 65536).decode()
            assert chunk, f"serve exited early: {seen!r}"
            seen += chunk
    return proc


@pytest.mark.parametrize(
    ("sig", "code", "last"),
    [
        (signal.SIGTERM, 0, f"ftsweep schedule {NAME}: stopped (SIGTERM)"),
        (signal.SIGINT, 130, "error: interrupted"),
    ],
)
def test_serve_stops_cleanly_on_signals(
    project: Path, sig: signal.Signals, code: int, last: str
) -> None:
    proc = _start_serving(project)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == code, err
    assert _lines(err)[-1] == last
    assert "Traceback" not in err


def test_serve_stops_on_a_sigterm_dropped_in_a_finalizer(
    cli: Cli, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The SIGTERM is sent again, so the scheduler stops as on any SIGTERM, where before
    it served on (and `docker stop` would have had to kill it)."""
    naps: list[float] = []

    def nap(seconds: float) -> None:
        naps.append(seconds)
        if len(naps) > 1:
            raise AssertionError("the SIGTERM dropped in a finalizer was not sent again")
        SignalledWhileCollected()  # collected at once, signalled in its __del__
        time.sleep(10)  # the signal sent again lands here

    monkeypatch.setattr(schedule_loop, "SLEEP", nap)
    hook = sys.unraisablehook
    r = cli("schedule", "sweeps/nightly.yaml", "--serve", "--cron", "0 0 1 1 *")
    assert r.code == 0, r.err
    assert _lines(r.err)[-1] == f"ftsweep schedule {NAME}: stopped (SIGTERM)"
    assert "Exception ignored" not in r.err
    assert sys.unraisablehook is hook

"""The scheduling library: cron expressions and their next times, OnCalendar (checked against
``systemd-analyze calendar``), crontab entries (run under ``sh`` the way cron runs them), units
(checked by ``systemd-analyze verify``), env files and the foreground loop."""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from orchestrator.core.errors import OrchestratorError
from orchestrator.workflows.schedule import (
    CronError,
    EnvFileError,
    Job,
    RetuneRunner,
    cron_block,
    install_cron,
    on_calendar,
    parse_cron,
    randomized_delay,
    read_env_file,
    remove_block,
    remove_units,
    serve,
    systemd_units,
    uninstall_cron,
    write_units,
)
from orchestrator.workflows.schedule.cron import local_zone

ROOT = Path(__file__).resolve().parents[1]
SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
needs_systemd_analyze = pytest.mark.skipif(
    SYSTEMD_ANALYZE is None and not os.environ.get("CI"),
    reason="systemd-analyze is not installed (apt-get install systemd; CI installs it: .ci/run)",
)


def ftsweep_executable() -> str:
    """A real ``ftsweep`` script (systemd-analyze verify wants ExecStart to exist)."""
    for candidate in (ROOT / ".venv" / "bin" / "ftsweep", Path(sys.executable).parent / "ftsweep"):
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which("ftsweep")
    assert found, "no ftsweep executable (pip install -e .)"
    return found


# -- parsing -------------------------------------------------------------------------------


def test_fields_lists_ranges_steps_and_names() -> None:
    s = parse_cron("*/15 9-17/4 1,15 jan-MAR,dec mon-fri")
    assert s.minutes == {0, 15, 30, 45}
    assert s.hours == {9, 13, 17}
    assert s.days == {1, 15}
    assert s.months == {1, 2, 3, 12}
    assert s.weekdays == {1, 2, 3, 4, 5}
    assert not s.days_star and not s.weekdays_star


def test_sunday_is_0_and_7_and_a_single_value_with_a_step_runs_to_the_end() -> None:
    assert parse_cron("0 0 * * 7").weekdays == {0}
    assert parse_cron("0 0 * * 5-7").weekdays == {5, 6, 0}
    assert parse_cron("5/20 * * * *").minutes == {5, 25, 45}


@pytest.mark.parametrize(
    ("shorthand", "same_as"),
    [
        ("@hourly", "0 * * * *"),
        ("@daily", "0 0 * * *"),
        ("@midnight", "0 0 * * *"),
        ("@weekly", "0 0 * * 0"),
        ("@monthly", "0 0 1 * *"),
        ("@yearly", "0 0 1 1 *"),
        ("@ANNUALLY", "0 0 1 1 *"),
    ],
)
def test_shorthands(shorthand: str, same_as: str) -> None:
    a, b = parse_cron(shorthand), parse_cron(same_as)
    assert (a.minutes, a.hours, a.days, a.months, a.weekdays) == (
        b.minutes,
        b.hours,
        b.days,
        b.months,
        b.weekdays,
    )
    assert a.expression == shorthand


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("61 * * * *", "minute field '61' out of range 0-59"),
        ("0 24 * * *", "hour field '24' out of range 0-23"),
        ("0 0 0 * *", "day-of-month field '0' out of range 1-31"),
        ("0 0 * 13 *", "month field '13' out of range 1-12"),
        ("0 0 * * 8", "day-of-week field '8' out of range 0-7"),
        ("1,61 * * * *", "minute field '61' out of range 0-59"),
        ("0 0 * foo *", "month field 'foo' is not a number or a month name (jan-dec)"),
        ("0 0 * * sunday", "day-of-week field 'sunday' is not a number or a day name (sun-sat)"),
        ("x * * * *", "minute field 'x' is not a number"),
        ("-1 * * * *", "minute field '' is not a number"),
        ("*/0 * * * *", "minute field '*/0': the step must be 1-59"),
        ("*/x * * * *", "minute field '*/x': the step must be a number"),
        ("0 5-1 * * *", "hour field '5-1': the range goes backwards"),
        ("1,,2 * * * *", "minute field '1,,2' has an empty item"),
        ("* * * *", "expected 5 fields (minute hour day-of-month month day-of-week) or a "
         "shorthand such as @daily, got 4"),
        ("* * * * * *", "expected 5 fields (minute hour day-of-month month day-of-week) or a "
         "shorthand such as @daily, got 6"),
        ("@reboot", "unknown shorthand '@reboot' (known: @yearly, @annually, @monthly, "
         "@weekly, @daily, @midnight, @hourly)"),
        ("0 0 30 2 *", "'0 0 30 2 *' never runs (no date matches its day fields)"),
        ("0 0 ３ * *", "day-of-month field '３' is not a number"),
        ("0 0 31 2,4 *", "'0 0 31 2,4 *' never runs (no date matches its day fields)"),
        # what cronsim reads but cron does not
        ("0 0 L * *", "day-of-month field 'L' is not a number"),
        ("0 0 * * mon#1", "day-of-week field 'mon#1' is not a number or a day name (sun-sat)"),
        ("0 0 * * 5L", "day-of-week field '5L' is not a number or a day name (sun-sat)"),
    ],
)  # fmt: skip
def test_invalid_expressions_name_the_field(expression: str, message: str) -> None:
    with pytest.raises(CronError) as info:
        parse_cron(expression)
    assert str(info.value) == message
    assert info.value.exit_code == 2


# -- next run times ------------------------------------------------------------------------


def _times(expression: str, base: datetime, n: int) -> list[str]:
    return [t.strftime("%a %Y-%m-%d %H:%M") for t in parse_cron(expression).upcoming(base, n)]


def test_next_times_by_hand() -> None:
    base = datetime(2026, 2, 27, 23, 58, 30)  # a Friday
    assert _times("* * * * *", base, 3) == [
        "Fri 2026-02-27 23:59",
        "Sat 2026-02-28 00:00",
        "Sat 2026-02-28 00:01",
    ]
    assert _times("30 2 * * *", base, 2) == ["Sat 2026-02-28 02:30", "Sun 2026-03-01 02:30"]
    assert _times("0 0 29 2 *", base, 2) == ["Tue 2028-02-29 00:00", "Sun 2032-02-29 00:00"]
    assert _times("0 9 * * mon", base, 1) == ["Mon 2026-03-02 09:00"]
    assert _times("0 0 31 * *", base, 2) == ["Tue 2026-03-31 00:00", "Sun 2026-05-31 00:00"]
    # strictly after: a base on a matching minute gives the next one
    assert _times("30 2 * * *", datetime(2026, 1, 1, 2, 30), 1) == ["Fri 2026-01-02 02:30"]


def test_both_day_fields_restricted_means_either() -> None:
    """cron runs ``0 0 13 * 5`` on every 13th AND every Friday."""
    times = _times("0 0 13 * 5", datetime(2026, 3, 1), 6)
    assert times == [
        "Fri 2026-03-06 00:00",
        "Fri 2026-03-13 00:00",
        "Fri 2026-03-20 00:00",
        "Fri 2026-03-27 00:00",
        "Fri 2026-04-03 00:00",
        "Fri 2026-04-10 00:00",
    ]
    assert "Mon 2026-04-13 00:00" in _times("0 0 13 * 5", datetime(2026, 3, 1), 8)


def test_a_day_field_starting_with_a_star_means_both() -> None:
    """Vixie/Debian cron: ``*/2`` counts as unrestricted, so both fields must match."""
    s = parse_cron("0 0 */2 * 1")
    assert s.days_star and not s.weekdays_star
    for t in s.upcoming(datetime(2026, 1, 1), 20):
        assert t.isoweekday() == 1 and t.day % 2 == 1


@pytest.mark.parametrize(
    "expression",
    ["0 0 13 * 5", "0 0 1,15 * mon", "0 0 1-7 * sun", "0 0 */2 * 1", "0 0 13 * *", "0 0 * * 5",
     "0 0 1,31 jan,jun sat,sun", "0 0 29 2 mon", "0 0 */10 */2 */3"],
)  # fmt: skip
def test_the_day_rule_day_by_day(expression: str) -> None:
    """Every run day of two years, against cron's rule spelled out: both day fields
    restricted (neither starts with ``*``): either matches; otherwise both must."""
    s = parse_cron(expression)
    _, _, dom, _, dow = expression.split()
    either = not dom.startswith("*") and not dow.startswith("*")
    expected = []
    day = date(2026, 1, 1)
    while day < date(2028, 1, 1):
        matches = (day.day in s.days, day.isoweekday() % 7 in s.weekdays)
        if day.month in s.months and (any(matches) if either else all(matches)):
            expected.append(day)
        day += timedelta(days=1)
    runs = s.upcoming(datetime(2025, 12, 31, 12), len(expected) + 1)
    assert [t.date() for t in runs[:-1]] == expected
    assert runs[-1].year == 2028


# -- daylight saving -----------------------------------------------------------------------

BERLIN = ZoneInfo("Europe/Berlin")  # 2026-03-29 02:00 -> 03:00; 2026-10-25 03:00 -> 02:00


def _local(times: list[datetime]) -> list[str]:
    return [t.strftime("%m-%d %H:%M%z") for t in times]


def test_a_time_the_spring_forward_skips_runs_at_the_change() -> None:
    """Debian's cron: a job due at 02:30, which does not exist that night, runs at 03:00."""
    s = parse_cron("30 2 * * *")
    assert _local(s.upcoming(datetime(2026, 3, 28, 12, tzinfo=BERLIN), 3)) == [
        "03-29 03:00+0200",
        "03-30 02:30+0200",
        "03-31 02:30+0200",
    ]
    frequent = parse_cron("*/30 * * * *")  # scheduled normally: the missing hour has no runs
    assert _local(frequent.upcoming(datetime(2026, 3, 29, 1, 10, tzinfo=BERLIN), 3)) == [
        "03-29 01:30+0100",
        "03-29 03:00+0200",
        "03-29 03:30+0200",
    ]


def test_a_time_the_fall_back_repeats_runs_once() -> None:
    s = parse_cron("30 2 * * *")
    assert _local(s.upcoming(datetime(2026, 10, 24, 12, tzinfo=BERLIN), 2)) == [
        "10-25 02:30+0200",
        "10-26 02:30+0100",
    ]
    # asked during the repeated hour, after 02:30 passed once: not 02:30 again that night
    second_pass = datetime(2026, 10, 25, 2, 10, fold=1, tzinfo=BERLIN)
    assert _local([s.next_after(second_pass)]) == ["10-26 02:30+0100"]
    frequent = parse_cron("*/30 * * * *")  # scheduled normally: the repeated hour runs twice
    assert _local(frequent.upcoming(datetime(2026, 10, 25, 1, 50, tzinfo=BERLIN), 5)) == [
        "10-25 02:00+0200",
        "10-25 02:30+0200",
        "10-25 02:00+0100",
        "10-25 02:30+0100",
        "10-25 03:00+0100",
    ]


def test_the_local_zone_is_tz_or_etc_localtime(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "Europe/Berlin")
    assert local_zone() == BERLIN
    monkeypatch.setenv("TZ", ":Europe/Berlin")
    assert local_zone() == BERLIN
    monkeypatch.setenv("TZ", "Nowhere/Atlantis")
    assert local_zone() is None  # naive local time, as before
    monkeypatch.delenv("TZ")
    if Path("/etc/localtime").exists():
        zone = local_zone()
        assert zone is not None
        moment = datetime(2026, 7, 1, 12, tzinfo=UTC)
        assert moment.astimezone(zone).utcoffset() == moment.astimezone().utcoffset()


# -- OnCalendar ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "calendars"),
    [
        ("30 2 * * *", ["*-*-* 02:30:00"]),
        ("* * * * *", ["*-*-* *:*:00"]),
        ("*/15 * * * *", ["*-*-* *:00..45/15:00"]),
        ("0 9-17/4 * * *", ["*-*-* 09..17/4:00:00"]),
        ("0 0 * * mon-fri", ["Mon..Fri *-*-* 00:00:00"]),
        ("0 0 * * 5-7", ["Fri..Sun *-*-* 00:00:00"]),
        ("0 0 * * 0,3", ["Wed,Sun *-*-* 00:00:00"]),
        ("5 4 1,15 * *", ["*-*-01,15 04:05:00"]),
        ("0 0 1 */3 *", ["*-01..10/3-01 00:00:00"]),
        ("0 0 13 * 5", ["*-*-13 00:00:00", "Fri *-*-* 00:00:00"]),
        ("0 3 1,15 jan,jul mon-fri", ["*-01,07-01,15 03:00:00", "Mon..Fri *-01,07-* 03:00:00"]),
        ("0 0 */2 * 1", ["Mon *-*-01..31/2 00:00:00"]),
        ("1,2,3,7 0 * * *", ["*-*-* 00:01..03,07:00"]),
    ],
)
def test_on_calendar(expression: str, calendars: list[str]) -> None:
    assert on_calendar(parse_cron(expression)) == calendars


#: expressions whose systemd conversion is checked against systemd's own calendar
AGREEMENT = [
    "30 2 * * *",
    "* * * * *",
    "*/7 */5 * * *",
    "0 9-17/4 * * mon-fri",
    "0 0 13 * 5",
    "15 3 1,15 jan,jul mon-fri",
    "0 0 */2 * 1",
    "0 0 * * 5-7",
    "0 0 29 2 *",
    "0 12 31 * *",
    "45 23 * 2 sun",
    "0 6 1-7 * mon",
    "1,2,3,7 0 * * *",
    "@weekly",
    "@monthly",
    "@hourly",
    "0 0 1 */3 *",
    "5/20 4 * * *",
]


def _systemd_next(calendar: str, base: str, n: int) -> list[str]:
    proc = subprocess.run(
        [str(SYSTEMD_ANALYZE), "calendar", f"--iterations={n}", f"--base-time={base}", calendar],
        capture_output=True,
        text=True,
        env={**os.environ, "TZ": "UTC", "LC_ALL": "C"},
        check=False,
        timeout=30,
    )
    assert proc.returncode == 0, proc.stderr
    found = re.findall(r"(?:Next elapse|Iter\. #\d+): (\w{3} \d{4}-\d\d-\d\d \d\d:\d\d):00 UTC",
                       proc.stdout)  # fmt: skip
    assert len(found) == n, proc.stdout
    return found


@needs_systemd_analyze
@pytest.mark.parametrize("expression", AGREEMENT)
@pytest.mark.parametrize(
    "base", ["2026-02-27 23:58:30", "2027-12-31 12:00:00", "2028-12-31 23:59:00"]
)
def test_systemd_agrees_on_the_next_times(expression: str, base: str) -> None:
    """Every OnCalendar value the timer gets, merged, elapses exactly when cron would run."""
    n = 25
    schedule = parse_cron(expression)
    ours = _times(expression, datetime.fromisoformat(base), n)
    theirs: set[str] = set()
    for calendar in on_calendar(schedule):
        theirs.update(_systemd_next(calendar, f"{base} UTC", n))
    assert sorted(theirs, key=lambda t: t[4:])[:n] == ours


def test_randomized_delay_is_small() -> None:
    assert randomized_delay(parse_cron("30 2 * * *")) == "5min"
    assert randomized_delay(parse_cron("* * * * *")) == "6s"
    assert randomized_delay(parse_cron("*/30 * * * *")) == "3min"


# -- jobs, crontab entries -----------------------------------------------------------------


def _job(
    tmp_path: Path, command: list[str] | None = None, cron: str = "30 2 * * *", **kw: object
) -> Job:
    work = tmp_path / "my project %1"
    (work / "sweeps").mkdir(parents=True, exist_ok=True)
    spec = work / "sweeps" / "nightly.yaml"
    spec.write_text("name: nightly\n")
    return Job.create(
        "nightly",
        spec,
        command=command or ["/opt/ftsweep/bin/ftsweep"],
        schedule=parse_cron(cron),
        workdir=work,
        **kw,  # type: ignore[arg-type]
    )


def test_job_defaults(tmp_path: Path) -> None:
    job = _job(tmp_path)
    work = tmp_path / "my project %1"
    assert job.unit == "ftsweep-retune-nightly"
    assert job.env_file == work / ".env" and not job.env_file_required
    assert job.log == work / "mlruns" / "retune-nightly.log"
    assert job.lock == work / "mlruns" / ".retune-nightly.lock"
    assert job.argv() == ["/opt/ftsweep/bin/ftsweep", "retune", str(work / "sweeps/nightly.yaml")]
    with_report = _job(tmp_path, report=Path("r.json"))
    assert with_report.argv()[-2:] == ["--report", str(Path.cwd() / "r.json")]


def test_cron_block_shape(tmp_path: Path) -> None:
    block = cron_block(_job(tmp_path))
    lines = block.splitlines()
    assert lines[0] == "# >>> ftsweep schedule nightly >>>"
    assert lines[-1] == "# <<< ftsweep schedule nightly <<<"
    assert lines[2].startswith("30 2 * * * cd ")
    assert "%" not in lines[2].replace("\\%", "")  # cron would turn it into a newline
    assert "flock -n -E 75 " in lines[2]
    assert lines[2].endswith("/mlruns/retune-nightly.log' 2>&1")
    assert block.endswith("\n")


def _fake_ftsweep(tmp_path: Path, body: str) -> str:
    folder = tmp_path / "bin dir"
    folder.mkdir(exist_ok=True)
    script = folder / "ftsweep"
    script.write_text("#!/bin/sh\n" + body)
    script.chmod(0o755)
    return str(script)


def _run_like_cron(block: str, home: Path) -> subprocess.CompletedProcess[str]:
    """Run the entry's command as cron does: ``%`` unescaped, ``/bin/sh -c``, cron's tiny
    environment."""
    line = block.splitlines()[2]
    command = line.split(" ", 5)[5].replace("\\%", "%")
    env = {"PATH": "/usr/bin:/bin", "HOME": str(home), "SHELL": "/bin/sh", "LOGNAME": "u"}
    return subprocess.run(
        ["/bin/sh", "-c", command], env=env, capture_output=True, text=True, timeout=60, check=False
    )


@pytest.mark.skipif(
    shutil.which("flock") is None, reason="flock(1) is not installed (apt-get install util-linux)"
)
def test_the_cron_line_runs_under_sh_with_crons_environment(tmp_path: Path) -> None:
    fake = _fake_ftsweep(
        tmp_path,
        'echo "ran $* in $(pwd) token=${MY_TOKEN:+set} path=$PATH"\n'
        'test -z "$HOLD" || sleep "$HOLD"\n'
        "exit 3\n",
    )
    job = _job(tmp_path, [fake], report=tmp_path / "report%.json")
    job.env_file.write_text("MY_TOKEN='s3cret value'\n")
    r = _run_like_cron(cron_block(job), tmp_path)
    assert (r.returncode, r.stdout, r.stderr) == (0, "", "")
    log = job.log.read_text().splitlines()
    assert log[0].endswith("ftsweep schedule nightly: start")
    assert log[1] == (
        f"ran retune {job.spec} --report {tmp_path / 'report%.json'} in {job.workdir} "
        f"token=set path={Path(fake).parent}:/usr/local/bin:/usr/bin:/bin"
    )
    assert log[2].endswith("ftsweep schedule nightly: exit 3")
    assert "s3cret" not in job.log.read_text()

    # a run that finds the lock held skips, and says so
    with job.lock.open("a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        _run_like_cron(cron_block(job), tmp_path)
    tail = job.log.read_text().splitlines()[3:]
    assert [t.split(" ", 1)[1] for t in tail] == [
        "ftsweep schedule nightly: start",
        "ftsweep schedule nightly: skipped, the last retune still runs",
        "ftsweep schedule nightly: exit 75",
    ]


def test_the_cron_line_stops_when_a_required_env_file_is_gone(tmp_path: Path) -> None:
    fake = _fake_ftsweep(tmp_path, "echo ran\n")
    env_file = tmp_path / "secrets.env"
    job = _job(tmp_path, [fake], env_file=env_file)
    assert job.env_file_required
    _run_like_cron(cron_block(job), tmp_path)
    log = job.log.read_text()
    assert "ran" not in log and "secrets.env" in log


class FakeCrontab:
    """A ``crontab`` program that keeps the table in a file (absent: "no crontab")."""

    def __init__(self, tmp_path: Path) -> None:
        self.table = tmp_path / "crontab.txt"
        self.program = tmp_path / "crontab"
        self.program.write_text(
            "#!/bin/sh\n"
            f"T='{self.table}'\n"
            'if [ "$1" = -l ]; then\n'
            '  [ -f "$T" ] || { echo "no crontab for $(id -un)" >&2; exit 1; }\n'
            '  cat "$T"\n'
            'elif [ "$1" = - ]; then cat > "$T"\n'
            "else echo usage >&2; exit 1; fi\n"
        )
        self.program.chmod(0o755)

    @property
    def text(self) -> str:
        return self.table.read_text() if self.table.exists() else ""


def test_install_replaces_in_place_and_uninstall_removes(tmp_path: Path) -> None:
    tab = FakeCrontab(tmp_path)
    assert install_cron(_job(tmp_path), str(tab.program)) is False
    first = tab.text
    assert first == cron_block(_job(tmp_path))
    tab.table.write_text("MAILTO=me\n" + first + "0 1 * * * other-job")  # no final newline
    assert install_cron(_job(tmp_path, cron="0 4 * * *"), str(tab.program)) is True
    lines = tab.text.splitlines()
    assert lines[0] == "MAILTO=me" and lines[-1] == "0 1 * * * other-job"
    assert sum(line.startswith("# >>> ftsweep schedule") for line in lines) == 1
    assert lines[3].startswith("0 4 * * * cd ")
    assert uninstall_cron("nightly", str(tab.program)) is True
    assert tab.text == "MAILTO=me\n0 1 * * * other-job\n"
    assert uninstall_cron("nightly", str(tab.program)) is False


def test_other_sweeps_entries_stay(tmp_path: Path) -> None:
    tab = FakeCrontab(tmp_path)
    other = cron_block(_job(tmp_path)).replace("nightly", "weekly")
    tab.table.write_text(other)
    install_cron(_job(tmp_path), str(tab.program))
    assert uninstall_cron("nightly", str(tab.program))
    assert tab.text == other


def test_a_missing_crontab_program_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(OrchestratorError) as info:
        install_cron(_job(tmp_path), str(tmp_path / "no-crontab"))
    assert str(info.value) == (
        f"{tmp_path / 'no-crontab'} is not installed (Debian: apt-get install cron); "
        "or use --kind systemd, or --serve"
    )
    assert info.value.exit_code == 1


def test_a_failing_crontab_is_reported(tmp_path: Path) -> None:
    program = tmp_path / "crontab"
    program.write_text("#!/bin/sh\necho 'crontab: permission denied' >&2\nexit 1\n")
    program.chmod(0o755)
    with pytest.raises(OrchestratorError, match=r"crontab -l failed \(exit 1\): crontab: perm"):
        install_cron(_job(tmp_path), str(program))


def test_a_start_marker_without_its_end_is_refused() -> None:
    with pytest.raises(OrchestratorError, match="start marker of 'x' but not its end"):
        remove_block("# >>> ftsweep schedule x >>>\n* * * * * true\n", "x")


# -- systemd units -------------------------------------------------------------------------


def test_units_content(tmp_path: Path) -> None:
    job = _job(tmp_path, cron="0 0 13 * 5", report=tmp_path / "r.json")
    units = systemd_units(job)
    service, timer = units["ftsweep-retune-nightly.service"], units["ftsweep-retune-nightly.timer"]
    assert "Type=oneshot\n" in service
    assert f"WorkingDirectory={str(job.workdir).replace('%', '%%')}\n" in service
    assert f"EnvironmentFile=-{str(job.env_file).replace('%', '%%')}\n" in service
    assert f'ExecStart=/opt/ftsweep/bin/ftsweep retune "{job.spec}"'.replace("%", "%%") in service
    assert timer.count("OnCalendar=") == 2
    assert "Persistent=true\n" in timer and "RandomizedDelaySec=5min\n" in timer
    assert "Unit=ftsweep-retune-nightly.service\n" in timer
    required = systemd_units(_job(tmp_path, env_file=tmp_path / "s.env"))
    assert f"EnvironmentFile={tmp_path / 's.env'}\n" in required["ftsweep-retune-nightly.service"]


def _verify(paths: list[Path], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700, exist_ok=True)
    return subprocess.run(
        [str(SYSTEMD_ANALYZE), "verify", "--user", "--man=no", *map(str, paths)],
        capture_output=True,
        text=True,
        env={**os.environ, "XDG_RUNTIME_DIR": str(runtime)},
        check=False,
        timeout=60,
    )


@needs_systemd_analyze
@pytest.mark.parametrize("cron", ["30 2 * * *", "0 0 13 * 5", "*/5 * * * mon-fri", "@weekly"])
def test_units_pass_systemd_analyze_verify(tmp_path: Path, cron: str) -> None:
    job = _job(tmp_path, [ftsweep_executable()], cron=cron, report=tmp_path / "a b" / "r.json")
    paths = write_units(systemd_units(job), tmp_path / "units")
    r = _verify(paths, tmp_path)
    assert (r.returncode, r.stdout, r.stderr) == (0, "", "")


@needs_systemd_analyze
def test_verify_does_catch_mistakes(tmp_path: Path) -> None:
    """The check above is not vacuous: a bad calendar or executable is reported."""
    job = _job(tmp_path, ["/nonexistent/ftsweep"])
    units = systemd_units(job)
    units["ftsweep-retune-nightly.timer"] = units["ftsweep-retune-nightly.timer"].replace(
        "OnCalendar=*-*-* 02:30:00", "OnCalendar=bogus"
    )
    r = _verify(write_units(units, tmp_path / "units"), tmp_path)
    assert "bogus" in r.stderr and "/nonexistent/ftsweep" in r.stderr


def test_write_and_remove_units(tmp_path: Path) -> None:
    folder = tmp_path / "units"
    paths = write_units(systemd_units(_job(tmp_path)), folder)
    assert [p.name for p in paths] == [
        "ftsweep-retune-nightly.service",
        "ftsweep-retune-nightly.timer",
    ]
    (folder / "timers.target.wants").mkdir()
    (folder / "timers.target.wants" / "ftsweep-retune-nightly.timer").symlink_to(paths[1])
    assert len(remove_units("ftsweep-retune-nightly", folder)) == 3
    assert remove_units("ftsweep-retune-nightly", folder) == []
    assert [p.name for p in folder.iterdir()] == ["timers.target.wants"]


# -- env files -----------------------------------------------------------------------------


def test_env_file_subset(tmp_path: Path) -> None:
    f = tmp_path / ".env"
    f.write_text(
        "# secrets\n\nOPENAI_API_KEY=sk-abc_123\n"
        "MLFLOW_TRACKING_URI='http://u:p@host:5000/?x=1 y'\n"
        'NAME="two words"\n'
        "EMPTY=\n"
    )
    assert read_env_file(f) == {
        "OPENAI_API_KEY": "sk-abc_123",
        "MLFLOW_TRACKING_URI": "http://u:p@host:5000/?x=1 y",
        "NAME": "two words",
        "EMPTY": "",
    }


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("export KEY=v", "write KEY=VALUE without 'export' (systemd reads none)"),
        ("just words", "not a KEY=VALUE line"),
        ("1KEY=v", "not a KEY=VALUE line"),
        ("KEY=two s3cret", "KEY: put the value in single quotes: it has characters that sh "
         "and systemd read differently"),
        ('KEY="a $s3cret"', "KEY: put the value in single quotes: it has characters that sh "
         "and systemd read differently"),
        ("KEY='it's'", "KEY: put the value in single quotes: it has characters that sh "
         "and systemd read differently"),
    ],
)  # fmt: skip
def test_env_file_errors_name_the_line_not_the_value(
    tmp_path: Path, line: str, problem: str
) -> None:
    f = tmp_path / "x.env"
    f.write_text(f"OK=1\n{line}\n")
    with pytest.raises(EnvFileError) as info:
        read_env_file(f)
    assert str(info.value) == f"{f}:2: {problem}"
    assert "s3cret" not in str(info.value)


# -- the foreground loop -------------------------------------------------------------------


class FakeTime:
    """A clock that only moves when slept on (or when a run takes time)."""

    def __init__(self, start: datetime) -> None:
        self.now = start.timestamp()
        self.naps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds > 0
        self.naps.append(seconds)
        self.now += seconds


def _serve(
    t: FakeTime, run: Callable[[int | None], int], cron: str = "* * * * *", **kw: object
) -> tuple[int, list[str]]:
    lines: list[str] = []
    n = serve(
        parse_cron(cron),
        run,
        log=lines.append,
        clock=t.clock,
        sleep=t.sleep,
        **{"tz": UTC, **kw},  # type: ignore[arg-type]
    )
    return n, lines


def test_serve_runs_at_each_time_and_logs(tmp_path: Path) -> None:
    t = FakeTime(datetime(2026, 3, 1, 12, 0, 30, tzinfo=UTC))
    ran: list[float] = []

    def run(fd: int | None) -> int:
        ran.append(t.now)
        t.now += 7
        return 0 if len(ran) == 1 else 1

    n, lines = _serve(t, run, max_runs=2, lock=tmp_path / "lock")
    assert n == 2
    assert [datetime.fromtimestamp(x, UTC).strftime("%H:%M:%S") for x in ran] == [
        "12:01:00",
        "12:02:00",
    ]
    assert lines == [
        "2026-03-01 12:00:30+0000 next retune at 2026-03-01 12:01:00+0000 (in 30s)",
        "2026-03-01 12:01:00+0000 starting retune",
        "2026-03-01 12:01:07+0000 retune finished: exit 0 (ok) after 7s",
        "2026-03-01 12:01:07+0000 next retune at 2026-03-01 12:02:00+0000 (in 53s)",
        "2026-03-01 12:02:00+0000 starting retune",
        "2026-03-01 12:02:07+0000 retune finished: exit 1 (failed) after 7s",
    ]


def test_serve_naps_briefly_so_clock_changes_are_noticed() -> None:
    t = FakeTime(datetime(2026, 3, 1, 0, 0, 0, tzinfo=UTC))
    n, lines = _serve(t, lambda fd: 0, cron="30 2 * * *", max_runs=1)
    assert n == 1 and max(t.naps) == 60 and sum(t.naps) == 2.5 * 3600
    assert lines[0].endswith("next retune at 2026-03-01 02:30:00+0000 (in 2h30m)")


def test_a_long_run_is_never_started_twice(tmp_path: Path) -> None:
    t = FakeTime(datetime(2026, 3, 1, 12, 0, 59, tzinfo=UTC))
    starts: list[float] = []

    def run(fd: int | None) -> int:
        starts.append(t.now)
        t.now += 150 if len(starts) == 1 else 1  # the first overruns two minutes
        return 0

    _, lines = _serve(t, run, max_runs=2, lock=tmp_path / "lock")
    assert [int(b - starts[0]) for b in starts] == [0, 180]  # 12:01, then 12:04
    assert "missed 2 scheduled time(s) while it ran (runs never overlap)" in lines[3]


def test_a_held_lock_skips_the_run(tmp_path: Path) -> None:
    lock = tmp_path / "mlruns" / ".retune-x.lock"
    lock.parent.mkdir()
    t = FakeTime(datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC))
    calls: list[int | None] = []
    with lock.open("a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        _, lines = _serve(t, lambda fd: calls.append(fd) or 0, max_runs=1, lock=lock)
    assert calls == []
    assert lines[-1].endswith(
        f"skipped the retune due at 2026-03-01 12:01:00+0000: the last one still runs ({lock})"
    )
    _serve(t, lambda fd: calls.append(fd) or 0, max_runs=1, lock=lock)
    assert len(calls) == 1 and isinstance(calls[0], int)


def test_serve_follows_the_spring_forward() -> None:
    t = FakeTime(datetime(2026, 3, 29, 1, 0, tzinfo=BERLIN))
    ran: list[float] = []
    n, lines = _serve(t, lambda fd: ran.append(t.now) or 0, cron="30 2 * * *", max_runs=1,
                      tz=BERLIN)  # fmt: skip
    assert n == 1
    assert lines[0].endswith("next retune at 2026-03-29 03:00:00+0200 (in 1h00m)")
    assert ran == [datetime(2026, 3, 29, 1, 0, tzinfo=UTC).timestamp()]


def test_serve_runs_a_repeated_time_once(tmp_path: Path) -> None:
    """A run at 02:30 CEST that ends at 02:20 CET, in the repeated hour: the next is the
    next night's 02:30, not the same night's second one."""
    t = FakeTime(datetime(2026, 10, 25, 2, 0, tzinfo=BERLIN))
    ran: list[str] = []

    def run(fd: int | None) -> int:
        ran.append(datetime.fromtimestamp(t.now, UTC).strftime("%m-%d %H:%M UTC"))
        t.now += 50 * 60
        return 0

    _, lines = _serve(t, run, cron="30 2 * * *", max_runs=2, lock=tmp_path / "lock", tz=BERLIN)
    assert ran == ["10-25 00:30 UTC", "10-26 01:30 UTC"]
    assert lines[3].endswith("next retune at 2026-10-26 02:30:00+0100 (in 1d0h10m)")
    assert not any("missed" in line for line in lines)


def test_a_run_that_cannot_start_does_not_stop_the_loop(tmp_path: Path) -> None:
    t = FakeTime(datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC))
    runner = RetuneRunner([str(tmp_path / "missing"), "retune"], tmp_path)
    n, lines = _serve(t, runner, max_runs=2)
    assert n == 2
    started = [line for line in lines if "could not start" in line]
    assert len(started) == 2
    assert started[0].endswith(
        f"retune could not start: No such file or directory: {tmp_path}/missing"
    )


def test_the_runner_returns_the_exit_status_and_the_lock_is_held_meanwhile(tmp_path: Path) -> None:
    lock = tmp_path / "lock"
    code = (
        "import fcntl, os, sys\n"
        "fd = os.open(sys.argv[1], os.O_RDWR)\n"
        "try:\n"
        "    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)\n"
        "except BlockingIOError:\n"
        "    sys.exit(42 if os.getcwd() == sys.argv[2] else 1)\n"
        "sys.exit(3)\n"
    )
    t = FakeTime(datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC))
    # the child opens the lock anew: it is held (by the loop) while the child runs
    runner = RetuneRunner([sys.executable, "-c", code, str(lock), str(tmp_path)], tmp_path)
    _, lines = _serve(t, runner, max_runs=1, lock=lock)
    assert lines[-1].endswith("retune finished: exit 42 (failed) after 0s")

"""What `ftsweep run` shows while it runs: a live panel in a terminal, plain lines in a pipe,
JSON lines with --json-events, warnings only with --quiet."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.engine.conftest import SweepFactory

CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")  # anything but \t and \n


def _env(runs_dir: Path) -> dict[str, str]:
    env = dict(os.environ, FTSWEEP_RUNS_DIR=str(runs_dir), PYTHONPATH=os.getcwd())
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("FTSWEEP_OPTUNA_STORAGE", None)
    return env


def test_piped_output_is_plain_lines(make_sweep: SweepFactory, runs_dir: Path) -> None:
    spec = make_sweep(trials=2)
    env = dict(_env(runs_dir), TERM="xterm-256color")  # a terminal type, but no terminal
    r = subprocess.run(
        [sys.executable, "-m", "orchestrator", "run", str(spec)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr
    both = r.stdout + r.stderr
    assert not CONTROL.search(both), repr(CONTROL.search(both))
    assert "trial 0 started" in r.stderr
    assert re.search(r"trial \d COMPLETE, objective", r.stderr)
    assert "best: trial" in r.stdout


def test_json_events_and_quiet(cli, make_sweep: SweepFactory) -> None:
    spec = make_sweep(trials=2)
    r = cli("run", spec, "--json-events")
    assert r.code == 0, r.err
    records = [json.loads(line) for line in r.out.splitlines()]
    kinds = [rec["event"] for rec in records]
    assert kinds[0] == "sweep_started" and kinds[-1] == "result"
    assert kinds.count("trial_finished") == 2
    finished = [rec for rec in records if rec["event"] == "trial_finished"]
    assert {rec["state"] for rec in finished} <= {"COMPLETE", "PRUNED"}
    assert all(
        rec["diagnosis"] in {"overfit", "underfit", "diverged", "good", "unknown"}
        for rec in finished
    )
    result = records[-1]
    assert result["completed"] and len(result["trials"]) == 2
    assert "trial 0 started" not in r.err  # the events are the progress

    again = cli("run", spec, "--quiet")  # finished already: the result only
    assert again.code == 0, again.err
    assert again.err == ""
    assert "best: trial" in again.out


@pytest.mark.skipif(
    shutil.which("tmux") is None and not os.environ.get("CI"),
    reason="tmux is not installed (apt-get install tmux)",
)
def test_a_terminal_shows_the_live_panel(make_sweep: SweepFactory, runs_dir: Path) -> None:
    """Drives `ftsweep run` in a tmux pane (a real pseudo-terminal) and reads the screen."""
    assert shutil.which("tmux"), "tmux is needed for this test (.ci/run installs it)"
    spec = make_sweep(trials=3, parallel=2)
    session = f"ftsweep-live-{os.getpid()}"
    env = " ".join(
        f"{k}={shlex.quote(v)}"
        for k, v in _env(runs_dir).items()
        if k in ("FTSWEEP_RUNS_DIR", "FTSWEEP_HOME", "PYTHONPATH", "HOME", "PATH")
    )
    command = (
        f"env TERM=xterm-256color {env} {shlex.quote(sys.executable)} -m orchestrator run "
        f"{shlex.quote(str(spec))}; echo EXIT=$?; sleep 120"
    )
    tmux = ["tmux", "-L", session]
    subprocess.run(
        [*tmux, "new-session", "-d", "-s", session, "-x", "150", "-y", "40", command], check=True
    )
    try:
        screens: list[str] = []
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            screen = subprocess.run(
                [*tmux, "capture-pane", "-p", "-t", session],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            screens.append(screen)
            if "EXIT=" in screen:
                break
            time.sleep(0.5)
        panels = [s for s in screens if "trials done" in s and re.search(r"t00\d\s+ep=", s)]
        assert panels, "the live panel never showed:\n" + screens[-1]
        panel = panels[-1]
        for column in ("status", "epoch", "step", "train", "valid", "time"):
            assert column in panel
        assert re.search(r"\d+/\d+\s", panel)  # epoch or step out of its total
        final = screens[-1]
        assert "EXIT=0" in final, final
        # the panel is gone at the end; the log lines and the result stay (in the pane's
        # scrollback too: the result table may push them off the screen)
        assert "trials done" not in final
        everything = subprocess.run(
            [*tmux, "capture-pane", "-p", "-S", "-", "-t", session],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert re.search(r"trial \d COMPLETE, objective", everything), everything
        assert "best: trial" in everything
    finally:
        subprocess.run([*tmux, "kill-server"], check=False)

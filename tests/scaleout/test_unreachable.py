"""An MLflow tracking server that does not answer fails a worker in seconds, with one line and
exit 1: a port nobody listens on before the sweep, and a server that dies mid-sweep (then the
trials in flight stay RUNNING with their jobs, for the next run to re-attach)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from orchestrator import apisim
from tests.apisim.fixtures import openai_env
from tests.scaleout.conftest import PASSWORD
from tests.scaleout.pg import MlflowServer, free_port
from tests.scaleout.workers import ROOT, apisim_sweep, study


def _worker(sweep: Path, env: dict[str, str], runs: Path) -> subprocess.Popen[str]:
    full = {**os.environ, "PYTHONPATH": str(ROOT), **env, "FTSWEEP_RUNS_DIR": str(runs)}
    return subprocess.Popen(
        [str(Path(sys.executable).with_name("ftsweep")), "run", str(sweep)],
        cwd=ROOT,
        env=full,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def _one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    assert "Traceback" not in err and PASSWORD not in err, err
    return lines[0]


def test_a_tracking_server_nobody_answers_fails_in_seconds(
    tmp_path: Path, postgres_db: Callable[[str], str]
) -> None:
    sweep = apisim_sweep(tmp_path, "unreachable", trials=2)
    with apisim.start(state=tmp_path / "apisim", speed=600) as server:
        port = free_port()  # nobody listens there
        env = {
            **openai_env(server),
            "FTSWEEP_OPTUNA_STORAGE": postgres_db("optuna"),
            "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{port}",
        }
        started = time.monotonic()
        p = _worker(sweep, env, tmp_path / "runs")
        _, err = p.communicate(timeout=120)
        took = time.monotonic() - started
    print(f"unreachable tracking server: exit {p.returncode} after {took:.1f} s")
    assert p.returncode == 1, err
    line = _one_line(err)
    assert f"cannot reach the MLflow tracking server at http://127.0.0.1:{port}" in line
    assert "connection refused" in line
    assert took < 30, took  # process start-up and imports included


def test_a_tracking_server_that_dies_mid_sweep_stops_the_worker_in_seconds(
    tmp_path: Path, postgres_db: Callable[[str], str], own_mlflow_server: MlflowServer
) -> None:
    mlflow_server = own_mlflow_server
    sweep = apisim_sweep(tmp_path, "dies", trials=4, parallel=2)
    optuna_url = postgres_db("optuna")
    with apisim.start(state=tmp_path / "apisim", speed=2) as server:  # jobs run a while
        env = {
            **openai_env(server),
            "FTSWEEP_OPTUNA_STORAGE": optuna_url,
            "MLFLOW_TRACKING_URI": mlflow_server.url,
        }
        p = _worker(sweep, env, tmp_path / "runs")
        try:
            deadline = time.monotonic() + 120

            def submitted() -> bool:
                try:
                    trials = study(optuna_url, "dies").trials
                except KeyError:
                    return False  # the study does not exist yet
                return any("ftsweep.job_id" in t.user_attrs for t in trials)

            while not submitted():  # a state of the study, polled
                assert p.poll() is None and time.monotonic() < deadline
                time.sleep(0.1)
            mlflow_server.stop()  # the server goes away mid-sweep
            stopped = time.monotonic()
            _, err = p.communicate(timeout=120)
            took = time.monotonic() - stopped
        finally:
            if p.poll() is None:
                p.kill()
    print(f"tracking server died mid-sweep: exit {p.returncode} {took:.1f} s after")
    assert p.returncode == 1, err
    line = _one_line(err)
    assert f"lost the MLflow tracking server at {mlflow_server.url}" in line, line
    assert "re-attaches" in line, line
    assert took < 20, took
    s = study(optuna_url, "dies")
    assert any(t.state.name == "RUNNING" and "ftsweep.job_id" in t.user_attrs for t in s.trials)

"""SIGTERM (``kill``, systemd, Kubernetes, compose) stops ``ftsweep run`` and ``ftsweep retune``
as Ctrl-C does: one line naming the jobs still running, exit 143, stores a re-attach can
finish, and the next run re-attaches to those jobs instead of starting new ones.

Real processes of the CLI on a tiny-model sweep (local backend), sent a real SIGTERM while
their jobs train: ``ftsweep run`` directly, ``ftsweep retune`` as ``schedule --serve`` passes
a SIGTERM on to it."""

from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import Result
from tests.helpers import SignalledWhileCollected, chat_rows, write_jsonl
from tests.reliability.stores import check, seed_mlflow

ROOT = Path(__file__).resolve().parents[2]
SweepFactory = Callable[..., Path]


def _sweep(make_sweep: SweepFactory, name: str) -> Path:
    return make_sweep(
        name=name,
        trials=2,
        parallel=2,
        n_train=240,
        n_valid=24,
        space={
            "n_epochs": 3,
            "batch_size": 8,
            "learning_rate_multiplier": {"low": 0.3, "high": 3.0},
            "prompt_loss_weight": 0.1,
        },
    )


def _start(*args: str | Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "orchestrator", *map(str, args)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def _read_until(proc: subprocess.Popen[str], pattern: str, times: int, timeout: float) -> str:
    """stderr until ``pattern`` (a regex) matched ``times`` times."""
    assert proc.stderr is not None
    deadline = time.monotonic() + timeout
    seen = ""
    while len(re.findall(pattern, seen)) < times:
        left = deadline - time.monotonic()
        assert left > 0, f"{pattern!r} not seen {times} times in time: {seen}"
        ready, _, _ = select.select([proc.stderr], [], [], left)
        if ready:  # unbuffered: select() knows nothing of a file object's buffer
            chunk = os.read(proc.stderr.fileno(), 65536).decode()
            assert chunk, f"exited early ({proc.wait()}): {seen}"
            seen += chunk
    return seen


def _terminate_mid_run(proc: subprocess.Popen[str]) -> tuple[list[str], str]:
    """SIGTERM once both jobs train; the job ids and all of stderr."""
    seen = _read_until(proc, r"started \(local job \S+\)", 2, timeout=300)
    jobs = re.findall(r"started \(local job (\S+)\)", seen)
    proc.send_signal(signal.SIGTERM)
    _, rest = proc.communicate(timeout=120)
    return jobs, seen + rest


def _assert_stopped_like_ctrl_c(proc: subprocess.Popen[str], err: str, jobs: list[str]) -> None:
    spec = re.escape(str(proc.args[-1]))  # type: ignore[index]
    assert proc.returncode == 143, err
    assert "Traceback" not in err
    assert re.fullmatch(
        rf"error: interrupted with 2 job\(s\) still running at local \(trial 0: job \S+, "
        rf"trial 1: job \S+\); `ftsweep run {spec}` re-attaches to them",
        err.strip().splitlines()[-1],
    ), err
    assert sorted(re.findall(r"job (\S+?)[,)]", err.strip().splitlines()[-1])) == sorted(jobs)


def _assert_reattached(err: str, jobs: list[str], runs_dir: Path, name: str) -> None:
    for job in jobs:
        assert f"re-attached to job {job}" in err, err
    assert "started (local job" not in err  # no second job for a trial
    folders = list((runs_dir / "backends/local/jobs").iterdir())
    assert sorted(p.name for p in folders) == sorted(jobs), folders
    study, found = check(runs_dir, name)
    assert found.problems() == []  # nothing RUNNING, nothing logged twice or lost
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]
    assert sorted(t.user_attrs["ftsweep.job_id"] for t in study.trials) == sorted(jobs)


def test_sigterm_stops_run_like_ctrl_c_and_the_next_run_reattaches(
    make_sweep: SweepFactory, runs_dir: Path
) -> None:
    spec = _sweep(make_sweep, "termed")
    seed_mlflow(runs_dir)
    proc = _start("run", spec)
    jobs, err = _terminate_mid_run(proc)
    _assert_stopped_like_ctrl_c(proc, err, jobs)

    again = subprocess.run(
        [sys.executable, "-m", "orchestrator", "run", str(spec)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert again.returncode == 0, again.stderr
    _assert_reattached(again.stderr, jobs, runs_dir, "termed")


def test_sigterm_to_schedule_serve_stops_its_retune_like_ctrl_c(
    make_sweep: SweepFactory, runs_dir: Path, tmp_path: Path
) -> None:
    """``docker stop`` of a scheduler mid-retune: the retune gets the SIGTERM, prints its line
    and exits 143, the scheduler exits 0 (its documented stop), the next retune re-attaches."""
    import shlex

    spec = _sweep(make_sweep, "served")
    seed_mlflow(runs_dir)
    retune = shlex.join([sys.executable, "-m", "orchestrator", "retune"])
    serve = subprocess.Popen(
        [sys.executable, "-m", "orchestrator", "schedule", str(spec), "--serve",
         "--cron", "* * * * *", "--workdir", str(tmp_path)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), "FTSWEEP_SCHEDULE_COMMAND": retune},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    jobs, err = _terminate_mid_run(serve)  # the next minute starts it: at most 60 s of waiting
    assert serve.returncode == 0, err
    lines = err.strip().splitlines()
    assert lines[-1] == "ftsweep schedule served: stopped (SIGTERM)"
    assert "Traceback" not in err
    assert re.fullmatch(
        r"error: interrupted with 2 job\(s\) still running at local \(trial 0: job \S+, "
        rf"trial 1: job \S+\); `ftsweep run {re.escape(str(spec))}` re-attaches to them",
        lines[-2],
    ), err

    again = subprocess.run(
        [sys.executable, "-m", "orchestrator", "retune", str(spec)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert again.returncode == 0, again.stderr
    _assert_reattached(again.stderr, jobs, runs_dir, "served")


def _small_spec(tmp_path: Path) -> Path:
    """A sweep file of 12 chat examples on the ``tiny`` model (never trained: the tests
    stop it while it is planned)."""
    spec = tmp_path / "s.yaml"
    train = write_jsonl(tmp_path / "train.jsonl", chat_rows(12))
    backend = {"name": "local", "model": "tiny"}
    spec.write_text(
        yaml.safe_dump({"name": "s", "data": {"train": str(train)}, "backend": backend})
    )
    return spec


def test_sigterm_before_the_sweep_starts_is_one_line_exit_143(
    cli: Callable[..., Result], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The handler lives for the command only: a real SIGTERM to this process while the data
    is checked ends the command as Ctrl-C would, and the handler before it is back after."""
    spec = _small_spec(tmp_path)

    def terminated(*args: Any, **kwargs: Any) -> Any:
        os.kill(os.getpid(), signal.SIGTERM)  # delivered at the next bytecode
        time.sleep(30)
        raise AssertionError("SIGTERM did not interrupt the command")

    monkeypatch.setattr("orchestrator.engine.plan_spec", terminated)
    before = signal.getsignal(signal.SIGTERM)
    r = cli("run", spec)
    assert (r.code, r.err) == (143, "error: interrupted\n")
    assert signal.getsignal(signal.SIGTERM) is before


def test_sigterm_that_lands_in_a_finalizer_still_stops_the_command(
    cli: Callable[..., Result], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An interruption Python dropped in a finalizer is sent again: one line, exit 143,
    where before the command went on to the end as if no signal had come."""
    spec = _small_spec(tmp_path)

    def collected_then_waits(*args: Any, **kwargs: Any) -> Any:
        SignalledWhileCollected()  # collected at once, signalled in its __del__
        time.sleep(30)
        raise AssertionError("the SIGTERM dropped in a finalizer was not sent again")

    monkeypatch.setattr("orchestrator.engine.plan_spec", collected_then_waits)
    hook = sys.unraisablehook
    r = cli("run", spec)
    assert (r.code, r.err) == (143, "error: interrupted\n")
    assert sys.unraisablehook is hook

"""``ftsweep retune`` and ``history`` as a user runs them: real CLI processes on the tiny local
model with the embedded stores."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from orchestrator.backends.local.tasks import write_task

pytestmark = pytest.mark.timeout(600)


def _ftsweep(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    return subprocess.run(
        [sys.executable, "-m", "orchestrator", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=500,
    )


def _start(cwd: Path, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    return subprocess.Popen(
        [sys.executable, "-m", "orchestrator", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.fixture
def project(tmp_path: Path, tiny_model: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project folder: data, a sweep file, the embedded stores under ``mlruns/``."""
    for name in ("FTSWEEP_RUNS_DIR", "MLFLOW_TRACKING_URI", "FTSWEEP_OPTUNA_STORAGE"):
        monkeypatch.delenv(name, raising=False)
    train, valid = write_task("reverse", tmp_path / "data", n_train=40, n_valid=10)
    spec = {
        "name": "nightly",
        "data": {"train": str(train), "valid": str(valid)},
        "backend": {"name": "local", "model": "tiny", "options": {"torch_threads": 1}},
        "space": {
            "n_epochs": {"low": 2, "high": 3},
            "batch_size": {"low": 4, "high": 12},
            "learning_rate_multiplier": {"low": 0.5, "high": 3, "log": True},
            "prompt_loss_weight": 0.1,
        },
        "trials": 2,
        "parallel": 2,
        "sampler": {"name": "random", "seed": 3},
    }
    (tmp_path / "nightly.yaml").write_text(yaml.safe_dump(spec))
    return tmp_path


def test_retune_lifecycle_from_the_command_line(project: Path) -> None:
    first = _ftsweep(project, "retune", "nightly.yaml", "--report", "reports/first.html")
    assert first.returncode == 0, first.stderr
    assert "generation 1 (nightly): 2 trial(s) completed" in first.stderr
    assert (project / "reports" / "first.html").is_file()

    start = time.monotonic()
    same = _ftsweep(project, "retune", "nightly.yaml")
    took = time.monotonic() - start
    assert same.returncode == 0, same.stderr
    assert "nothing changed since generation 1" in same.stderr
    assert took < 10, f"an unchanged retune took {took:.1f} s"
    jobs = project / "mlruns" / "backends" / "local" / "jobs"
    assert len(list(jobs.iterdir())) == 2  # nothing trained

    train = project / "data" / "reverse.train.jsonl"
    lines = train.read_text().splitlines(keepends=True)
    train.write_text("".join(lines + lines[:20]))  # 40 -> 60 examples
    # two retunes at once (cron and a user, two machines): one sweep
    procs = [_start(project, "retune", "nightly.yaml") for _ in range(2)]
    outs = [p.communicate(timeout=500) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    errs = [err for _, err in outs]
    started = [e for e in errs if "starting generation 2 (nightly.g2)" in e]
    assert len(started) == 1, errs
    assert "training data: 40 -> 60 examples (+20)" in started[0]
    other = next(e for e in errs if e is not started[0])
    assert "another retune of nightly is running" in other or "nothing changed" in other

    history = _ftsweep(project, "history", "nightly.yaml", "--json")
    assert history.returncode == 0, history.stderr
    rows = json.loads(history.stdout)
    assert [r["generation"] for r in rows] == [1, 2]
    assert rows[1]["previous"] == "nightly" and rows[1]["current"] and not rows[0]["current"]
    assert rows[1]["completed"] == 2 and rows[1]["model"]
    table = _ftsweep(project, "history", "nightly.yaml")
    assert "nightly.g2" in table.stdout and "40 -> 60 examples" in table.stdout
    status = _ftsweep(project, "status", "nightly.yaml")
    assert "nightly" in status.stdout


def test_retune_bad_input_is_one_line_and_exit_2(project: Path) -> None:
    missing = _ftsweep(project, "retune", "nope.yaml")
    assert missing.returncode == 2
    assert missing.stderr.count("\n") == 1 and "nope.yaml" in missing.stderr
    never = _ftsweep(project, "history", "nightly.yaml")
    assert never.returncode != 0 and "Traceback" not in never.stderr
    assert not (project / "mlruns" / "optuna.db").exists()  # nothing created

"""A finished sweep run again does nothing, and quickly: its study is read once, MLflow is
not opened, nothing is written. Whatever a crash or a change left for a run to do still
takes the full path."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import optuna
import pytest
from mlflow import MlflowClient

from orchestrator.core.attrs import StudyAttrs
from orchestrator.engine import Overrides
from orchestrator.engine.events import SweepFinished, SweepStarted
from orchestrator.results.table import render
from tests.engine.test_loop import _run, _spec, instant  # noqa: F401  (the fixture)
from tests.helpers import chat_rows, write_jsonl

#: what a finished sweep run again must not import: the model libraries, and neither pandas
#: (the table is printed from plain rows), MLflow (not opened), SQLAlchemy (a SQLite store is
#: read through sqlite3) nor rich (in a terminal: no panel is shown for nothing to do)
HEAVY = ("pandas", "torch", "transformers", "mlflow", "sqlalchemy", "rich")

#: ``ftsweep run SPEC`` in a fresh interpreter, then the heavy modules it imported (JSON)
_NOOP = """
import json, sys
from orchestrator.cli import run
code = run(["run", sys.argv[1]])
heavy = sorted(m for m in sys.modules if m.split(".")[0] in sys.argv[2].split(","))
print(json.dumps({"code": code, "heavy": heavy}))
"""


def noop_in_a_fresh_process(
    spec: Path, cwd: Path, pythonpath: Sequence[Path] = (), *, terminal: bool = False
) -> tuple[dict[str, object], str]:
    """Run ``ftsweep run spec`` as a fresh command (what a user waits for), its stderr a
    pipe or, with ``terminal``, a pseudo-terminal (the live view's mode): its exit code and
    the heavy modules it imported, and its stderr."""
    root = Path(__file__).resolve().parents[2]
    path = [str(p) for p in (*pythonpath, root)] + [os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in path if p)}
    env["TERM"] = "xterm-256color"
    master, slave = os.openpty() if terminal else (-1, -1)
    done = subprocess.run(
        [sys.executable, "-c", _NOOP, str(spec), ",".join(HEAVY)],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=slave if terminal else subprocess.PIPE,
        text=True,
        timeout=120,
    )
    err = done.stderr
    if terminal:
        os.close(slave)
        chunks = []
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the terminal's other end is closed and all was read
                break
            if not chunk:
                break
            chunks.append(chunk)
        os.close(master)
        err = b"".join(chunks).decode()
    assert done.returncode == 0, err[-2000:]
    found: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return found, err


def _digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("*.db"))}


def _refuse_mlflow(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_: object, **__: object) -> None:
        raise AssertionError("MLflow was opened")

    monkeypatch.setattr("orchestrator.tracking.Tracker.__init__", refuse)


def test_a_finished_sweep_run_again_reads_only(
    instant: Path,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    spec = _spec(tmp_path)
    first, _ = _run(spec)
    assert first.changed and first.completed == 4
    before = _digest(instant)
    _refuse_mlflow(monkeypatch)
    again, rec = _run(spec)
    assert not again.changed and again.stop_reason is None
    assert again.frame.equals(first.frame)
    # the table printed from the rows is the one the DataFrame gives
    assert render(again.table, "table") == render(first.frame, "table")
    assert len(again.table) == len(first.frame) == 4
    assert again.experiment_id == first.experiment_id
    assert first.advice is not None and again.advice == first.advice
    assert [type(e) for e in rec.events] == [SweepStarted, SweepFinished]
    assert _digest(instant) == before  # neither store written
    # as a fresh command (piped, then in a terminal): it says so, and imports neither a model
    # library, pandas, MLflow, SQLAlchemy nor rich (no live panel is drawn for nothing to do)
    for terminal in (False, True):
        site = [tmp_path / "site"]
        found, err = noop_in_a_fresh_process(spec, tmp_path, site, terminal=terminal)
        assert found == {"code": 0, "heavy": []}
        assert "sweep inst is already complete (4 trials)" in err
        assert "\x1b" not in err  # no panel, no cursor control
    assert _digest(instant) == before


def test_a_crash_before_mlflow_ended_is_mended(instant: Path, tmp_path: Path) -> None:  # noqa: F811
    spec = _spec(tmp_path)
    _run(spec)
    study = optuna.load_study(study_name="inst", storage=f"sqlite:///{instant / 'optuna.db'}")
    parent = str(study.user_attrs[StudyAttrs.MLFLOW_PARENT_RUN])
    client = MlflowClient(tracking_uri=f"sqlite:///{instant / 'mlflow.db'}")
    # killed after the study was concluded, before MLflow's parent run ended
    client.set_terminated(parent, "RUNNING")
    study.set_user_attr(StudyAttrs.LOGGED, None)
    again, _ = _run(spec)
    assert not again.changed
    assert client.get_run(parent).info.status == "FINISHED"
    concluded = again.study.user_attrs[StudyAttrs.CONCLUDED]
    assert again.study.user_attrs[StudyAttrs.LOGGED] == concluded["at"]


def test_more_trials_or_changed_data_take_the_full_path(
    instant: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    spec = _spec(tmp_path)
    _run(spec)
    more, _ = _run(spec, overrides=Overrides(trials=5))
    assert more.changed and more.completed == 5
    write_jsonl(tmp_path / "data" / "train.jsonl", chat_rows(41))
    changed, rec = _run(spec, overrides=Overrides(trials=5))
    assert not changed.changed
    assert any("since this sweep started" in text for text in rec.notes())


def test_a_finished_sweep_run_again_counts_no_tokens(
    instant: Path,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The data are hashed and compared with the recorded fingerprint before a tokenizer is
    asked for: a finished sweep run again builds no token counter; changed data do."""
    from orchestrator.backends import registry

    backend = registry.load("instant")
    real = backend.token_counter
    asked: list[str] = []

    def counting(model: str, options: object) -> object:
        asked.append(model)
        return real(model, options)  # type: ignore[arg-type]

    monkeypatch.setattr(backend, "token_counter", staticmethod(counting))
    spec = _spec(tmp_path)
    first, _ = _run(spec)
    assert first.changed and asked == ["instant-small"]
    before = _digest(instant)
    asked.clear()
    again, rec = _run(spec)
    assert not again.changed and asked == []
    assert [type(e) for e in rec.events] == [SweepStarted, SweepFinished]
    assert _digest(instant) == before  # a read
    write_jsonl(tmp_path / "data" / "train.jsonl", chat_rows(41))
    changed, rec = _run(spec, overrides=Overrides(trials=5))
    assert changed.changed and asked == ["instant-small"]
    assert any("since this sweep started" in text for text in rec.notes())

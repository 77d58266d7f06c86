"""The retune lock (a study in the Optuna storage) and its holder's liveness: a holder whose
process runs on this host keeps it, one whose process is gone loses it at once (the test
``orchestrator.stores.ledger.owner_alive`` applies to a trial's owner too)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import optuna

from tests.retune.test_retune import _retune, _spec, instant

__all__ = ["instant"]  # the fixture, used by name

LOCK_ATTR = "ftsweep.lock"


def _hold_lock(runs: Path, owner: str) -> None:
    """A retune lock as a retune on ``owner`` (``host:pid``) holds it, heartbeat fresh."""
    study = optuna.create_study(
        study_name="nightly.retune-lock", storage=f"sqlite:///{runs / 'optuna.db'}"
    )
    now = time.time()
    study.set_user_attr(LOCK_ATTR, {"owner": owner, "since": now, "heartbeat": now})


def test_a_live_holder_keeps_the_lock(instant: Path, tmp_path: Path) -> None:
    spec = _spec(tmp_path)
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        _hold_lock(instant, f"{socket.gethostname()}:{holder.pid}")
        result = _retune(spec)
    finally:
        holder.kill()
        holder.wait()
    assert result.action == "locked"
    assert f"another retune of nightly is running ({socket.gethostname()}:{holder.pid}" in (
        result.message
    )


def test_a_dead_holders_lock_is_broken(instant: Path, tmp_path: Path) -> None:
    spec = _spec(tmp_path)
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    _hold_lock(instant, f"{socket.gethostname()}:{gone.stdout.strip()}")
    result = _retune(spec)
    assert result.action == "first" and result.completed
    names = [s.study_name for s in optuna.get_all_study_summaries(f"sqlite:///{instant}/optuna.db")]
    assert "nightly.retune-lock" not in names  # released after the run

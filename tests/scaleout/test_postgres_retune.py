"""``ftsweep retune`` on a PostgreSQL study storage: the first run on an empty database, an
unchanged retune, and two retunes at once (separate connections, as from two machines)
making one new generation."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from orchestrator.config import load_spec
from orchestrator.stores.read import generations
from orchestrator.workflows.retune import RetuneResult
from tests.retune.test_retune import _append, _retune, _spec, instant  # noqa: F401


def test_retunes_share_one_lock_through_postgres(
    instant: Path,  # noqa: F811
    tmp_path: Path,
    postgres_db: Callable[[str], str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FTSWEEP_OPTUNA_STORAGE", postgres_db("retune"))
    spec = _spec(tmp_path, trials=2, parallel=1)
    assert _retune(spec).action == "first"  # an empty database: no tables yet
    assert _retune(spec).action == "unchanged"
    _append(tmp_path, 20)
    results: list[RetuneResult] = []
    gate = threading.Barrier(3)

    def one() -> None:
        gate.wait()
        results.append(_retune(spec))

    threads = [threading.Thread(target=one) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    actions = sorted(r.action for r in results)
    assert actions.count("started") == 1, [r.message for r in results]
    assert set(actions) <= {"started", "locked", "unchanged"}
    assert [g.number for g in generations(load_spec(spec))] == [1, 2]

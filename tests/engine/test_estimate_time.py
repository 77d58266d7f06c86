"""`ftsweep estimate` on the local trainer gives wall times measured by earlier jobs."""

from __future__ import annotations

import re
from pathlib import Path

from tests.engine.conftest import SweepFactory


def test_local_estimate_times_come_from_earlier_jobs(
    cli, make_sweep: SweepFactory, runs_dir: Path
) -> None:
    spec = make_sweep(trials=1)
    before = cli("estimate", spec)
    assert before.code == 0, before.err
    assert "time per trial" in before.out and "unknown until a tiny job has run" in before.out
    assert not (runs_dir / "optuna.db").exists()  # estimating creates no store

    assert cli("run", spec).code == 0
    after = cli("estimate", spec)
    assert after.code == 0, after.err
    row = next(line for line in after.out.splitlines() if line.startswith("time per trial"))
    # the finished job measured its throughput: later estimates come from it (issue 21)
    assert re.search(r"measured: [\d.]+k? tok/s from 1 trial\b", row), row
    assert re.match(r"time per trial\s+(\d+h)?(\d+m)?\d+s – (\d+h)?(\d+m)?\d+s \(", row), row
    assert re.search(r"time of 1 trials\s+about \d", after.out)

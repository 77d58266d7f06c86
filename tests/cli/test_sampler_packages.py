"""A sampler whose package is missing is refused by every command that plans the sweep, alike:
``space``, ``estimate`` and ``run`` exit 2 naming ``sampler.name`` before any store exists."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _sweep(tmp_path: Path) -> Path:
    shutil.copytree(ROOT / "data" / "tiny", tmp_path / "data" / "tiny")
    (tmp_path / "sweeps").mkdir()
    text = (ROOT / "sweeps" / "tiny.yaml").read_text(encoding="utf-8")
    spec = tmp_path / "sweeps" / "cma.yaml"
    spec.write_text(text + "sampler: {name: cmaes}\n", encoding="utf-8")
    return spec


@pytest.mark.parametrize("command", ["space", "estimate", "run"])
def test_a_sampler_without_its_package_exits_2_everywhere(tmp_path: Path, command: str) -> None:
    spec = _sweep(tmp_path)
    hidden = tmp_path / "no-cmaes"  # shadows the installed package, as if it were absent
    hidden.mkdir()
    (hidden / "cmaes.py").write_text("raise ImportError('No module named cmaes')\n")
    runs = tmp_path / "runs"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(hidden), str(ROOT)]),
        "FTSWEEP_RUNS_DIR": str(runs),
    }
    proc = subprocess.run(
        [sys.executable, "-m", "orchestrator", command, str(spec)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr  # before any model is built or data is counted
    assert "sampler.name" in lines[0] and "cmaes" in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert not runs.exists()  # nothing created

"""The shipped contract suite, run the way a third-party backend author runs it: the ``toy``
backend (:mod:`tests.testing.toy`) is registered through an installed distribution's entry
point, and this module is the docstring example of :mod:`orchestrator.testing.contract`."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator.backends.base import Hyperparameters, TrainingRequest
from orchestrator.testing import BackendCase
from orchestrator.testing.contract import *  # noqa: F403

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def toy_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A site folder holding the dist-info of a package that registers ``toy``."""
    site = tmp_path_factory.mktemp("toy-site")
    info = site / "ftsweep_toy-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: ftsweep-toy\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        "[ftsweep.backends]\ntoy = tests.testing.toy:ToyBackend\n"
    )
    return site


@pytest.fixture
def backend_case(tmp_path: Path, toy_site: Path, monkeypatch: pytest.MonkeyPatch) -> BackendCase:
    monkeypatch.syspath_prepend(str(toy_site))
    train = tmp_path / "train.jsonl"
    rows = [
        {"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": "a"}]}
        for i in range(20)
    ]
    train.write_text("".join(json.dumps(row) + "\n" for row in rows))
    workdir = tmp_path / "work"

    def request(key: str, n_epochs: int) -> TrainingRequest:
        hp = Hyperparameters(n_epochs=n_epochs, batch_size=4, learning_rate_multiplier=0.1)
        return TrainingRequest(key=key, model="toy-model", hyperparameters=hp, train_file=train)

    @contextlib.contextmanager
    def busy() -> Iterator[None]:
        flag = workdir / "busy"
        flag.parent.mkdir(parents=True, exist_ok=True)
        flag.touch()
        try:
            yield
        finally:
            flag.unlink()

    path = os.pathsep.join(filter(None, [str(toy_site), str(ROOT), os.environ.get("PYTHONPATH")]))
    return BackendCase(
        name="toy",
        options={"steps_per_second": 50.0},
        workdir=workdir,
        short_request=lambda key: request(key, 2),
        long_request=lambda key: request(key, 1000),
        env={"PYTHONPATH": path},
        timeout_s=20.0,
        busy=busy,
    )


def test_the_package_imports_without_pytest() -> None:
    """``import orchestrator.testing`` loads no pytest (only ``.contract`` does)."""
    code = "import sys, orchestrator.testing; print('pytest' in sys.modules)"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    assert proc.stdout.strip() == "False"

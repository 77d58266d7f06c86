"""The shipped contract suite, run the way a third-party backend author runs it, against the
shipped instant backend (:mod:`orchestrator.testing.instant`) registered through an installed
distribution's entry point: once with jobs that move on as they are polled, once with jobs
that have ended at submit (the suite's declared ``instant_jobs`` mode)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.backends.base import Hyperparameters, TrainingRequest
from orchestrator.testing import BackendCase, instant
from orchestrator.testing.contract import *  # noqa: F403

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def instant_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A site folder holding the dist-info of a package that registers ``instant``."""
    site = tmp_path_factory.mktemp("instant-site")
    instant.install(site)
    return site


@pytest.fixture(params=["polled", "instant_jobs"])
def backend_case(request: pytest.FixtureRequest, tmp_path: Path, instant_site: Path) -> BackendCase:
    train = tmp_path / "train.jsonl"
    rows = [
        {"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": "a"}]}
        for i in range(20)
    ]
    train.write_text("".join(json.dumps(row) + "\n" for row in rows))
    workdir = tmp_path / "work"

    def make(key: str, n_epochs: int) -> TrainingRequest:
        hp = Hyperparameters(n_epochs=n_epochs, batch_size=4, learning_rate_multiplier=0.1)
        return TrainingRequest(key=key, model="toy-model", hyperparameters=hp, train_file=train)

    ends_at_submit = request.param == "instant_jobs"
    path = [str(instant_site), str(ROOT), os.environ.get("PYTHONPATH")]
    return BackendCase(
        name="instant",
        options={
            "persist": True,
            "price_per_epoch": 0.25,
            "total_steps": 10,  # 2 epochs of 10 steps: 5 each; 20 epochs: 1 each
            "finish_at_submit": ends_at_submit,
        },
        workdir=workdir,
        short_request=lambda key: make(key, 2),
        long_request=lambda key: make(key, 20),
        env={"PYTHONPATH": os.pathsep.join(filter(None, path))},
        timeout_s=20.0,
        busy=lambda: instant.provider_busy(workdir),
        instant_jobs=ends_at_submit,
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

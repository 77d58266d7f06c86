"""Kill ``ftsweep run`` at every write boundary of a trial's life, run it again, and check that
the study, MLflow and the provider tell the same story: no trial or run left RUNNING, every
metric step logged once and none lost, intermediate values equal to their epoch's evaluation,
one job per trial, no job left running."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from orchestrator import apisim
from orchestrator.apisim.server import SimServer
from orchestrator.backends.local.tasks import write_task
from tests.apisim.fixtures import OPENAI_KEY, openai_env
from tests.engine.conftest import SweepFactory
from tests.reliability.stores import check, seed_mlflow

ROOT = Path(__file__).resolve().parents[2]

#: (event after which the run dies, which one, only a pruning EpochReported)
KILL_POINTS = [
    ("SweepStarted", 1, False),  # stores open, nothing asked
    ("TrialStarted", 1, False),  # request in the ledger, job not submitted
    ("TrialSubmitted", 2, False),  # a job id in the ledger, another job running
    ("Points", 2, False),  # points logged, their epoch end not yet reported
    ("EpochReported", 1, False),  # an objective reported to the pruner
    ("EpochReported", 1, True),  # a prune recorded, its cancel not yet sent
    ("TrialFinished", 1, False),  # the outcome recorded and in MLflow, the study not told
    ("TrialFinished", 3, False),  # later in the sweep, other trials in flight
]


def _pruner(point: tuple[str, int, bool]) -> dict[str, Any]:
    """The median pruner; for the prune's own kill point, one that stops every trial at its
    first epoch (so a prune surely happens while the job runs)."""
    if point[2]:
        return {"name": "threshold", "options": {"upper": 0.0}}
    return {"name": "median", "options": {"n_startup_trials": 1}}


def _kill_then_rerun(spec: Path, point: tuple[str, int, bool], env: dict[str, str]) -> str:
    kind, nth, pruned = point
    args = [sys.executable, "-m", "tests.reliability.killer", str(spec), kind, str(nth)]
    if pruned:
        args.append("pruned")
    first = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert first.returncode == 137, f"never reached {point}: rc {first.returncode}\n{first.stderr}"
    again = subprocess.run(
        [sys.executable, "-m", "orchestrator", "run", str(spec)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert again.returncode in (0, 1), again.stderr
    return again.stderr


def _assert_agree(runs: Path, name: str, trials: int) -> Any:
    study, found = check(runs, name)
    assert found.problems() == [], found.problems()
    assert len(study.trials) == trials
    return study


# -- the local trainer ---------------------------------------------------------------------------
LOCAL_SPACE = {
    "n_epochs": 3,
    "batch_size": 8,
    "learning_rate_multiplier": {"low": 0.01, "high": 3.0, "log": True},
    "prompt_loss_weight": 0.1,
}


#: the local trainer is slower: the boundaries where its own code (job folders, workers) acts
LOCAL_KILL_POINTS = [KILL_POINTS[i] for i in (1, 2, 3, 5, 6)]


@pytest.mark.parametrize(
    "point", LOCAL_KILL_POINTS, ids=lambda p: f"{p[0]}{p[1]}{'-pruned' if p[2] else ''}"
)
def test_local_trainer_survives_a_kill(
    make_sweep: SweepFactory, runs_dir: Path, point: tuple[str, int, bool]
) -> None:
    spec = make_sweep(
        name="crash",
        trials=4,
        parallel=2,
        n_train=1200 if point[2] else 240,  # long epochs, so the prune comes mid-job
        n_valid=24,
        space=LOCAL_SPACE,
        sampler={"name": "random", "seed": 3},
        pruner=_pruner(point),
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    seed_mlflow(runs_dir)
    _kill_then_rerun(spec, point, env)
    study = _assert_agree(runs_dir, "crash", 4)
    jobs = sorted((runs_dir / "backends/local/jobs").iterdir())
    ids = [t.user_attrs["ftsweep.job_id"] for t in study.trials if "ftsweep.job_id" in t.user_attrs]
    assert sorted(ids) == sorted(set(ids)) and len(jobs) == len(ids)  # one job per trial
    for job in jobs:  # none left running
        status = json.loads((job / "status.json").read_text())["status"]
        assert status in ("succeeded", "cancelled", "failed"), (job.name, status)


# -- a remote provider (apisim) ------------------------------------------------------------------
@pytest.fixture
def sim(tmp_path: Path) -> Any:
    server = apisim.start(state=tmp_path / "apisim", speed=60.0)
    yield server
    server.close()


def _remote_spec(tmp_path: Path, server: SimServer, point: tuple[str, int, bool]) -> Path:
    train, valid = write_task("tickets", tmp_path / "data", n_train=40, n_valid=12, fmt="chat")
    spec = {
        "name": "crash-remote",
        "data": {"train": str(train), "valid": str(valid)},
        "backend": {
            "name": "openai",
            "model": "gpt-4o-mini",
            "options": {"poll_interval": [0.05, 0.2], "max_wait": 5},
        },
        "space": {"n_epochs": 3},
        "trials": 4,
        "parallel": 2,
        "sampler": {"name": "random", "seed": 0},
        "pruner": _pruner(point),
    }
    path = tmp_path / "remote.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


@pytest.mark.parametrize(
    "point", KILL_POINTS, ids=lambda p: f"{p[0]}{p[1]}{'-pruned' if p[2] else ''}"
)
def test_remote_provider_survives_a_kill(
    tmp_path: Path, sim: SimServer, point: tuple[str, int, bool]
) -> None:
    runs = tmp_path / "mlruns"
    env = {
        **os.environ,
        **openai_env(sim),
        "PYTHONPATH": str(ROOT),
        "FTSWEEP_RUNS_DIR": str(runs),
    }
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("FTSWEEP_OPTUNA_STORAGE", None)
    spec = _remote_spec(tmp_path, sim, point)
    seed_mlflow(runs)
    _kill_then_rerun(spec, point, env)
    study = _assert_agree(runs, "crash-remote", 4)
    from openai import OpenAI

    jobs = list(
        OpenAI(api_key=OPENAI_KEY, base_url=sim.url + "/v1").fine_tuning.jobs.list(limit=100)
    )
    keys = [j.metadata["ftsweep_key"] for j in jobs]
    assert len(keys) == len(set(keys))  # nothing paid twice
    assert all(j.status in ("succeeded", "cancelled", "failed") for j in jobs)
    ids = {t.user_attrs["ftsweep.job_id"] for t in study.trials if "ftsweep.job_id" in t.user_attrs}
    assert ids == {j.id for j in jobs}
    blobs = [p.read_bytes() for p in runs.rglob("*") if p.is_file()]
    assert not any(OPENAI_KEY.encode() in b for b in blobs)  # the key is in no store or log

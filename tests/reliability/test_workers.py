"""Three `ftsweep run` processes on one study, whatever the sampler proposes: nobody crashes,
the trial limit is exact, each configuration is trained once, every trial is told once, and
MLflow agrees with the study."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from optuna.storages.journal import JournalFileBackend

from orchestrator.testing import instant as fakes
from tests.helpers import chat_rows, write_jsonl
from tests.reliability.stores import check, seed_mlflow

ROOT = Path(__file__).resolve().parents[2]
TRIALS = 9


def _study(url: str, name: str) -> optuna.Study:
    if url.startswith("journal:"):
        storage = optuna.storages.JournalStorage(JournalFileBackend(url.removeprefix("journal:")))
        return optuna.load_study(study_name=name, storage=storage)
    return optuna.load_study(study_name=name, storage=url)


@pytest.mark.parametrize("storage", ["sqlite", "journal"])
@pytest.mark.parametrize("seed", [0, None], ids=["seeded", "unseeded"])
def test_three_workers_share_one_study(tmp_path: Path, storage: str, seed: int | None) -> None:
    site = tmp_path / "site"
    fakes.install(site)
    runs = tmp_path / "mlruns"
    seed_mlflow(runs)
    url = (
        f"sqlite:///{runs / 'optuna.db'}"
        if storage == "sqlite"
        else f"journal:{tmp_path / 'j.log'}"
    )
    train = write_jsonl(tmp_path / "train.jsonl", chat_rows(40))
    valid = write_jsonl(tmp_path / "valid.jsonl", chat_rows(8, start=100))
    spec = tmp_path / "shared.yaml"
    spec.write_text(
        yaml.safe_dump(
            {
                "name": "shared",
                "data": {"train": str(train), "valid": str(valid)},
                "backend": {"name": "instant", "model": "m", "options": {"poll_seconds": 0.05}},
                "space": {
                    "n_epochs": [2, 3],
                    "batch_size": [1, 2],
                    "learning_rate_multiplier": [0.05, 0.1, 0.2],
                },
                "trials": TRIALS,
                "parallel": 2,
                "sampler": {"name": "random", "seed": seed},
                "storage": {"optuna": url},
            }
        )
    )
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(site), str(ROOT)]),
        "FTSWEEP_RUNS_DIR": str(runs),
    }
    env.pop("MLFLOW_TRACKING_URI", None)
    cmd = [sys.executable, "-m", "orchestrator", "run", str(spec)]
    workers = [
        subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        for _ in range(3)
    ]
    errors = []
    for w in workers:
        _, err = w.communicate(timeout=300)
        if w.returncode != 0:
            errors.append(err)
    assert not errors, errors  # no worker crashed

    study = _study(url, "shared")
    states = Counter(t.state.name for t in study.trials)
    assert states["RUNNING"] == 0
    counted = [t for t in study.trials if t.state.name in ("COMPLETE", "PRUNED", "FAIL")]
    assert len(counted) == TRIALS and states["COMPLETE"] == TRIALS, states  # the limit is exact
    trained = [t for t in study.trials if "ftsweep.job_id" in t.user_attrs]
    configs = Counter(t.user_attrs["ftsweep.config_hash"] for t in trained)
    assert all(n == 1 for n in configs.values()), configs  # each configuration trained once
    for t in study.trials:
        if "ftsweep.reused_from" in t.user_attrs:
            twin = study.trials[t.user_attrs["ftsweep.reused_from"]]
            assert t.value == twin.value
    _, found = check(runs, "shared", study)
    assert found.problems() == []


def test_a_dead_workers_trials_are_finished_by_another(make_sweep: Any, runs_dir: Path) -> None:
    """Worker A dies (kill -9) once its first job runs; worker B, running beside it, adopts A's
    trials, re-attaches to their jobs and finishes them: nothing trained twice."""
    spec = make_sweep(
        name="adopted",
        trials=4,
        parallel=2,
        n_train=240,
        n_valid=24,
        space={
            "n_epochs": 3,
            "batch_size": 8,
            "learning_rate_multiplier": {"low": 0.3, "high": 3.0},
            "prompt_loss_weight": 0.1,
        },
        sampler={"name": "random", "seed": None},
    )
    seed_mlflow(runs_dir)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    dying = subprocess.Popen(
        [sys.executable, "-m", "tests.reliability.killer", str(spec), "TrialSubmitted", "1"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    survivor = subprocess.Popen(  # beside it, from the start
        [sys.executable, "-m", "orchestrator", "run", str(spec)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    dying.wait(timeout=300)
    _, err = survivor.communicate(timeout=300)
    assert dying.returncode == 137
    assert survivor.returncode == 0, err
    assert err.count("re-attached to job") >= 1, err
    study, found = check(runs_dir, "adopted")
    assert found.problems() == []
    assert [t.state.name for t in study.trials].count("COMPLETE") == 4
    jobs = list((runs_dir / "backends/local/jobs").iterdir())
    assert len(jobs) == len({t.user_attrs["ftsweep.job_id"] for t in study.trials})

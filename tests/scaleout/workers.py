"""Running several `ftsweep run` workers (real CLI subprocesses) the way compose.yaml runs
them, and reading what they did from the stores."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import yaml
from mlflow import MlflowClient

from orchestrator.backends.local.tasks import write_task
from tests.scaleout.compose import Native

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Worker:
    code: int
    err: str


def run_workers(
    n: int,
    native: Native,
    sweep: Path,
    env: Mapping[str, str],
    runs_root: Path,
    timeout: float = 240,
) -> list[Worker]:
    """``n`` workers started together, each with the compose worker's command and
    environment and a runs folder of its own (as on separate machines)."""
    cmd = native.worker_command(sweep)
    cmd[0] = str(Path(sys.executable).with_name(cmd[0]))  # the venv's ftsweep
    procs = []
    for i in range(n):
        runs = runs_root / f"worker{i}"
        full = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
            **env,
            "FTSWEEP_RUNS_DIR": str(runs),
        }
        procs.append(
            subprocess.Popen(
                cmd,
                cwd=ROOT,
                env=full,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
                start_new_session=True,
            )
        )
    out = []
    try:
        for p in procs:
            _, err = p.communicate(timeout=timeout)
            out.append(Worker(p.returncode, err))
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, 9)
                p.wait()
    return out


def study(url: str, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=url)


def counted(s: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """Trials toward the limit (finished, not refused before they started)."""
    return [
        t
        for t in s.trials
        if t.state.name in ("COMPLETE", "PRUNED", "FAIL")
        and "ftsweep.not_started" not in t.user_attrs
        and "ftsweep.environment_failure" not in t.user_attrs
    ]


def mlflow_runs(tracking_uri: str, name: str) -> list[Any]:
    client = MlflowClient(tracking_uri=tracking_uri)
    exp = client.get_experiment_by_name(name)
    assert exp is not None, f"no MLflow experiment {name}"
    return list(client.search_runs([exp.experiment_id], max_results=10000))


def check_mlflow(tracking_uri: str, name: str, s: optuna.Study) -> None:
    """One parent run; each trained trial's child run exactly once; none left RUNNING."""
    runs = mlflow_runs(tracking_uri, name)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1, [r.info.run_id for r in parents]
    assert s.user_attrs["ftsweep.mlflow_parent_run_id"] == parents[0].info.run_id
    children = Counter(
        int(r.data.tags["ftsweep.trial"]) for r in runs if "mlflow.parentRunId" in r.data.tags
    )
    assert all(n == 1 for n in children.values()), children  # no trial logged twice
    trained = {t.number for t in s.trials if "ftsweep.job_id" in t.user_attrs}
    assert trained <= set(children), trained - set(children)
    assert set(children) <= {t.number for t in s.trials}
    running = [r.info.run_name for r in runs if r.info.status == "RUNNING"]
    assert not running, running


def no_traceback(workers: list[Worker]) -> None:
    for w in workers:
        assert w.code == 0, w.err[-3000:]
        assert "Traceback" not in w.err, w.err[-3000:]


def apisim_sweep(folder: Path, name: str, parallel: int = 2, **fields: Any) -> Path:
    """A sweep on the openai backend (pointed at apisim by the environment)."""
    train, valid = write_task("tickets", folder / "data", n_train=40, n_valid=12, fmt="chat")
    spec: dict[str, Any] = {
        "name": name,
        "data": {"train": str(train), "valid": str(valid)},
        "backend": {
            "name": "openai",
            "model": "gpt-4o-mini",
            "options": {"poll_interval": [0.05, 0.3]},
        },
        # 12 configurations: the workers' samplers propose repeats, trained once
        "space": {
            "n_epochs": [2, 3],
            "batch_size": [1, 2],
            "learning_rate_multiplier": [0.05, 0.1, 0.2],
        },
        "parallel": parallel,
        "sampler": {"name": "random"},  # no seed: each worker draws its own
    }
    spec.update(fields)
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path

"""Three workers of real local fine-tuning (the tiny model) on one study through PostgreSQL
and an MLflow tracking server (artifacts, the best model included, uploaded through it)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path

import yaml
from mlflow import MlflowClient
from sqlalchemy.engine import make_url

from orchestrator.backends.local.tasks import write_task
from tests.reliability.stores import check
from tests.scaleout.compose import Native
from tests.scaleout.pg import MlflowServer
from tests.scaleout.workers import check_mlflow, counted, no_traceback, run_workers, study

TRIALS = 4


def test_three_local_workers_on_postgres_and_a_tracking_server(
    tmp_path: Path,
    tiny_model: Path,
    native: Native,
    mlflow_server: MlflowServer,
    postgres_db: Callable[[str], str],
) -> None:
    train, valid = write_task("reverse", tmp_path / "data", n_train=24, n_valid=8)
    sweep = tmp_path / "local.yaml"
    sweep.write_text(
        yaml.safe_dump(
            {
                "name": "scaleout-local",
                "data": {"train": str(train), "valid": str(valid)},
                "backend": {"name": "local", "model": "tiny", "options": {"torch_threads": 1}},
                "space": {
                    "n_epochs": 2,
                    "batch_size": {"low": 4, "high": 8},
                    "learning_rate_multiplier": {"low": 0.5, "high": 3, "log": True},
                    "prompt_loss_weight": 0.1,
                },
                "trials": TRIALS,
                "parallel": 1,
                "sampler": {"name": "random"},
            }
        )
    )
    url = make_url(postgres_db("optuna"))
    server = url.set(database="postgres").render_as_string(hide_password=False)
    env = native.worker_env(server, str(url.database), mlflow_server.url)
    workers = run_workers(3, native, sweep, env, tmp_path / "runs")
    no_traceback(workers)
    s = study(env["FTSWEEP_OPTUNA_STORAGE"], "scaleout-local")
    assert not [t.number for t in s.trials if t.state.name == "RUNNING"]
    assert [t.state.name for t in counted(s)] == ["COMPLETE"] * TRIALS
    trained = [t for t in s.trials if "ftsweep.job_id" in t.user_attrs]
    configs = Counter(t.user_attrs["ftsweep.config_hash"] for t in trained)
    assert all(n == 1 for n in configs.values()), configs
    jobs = [p for p in (tmp_path / "runs").glob("worker*/backends/local/jobs/*") if p.is_dir()]
    assert len(jobs) == len(trained)  # each trained once, on the worker that owned it
    check_mlflow(env["MLFLOW_TRACKING_URI"], "scaleout-local", s)
    _, found = check(None, "scaleout-local", s, tracking_uri=env["MLFLOW_TRACKING_URI"])
    assert found.problems() == []
    # the best model went through the server's artifact proxy and was registered
    client = MlflowClient(tracking_uri=mlflow_server.url)
    versions = client.search_model_versions("name = 'scaleout-local'")
    runs = Counter(v.run_id for v in versions)
    assert all(n == 1 for n in runs.values()), runs  # a worker that ended early may have
    best = s.best_trial  # registered the best of its time; the study's best is registered
    assert best.user_attrs["ftsweep.mlflow_run_id"] in runs, (best.number, versions)
    assert client.list_artifacts(best.user_attrs["ftsweep.mlflow_run_id"], "model")

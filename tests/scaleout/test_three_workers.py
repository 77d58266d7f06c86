"""Three `ftsweep run` processes on one study through PostgreSQL and an MLflow tracking server,
started with compose.yaml's commands and variables, against `ftsweep apisim` (the real openai
SDK over HTTP): the trial limit, the budget and the provider's concurrent-job cap hold across
the workers, each configuration is trained once, and MLflow tells the same story."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import yaml

from orchestrator import apisim
from orchestrator.apisim.server import SimServer
from tests.apisim.fixtures import openai_env, request_log
from tests.reliability.stores import check
from tests.scaleout.compose import Native
from tests.scaleout.conftest import PASSWORD
from tests.scaleout.pg import MlflowServer
from tests.scaleout.workers import (
    apisim_sweep,
    check_mlflow,
    counted,
    no_traceback,
    run_workers,
    study,
)

SPEED = 15.0  # simulated seconds per second: a job lasts a few seconds, so workers overlap
CAP = 3  # the openai backend's max_concurrent_jobs (and apisim's running-job quota)
WORKERS = 3
PARALLEL = 2  # job slots per worker: 3 x 2 > CAP, so the shared cap is what holds


def _max_overlap(server: SimServer, study_name: str) -> int:
    """The most jobs of the study that existed at once at the provider (created, not yet
    finished, in simulated time)."""
    server.sim.tick()
    events = []
    for job in server.sim.jobs.values():
        if (job.metadata or {}).get("ftsweep_study") != study_name:
            continue
        assert job.finished_at is not None, f"job {job.id} still {job.status}"
        events += [(job.created_at, 1), (job.finished_at, -1)]
    most = now = 0
    for _, step in sorted(events, key=lambda e: (e[0], e[1])):  # an end before a start
        now += step
        most = max(most, now)
    return most


def _configs(server: SimServer, study_name: str) -> list[tuple[Any, ...]]:
    return [
        (j.n_epochs, j.batch_size, j.learning_rate_multiplier)
        for j in server.sim.jobs.values()
        if (j.metadata or {}).get("ftsweep_study") == study_name
    ]


def _phase(
    tmp_path: Path,
    native: Native,
    mlflow_server: MlflowServer,
    optuna_db: str,
    server: SimServer,
    sweep: Path,
    name: str,
) -> optuna.Study:
    """Three workers on ``sweep``; returns the study after checking what holds for any."""
    from sqlalchemy.engine import make_url

    url = make_url(optuna_db)
    pg = url.set(database="postgres").render_as_string(hide_password=False)
    env = native.worker_env(pg, str(url.database), mlflow_server.url)
    env.update(openai_env(server))
    workers = run_workers(WORKERS, native, sweep, env, tmp_path / f"runs-{name}")
    no_traceback(workers)
    for w in workers:
        assert PASSWORD not in w.err
    s = study(env["FTSWEEP_OPTUNA_STORAGE"], name)
    assert not [t.number for t in s.trials if t.state.name == "RUNNING"]
    # each configuration trained once: one job per trained trial, no configuration twice
    trained = [t for t in s.trials if "ftsweep.job_id" in t.user_attrs]
    configs = _configs(server, name)
    assert len(configs) == len(trained), (configs, [t.number for t in trained])
    assert len(set(configs)) == len(configs), Counter(configs)
    created = [r for r in request_log(server, "jobs.create") if r["status"] < 300]
    assert len(created) == len(configs)
    jobs = Counter(t.user_attrs["ftsweep.job_id"] for t in trained)
    assert all(n == 1 for n in jobs.values()), jobs
    # the provider's concurrent-job cap held across the workers
    most = _max_overlap(server, name)
    print(f"{name}: at most {most} jobs at once")
    assert 1 <= most <= CAP, most
    # MLflow: one parent run, each trial once, none RUNNING; the stores agree
    check_mlflow(env["MLFLOW_TRACKING_URI"], name, s)
    _, found = check(None, name, s, tracking_uri=env["MLFLOW_TRACKING_URI"])
    assert found.problems() == []
    # no seed in the sweep file: each worker drew (and recorded) its own
    seeds = {k: v for k, v in s.user_attrs.items() if k.startswith("ftsweep.sampler_seed.")}
    assert len(seeds) == WORKERS and len(set(seeds.values())) == WORKERS, seeds
    return s


def test_three_workers_on_postgres_and_a_tracking_server(
    tmp_path: Path,
    native: Native,
    mlflow_server: MlflowServer,
    postgres_db: Callable[[str], str],
    cli: Any,
) -> None:
    # 1. the trial limit: exactly 9 finished trials among the three workers
    sweep = apisim_sweep(tmp_path / "limit", "scaleout-limit", trials=9)
    with apisim.start(state=tmp_path / "apisim-limit", speed=SPEED) as server:
        db = postgres_db("optuna")
        s = _phase(tmp_path, native, mlflow_server, db, server, sweep, "scaleout-limit")
    assert len(counted(s)) == 9
    assert [t.state.name for t in counted(s)] == ["COMPLETE"] * 9
    # 2. the budget: it allows fewer trials than the 12 asked for
    sweep = apisim_sweep(tmp_path / "budget", "scaleout-budget", trials=12)
    estimate = json.loads(cli("estimate", sweep, "--json").out)
    budget = round(4 * max(estimate["cost_per_trial"]), 6)  # 3 to 5 trials
    spec = yaml.safe_load(sweep.read_text())
    sweep.write_text(yaml.safe_dump({**spec, "budget_usd": budget}))
    with apisim.start(state=tmp_path / "apisim-budget", speed=SPEED) as server:
        db = postgres_db("optuna")
        s = _phase(tmp_path, native, mlflow_server, db, server, sweep, "scaleout-budget")
    spent = sum(float(t.user_attrs.get("ftsweep.cost_usd", 0.0)) for t in s.trials)
    assert 0 < spent <= budget + 1e-9, (spent, budget)
    assert 3 <= len(counted(s)) < 12
    refused = [t for t in s.trials if "ftsweep.not_started" in t.user_attrs]
    assert all("budget" in t.user_attrs["ftsweep.error"] for t in refused)

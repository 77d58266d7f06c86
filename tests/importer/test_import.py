"""``ftsweep import`` against apisim through the real ``openai`` SDK: 20 past jobs (failed
ones, a cancelled one, one whose result file is gone, two on another training file) into
a real Optuna study and a real MLflow store; idempotent, mended after a kill; then a sweep
on another backend warm-starts from the imported best."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from mlflow import MlflowClient

from orchestrator import apisim
from orchestrator.apisim.server import SimServer
from orchestrator.backends.local.tasks import write_task
from orchestrator.core.attrs import StudyAttrs, TrialAttrs
from orchestrator.plan.sweep import plan_sweep
from orchestrator.testing import instant
from orchestrator.workflows.importer import JOB_TAG, JobFilter, import_jobs
from orchestrator.workflows.importer.provider import list_jobs
from tests.apisim.fixtures import OPENAI_KEY, openai_env, request_log
from tests.conftest import Result
from tests.reliability.stores import seed_mlflow

Cli = Callable[..., Result]
N_JOBS = 20
FAILING = {4, 9, 14}  # suffix "bad": fail at step 2
OTHER_DATA = {16, 17}  # trained on another file
CANCELLED = 19
GONE = 0  # its result file deleted


@pytest.fixture
def server(tmp_path: Path) -> Iterator[SimServer]:
    faults = apisim.Faults.from_dict(
        {"jobs": [{"suffix": "bad", "code": "server_error", "at_step": 2, "times": 0}]}
    )
    sim = apisim.start(state=tmp_path / "apisim", speed=0.0, faults=faults)
    yield sim
    sim.close()


@pytest.fixture
def runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "mlruns"
    monkeypatch.setenv("FTSWEEP_RUNS_DIR", str(root))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("FTSWEEP_OPTUNA_STORAGE", raising=False)
    seed_mlflow(root)
    return root


def _history(server: SimServer, train: Path, valid: Path, other: Path) -> list[Any]:
    """20 jobs created with the SDK as a team would have, then run to their ends."""
    from openai import OpenAI

    client = OpenAI(api_key=OPENAI_KEY, base_url=server.url + "/v1", max_retries=0)
    ids = {}
    for path in (train, valid, other):
        with path.open("rb") as f:
            ids[path] = client.files.create(file=f, purpose="fine-tune").id
    jobs = []
    for i in range(N_JOBS):
        job = client.fine_tuning.jobs.create(
            model="gpt-4o-mini",
            training_file=ids[other if i in OTHER_DATA else train],
            validation_file=ids[valid],
            suffix="bad" if i in FAILING else "support",
            hyperparameters={
                "n_epochs": 1 + i % 3,
                "batch_size": (2, 4, 8)[i % 3],
                "learning_rate_multiplier": (0.1, 0.3, 1.0, 2.0)[i % 4],
            },
        )
        jobs.append(job)
    client.fine_tuning.jobs.cancel(jobs[CANCELLED].id)
    server.sim.advance(10**6)
    jobs = [client.fine_tuning.jobs.retrieve(j.id) for j in jobs]
    client.files.delete(jobs[GONE].result_files[0])
    return jobs


def _spec(tmp_path: Path, train: Path, valid: Path, backend: dict[str, Any]) -> Path:
    path = tmp_path / f"{backend['name']}.yaml"
    spec = {
        "name": "support",
        "data": {"train": str(train), "valid": str(valid)},
        "backend": backend,
        "space": {
            "n_epochs": {"low": 1, "high": 3},
            "batch_size": {"low": 1, "high": 16},
            "learning_rate_multiplier": {"low": 0.05, "high": 3.0, "log": True},
        },
        "trials": 1,
        "sampler": {"name": "random", "seed": 3},
    }
    path.write_text(yaml.safe_dump(spec))
    return path


def _children(root: Path, parent: str) -> list[Any]:
    client = MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    exp = client.get_experiment_by_name("support")
    assert exp is not None
    query = f"tags.`mlflow.parentRunId` = '{parent}'"
    return list(client.search_runs([exp.experiment_id], query, max_results=1000))


def test_twenty_past_jobs_import_once_survive_a_kill_and_warm_start_a_sweep(
    server: SimServer,
    runs: Path,
    tmp_path: Path,
    cli: Cli,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for var, value in openai_env(server).items():
        monkeypatch.setenv(var, value)
    train, valid = write_task("tickets", tmp_path / "data", n_train=40, n_valid=12, fmt="chat")
    other, _ = write_task("tickets", tmp_path / "old", n_train=24, n_valid=4, fmt="chat")
    jobs = _history(server, train, valid, other)
    assert sorted(j.status for j in jobs).count("failed") == len(FAILING)
    spec = _spec(tmp_path, train, valid, {"name": "openai", "model": "gpt-4o-mini"})

    # pages as OpenAI's: newest first, `after` the last id of a page, `has_more` until the end
    from openai import OpenAI

    sdk = OpenAI(api_key=OPENAI_KEY, base_url=server.url + "/v1", max_retries=0)
    first = sdk.fine_tuning.jobs.list(limit=7)
    assert (len(first.data), first.has_more) == (7, True)
    assert [j.id for j in sdk.fine_tuning.jobs.list(limit=7)] == [j.id for j in jobs[::-1]]
    backend = plan_sweep(spec).make_backend(tmp_path / "backend")
    paged = [j.id for j in list_jobs(backend, JobFilter(), page_size=7)]
    assert paged == [j.id for j in jobs[::-1]]
    pages = request_log(server, "jobs.list")
    assert len(pages) == 1 + 3 + 3  # the SDK's first page, its iteration, list_jobs

    dry = cli("import", spec, "--dry-run")
    assert dry.code == 0, dry.err
    assert len(dry.out.splitlines()) == N_JOBS
    gone = [line for line in dry.out.splitlines() if "is gone (404): no curve" in line]
    assert len(gone) == 1 and gone[0].startswith(jobs[GONE].id)
    assert "would be imported" in dry.err
    none = cli("import", spec, "--dry-run", "--since", "2999-01-01")
    assert (none.code, none.out) == (0, "")
    only = cli("import", spec, "--dry-run", "--suffix", "bad")
    assert len(only.out.splitlines()) == len(FAILING)

    # an import killed after the 5th job's MLflow run, before its trial
    def kill(job: Any, run_id: str, seen: list[str] = []) -> None:  # noqa: B006
        seen.append(job.job_id)
        if len(seen) == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        import_jobs(spec, written=kill)
    storage = f"sqlite:///{runs / 'optuna.db'}"
    study = optuna.load_study(study_name="support.imported", storage=storage)
    assert len(study.trials) == 4
    parent = str(study.user_attrs[StudyAttrs.MLFLOW_PARENT_RUN])
    assert len(_children(runs, parent)) == 5
    # ... and one killed while its run was being written (left RUNNING, half-logged)
    client = MlflowClient(tracking_uri=f"sqlite:///{runs / 'mlflow.db'}")
    half = client.create_run(
        client.get_experiment_by_name("support").experiment_id,  # type: ignore[union-attr]
        tags={"mlflow.parentRunId": parent, JOB_TAG: jobs[10].id},
    )

    r = cli("import", spec)
    assert r.code == 0, r.err
    assert r.out.startswith(f"imported {N_JOBS - 4} job(s) from openai into support.imported")
    assert "1 completed from an interrupted import" in r.out
    study = optuna.load_study(study_name="support.imported", storage=storage)
    trials = study.trials
    children = _children(runs, parent)
    assert len(trials) == len(children) == N_JOBS
    assert client.get_run(half.info.run_id).info.lifecycle_stage == "deleted"
    by_job = {run.data.tags[JOB_TAG]: run for run in children}
    assert (
        set(by_job) == {j.id for j in jobs} == {t.user_attrs[TrialAttrs.IMPORTED] for t in trials}
    )
    for t in trials:  # the two stores agree
        job_id = t.user_attrs[TrialAttrs.IMPORTED]
        assert t.user_attrs[TrialAttrs.MLFLOW_RUN] == by_job[job_id].info.run_id
    for i, job in enumerate(jobs):
        t = next(t for t in trials if t.user_attrs[TrialAttrs.IMPORTED] == job.id)
        run = by_job[job.id]
        assert t.params["n_epochs"] == job.hyperparameters.n_epochs
        assert t.params["batch_size"] == job.hyperparameters.batch_size
        assert t.user_attrs[TrialAttrs.JOB_STATUS] == job.status
        history = client.get_metric_history(run.info.run_id, "train_loss")
        if i == GONE:
            assert (t.state.name, run.info.status) == ("FAIL", "FINISHED")
            assert history == []
            assert "is gone (404)" in run.data.tags["ftsweep.import_note"]
            assert t.user_attrs[TrialAttrs.FINE_TUNED_MODEL] == job.fine_tuned_model
        elif i == CANCELLED:
            assert (t.state.name, run.info.status, job.status) == ("FAIL", "KILLED", "cancelled")
        elif i in FAILING:
            assert (t.state.name, run.info.status, job.status) == ("FAIL", "FAILED", "failed")
            assert "server_error" in t.user_attrs[TrialAttrs.ERROR]
            assert sorted(m.step for m in history) == [1, 2]  # its events: failed at step 2
        else:
            assert (t.state.name, run.info.status) == ("COMPLETE", "FINISHED")
            steps = -(-(24 if i in OTHER_DATA else 40) // job.hyperparameters.batch_size)
            assert len(history) == steps * job.hyperparameters.n_epochs
            assert t.user_attrs[TrialAttrs.FINE_TUNED_MODEL] == job.fine_tuned_model
            assert t.user_attrs[TrialAttrs.TRAINED_TOKENS] == job.trained_tokens
            assert t.user_attrs[TrialAttrs.COST] > 0
            assert run.data.metrics["trained_tokens"] == job.trained_tokens
            assert t.user_attrs[TrialAttrs.DIAGNOSIS] == run.data.tags["ftsweep.diagnosis"]
            assert t.user_attrs[TrialAttrs.IMPORTED_SAME_DATA] is (i not in OTHER_DATA)
        assert OPENAI_KEY not in json.dumps(dict(run.data.tags))

    again = cli("import", spec)
    assert again.code == 0, again.err
    assert again.out.startswith(f"imported 0 job(s) from openai into support.imported ({N_JOBS}")
    assert len(optuna.load_study(study_name="support.imported", storage=storage).trials) == N_JOBS
    assert len(_children(runs, parent)) == N_JOBS

    report = cli("report", spec, "--imported", "--format", "json")
    assert report.code == 0, report.err
    rows = json.loads(report.out)
    assert len(rows) == N_JOBS and all(row["imported"] is True for row in rows)
    history = cli("history", spec)
    assert history.code == 0, history.err
    assert "support.imported" in history.out and "imported from openai" in history.out

    # the same data on another backend: the sweep's first trial is the imported best
    best = min(
        (t for t in study.trials if t.state.name == "COMPLETE"
         and t.user_attrs[TrialAttrs.IMPORTED_SAME_DATA]),
        key=lambda t: float(t.value or 0.0),
    )  # fmt: skip
    instant.install(tmp_path / "site")
    local = _spec(tmp_path, train, valid, {"name": "instant", "model": "any"})
    run = cli("run", local)
    assert run.code == 0, run.err
    swept = optuna.load_study(study_name="support", storage=storage)
    first = swept.trials[0]
    assert first.params == best.params
    assert first.user_attrs[TrialAttrs.WARM_START] == f"support.imported#{best.number}"


def test_the_batch_size_is_rescaled_to_the_sweeps_data() -> None:
    from orchestrator.plan.space import Dimension, SearchSpace
    from orchestrator.workflows.importer.warm import warm_config

    trial = optuna.trial.create_trial(
        params={"n_epochs": 3, "batch_size": 4, "learning_rate_multiplier": 0.5},
        distributions={
            "n_epochs": optuna.distributions.IntDistribution(1, 5),
            "batch_size": optuna.distributions.IntDistribution(1, 64),
            "learning_rate_multiplier": optuna.distributions.FloatDistribution(0.01, 5),
        },
        value=0.4,
        user_attrs={TrialAttrs.IMPORTED_EXAMPLES: 20},
    )
    space = SearchSpace(
        (
            Dimension("n_epochs", "int", 1, 2),
            Dimension("batch_size", "int", 1, 32),
            Dimension("learning_rate_multiplier", "float", 0.05, 2.0, log=True),
        ),
        n_examples=60,
    )
    # 4 of 20 examples is 12 of 60; 3 epochs clamped into [1, 2]
    assert warm_config(trial, space) == {
        "n_epochs": 2,
        "batch_size": 12,
        "learning_rate_multiplier": 0.5,
    }


def test_a_local_sweep_cannot_import(runs: Path, tmp_path: Path, cli: Cli) -> None:
    train, valid = write_task("tickets", tmp_path / "data", n_train=12, n_valid=4, fmt="chat")
    spec = _spec(tmp_path, train, valid, {"name": "local", "model": "tiny"})
    r = cli("import", spec)
    assert (r.code, r.out) == (2, "")
    assert r.err == (
        f"error: {spec}: backend.name: import reads a provider's jobs (openai or azure), "
        "not 'local'\n"
    )
    status = cli("import", spec, "--status", "running")
    assert (status.code, status.err) == (
        2,
        "error: --status: 'running' is not one of succeeded, failed, cancelled\n",
    )
    bad = cli("import", spec, "--since", "yesterday")
    assert (bad.code, bad.err) == (
        2,
        "error: --since: expected a date YYYY-MM-DD, got 'yesterday'\n",
    )


def test_azure_jobs_read_through_the_sdk(
    server: SimServer, runs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Azure's shapes (``pending``, ``suffix``, oldest-first events): a dry run reads them."""
    from openai import AzureOpenAI

    from tests.apisim.fixtures import AZURE_KEY, AZURE_VERSION, azure_env

    for var, value in azure_env(server).items():
        monkeypatch.setenv(var, value)
    train, valid = write_task("tickets", tmp_path / "data", n_train=20, n_valid=6, fmt="chat")
    client = AzureOpenAI(azure_endpoint=server.url, api_key=AZURE_KEY, api_version=AZURE_VERSION)
    with train.open("rb") as f:
        train_id = client.files.create(file=f, purpose="fine-tune").id
    made = [
        client.fine_tuning.jobs.create(
            model="gpt-4o-mini",
            training_file=train_id,
            suffix=suffix,
            hyperparameters={"n_epochs": 2, "batch_size": 4, "learning_rate_multiplier": 0.5},
        )
        for suffix in ("support", "bad", "support", "live")
    ]
    client.fine_tuning.jobs.cancel(made[2].id)
    server.sim.advance(10**6)
    late = client.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=train_id)
    spec = _spec(tmp_path, train, valid, {"name": "azure", "model": "gpt-4o-mini"})

    found = import_jobs(spec, JobFilter(model="gpt-4o"), dry_run=True)
    assert found.dry_run and found.provider == "azure"
    by_id = {j.job_id: j for j in found.jobs}
    assert late.id not in by_id  # still pending: not history yet
    assert [by_id[j.id].status for j in made] == ["succeeded", "failed", "cancelled", "succeeded"]
    ok = by_id[made[0].id]
    assert (ok.suffix, ok.same_data, ok.n_examples) == ("support", True, 20)
    assert ok.hyperparameters == {"n_epochs": 2, "batch_size": 4, "learning_rate_multiplier": 0.5}
    assert len(ok.curves["train_loss"]) == 2 * 5 and ok.trained_tokens and ok.cost_usd
    assert ok.fine_tuned_model and ok.checkpoints
    assert "server_error" in (by_id[made[1].id].error or "")
    picked = import_jobs(spec, JobFilter(suffix="live", statuses=("succeeded",)), dry_run=True)
    assert [j.job_id for j in picked.jobs] == [made[3].id]


def test_the_html_report_marks_imported_jobs(runs: Path, tmp_path: Path, cli: Cli) -> None:
    train, valid = write_task("tickets", tmp_path / "data", n_train=12, n_valid=4, fmt="chat")
    spec = _spec(tmp_path, train, valid, {"name": "openai", "model": "gpt-4o-mini"})
    study = optuna.create_study(
        study_name="support.imported", storage=f"sqlite:///{runs / 'optuna.db'}"
    )
    study.set_user_attr(StudyAttrs.IMPORTED_FROM, "openai")
    study.add_trial(
        optuna.trial.create_trial(
            state=optuna.trial.TrialState.FAIL,
            params={"n_epochs": 2},
            distributions={"n_epochs": optuna.distributions.IntDistribution(1, 3)},
            user_attrs={TrialAttrs.IMPORTED: "ftjob-1", TrialAttrs.JOB_STATUS: "failed"},
        )
    )
    page = cli("report", spec, "--imported", "--format", "html")
    assert page.code == 0, page.err
    assert "<h1>Sweep support, imported from openai</h1>" in page.out
    assert "<th>imported</th>" in page.out
    plain = cli("report", spec, "--format", "html")
    assert plain.code == 1 and "has not run yet" in plain.err

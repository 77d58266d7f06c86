"""Providers as they stand in December 2026 (issue 24): Azure's open-weight models first, its
quotas shared across workers, OpenAI-model training for existing customers only, OpenAI's
last weeks on an injected clock, and one rule for unknown models."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from orchestrator.apisim.server import SimServer
from orchestrator.backends.jobs import Hyperparameters
from orchestrator.backends.local.tasks import write_task
from orchestrator.backends.remote.azure import AzureOpenAIBackend, AzureOptions
from orchestrator.catalog.azure import MAX_JOB_TOKENS
from orchestrator.core import clock
from orchestrator.core.errors import UsageError
from orchestrator.data.findings import DatasetStats, Distribution
from tests.apisim.fixtures import openai_env, request_log
from tests.azure.conftest import azure_spec, study
from tests.conftest import Result

REPO = Path(__file__).resolve().parents[2]


def _last(r: Result) -> str:
    return r.err.strip().splitlines()[-1]


def test_estimate_prices_the_open_weight_model_per_tier_it_trains_in(
    cli: Any, tmp_path: Path, sim: Any, remote_runs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = azure_spec(tmp_path, sim(), monkeypatch, model="Ministral-3B")
    r = cli("estimate", spec)
    assert r.code == 0, r.err
    tiers = r.out.split("cost per training tier", 1)[1].strip().splitlines()[1:]
    assert [row.split()[:2] for row in tiers] == [["global", "(chosen)"], ["datazone", "$0.55"]]
    assert "$0.50" in tiers[0]
    assert "3 running jobs per resource" in r.out
    assert "existing customers" not in r.err  # open to new customers: no notice


def test_the_shipped_azure_sweep_tunes_an_open_weight_model_on_global(cli: Any) -> None:
    shipped = yaml.safe_load((REPO / "sweeps/azure.yaml").read_text())
    assert shipped["backend"]["model"] == "Ministral-3B"
    assert shipped["backend"]["options"]["training_type"] == "global"
    r = cli("estimate", REPO / "sweeps/azure.yaml")
    assert r.code == 0, r.err
    assert "global (chosen)" in r.out and "datazone" in r.out and "developer" not in r.out


def test_a_tier_the_model_does_not_train_in_exits_2_naming_those_it_does(
    cli: Any, tmp_path: Path, sim: Any, remote_runs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = sim()
    options = {"training_type": "developer"}
    spec = azure_spec(tmp_path, server, monkeypatch, model="Ministral-3B", options=options)
    for command in ("estimate", "run"):
        r = cli(command, spec)
        assert r.code == 2, r.err
        assert _last(r) == (
            f"error: {spec}: backend.model: azure trains Ministral-3B only in the Global and "
            "Data zone tiers, not Developer: set backend.options.training_type to global or "
            "datazone"
        )
    assert request_log(server, "files.create") == []


def test_the_data_zone_tier_sends_its_configurable_wire_value(
    cli: Any, tmp_path: Path, sim: Any, remote_runs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = sim()
    spec = azure_spec(
        tmp_path, server, monkeypatch, model="Qwen-32B", trials=1, parallel=1,
        options={"training_type": "datazone"},
    )  # fmt: skip
    r = cli("run", spec)
    assert r.code == 0, r.err
    (job,) = server.sim.jobs.values()
    assert job.training_type == "DataZoneStandard"  # the default guess, accepted by apisim
    # Microsoft documents no value: another spelling is an option, sent as given
    options = AzureOptions(training_type="datazone", datazone_wire_value="DataZone")
    assert AzureOpenAIBackend(options=options).wire_tier == "DataZone"


def test_a_job_over_two_billion_tokens_times_epochs_is_refused_at_plan_time() -> None:
    per_example = Distribution(10**6, 10**6, 10**6, 10**6, 10**6, 10**6)
    train = DatasetStats(
        "train.jsonl", "chat", 1000, 1000, 10**6, "0" * 64,
        tokens=per_example, total_tokens=10**9, billed_tokens=10**9,
    )  # fmt: skip
    dearest = Hyperparameters(n_epochs=3, batch_size=8, learning_rate_multiplier=1.0)
    with pytest.raises(UsageError, match="3,000,000,000 tokens, over Azure's 2,000,000,000"):
        AzureOpenAIBackend.check_resources("Ministral-3B", AzureOptions(), dearest, train)
    two = Hyperparameters(n_epochs=2, batch_size=8, learning_rate_multiplier=1.0)
    rows = dict(AzureOpenAIBackend.check_resources("Ministral-3B", AzureOptions(), two, train))
    assert rows["trained tokens per job (dearest)"] == f"{2 * 10**9:,} of {MAX_JOB_TOKENS:,}"
    big = DatasetStats("big.jsonl", "chat", 1, 1, 513 * 2**20, "0" * 64)
    with pytest.raises(UsageError, match=r"big\.jsonl: 513 MB, over Azure's 512 MB per file"):
        AzureOpenAIBackend.check_resources("Ministral-3B", AzureOptions(), two, big)


def test_two_workers_keep_at_most_three_azure_jobs_running(
    tmp_path: Path, sim: Any, remote_runs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``parallel: 5`` on Global, two ``ftsweep run`` processes on one study: the provider's
    running cap (3) is the study's, so no create is refused by an apisim that queues nothing
    beyond it, and never more than 3 jobs are in flight at once."""
    # slow enough that a job outlives a launch (a few seconds each), fast enough to be lean
    server = sim({"azure_quota": {"in_flight": 3}}, speed=30.0)
    spec = azure_spec(
        tmp_path, server, monkeypatch, model="Ministral-3B", trials=5, parallel=5,
        options={"training_type": "global", "poll_interval": [0.05, 0.2]},
    )  # fmt: skip
    cmd = [sys.executable, "-m", "orchestrator", "run", str(spec)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    workers = [
        subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    for w in workers:
        _, err = w.communicate(timeout=240)
        assert w.returncode == 0, err
    creates = request_log(server, "jobs.create")
    assert {e["status"] for e in creates} == {201}, creates
    jobs = list(server.sim.jobs.values())
    assert len(jobs) == len(creates) >= 4  # a twin configuration may reuse a job
    assert all(j.status == "succeeded" for j in jobs)
    done = [t for t in study(remote_runs).trials if t.state.name == "COMPLETE"]
    assert len(done) == 5

    def most_at_once(spans: list[tuple[float, float]]) -> int:
        edges = sorted([(a, 1) for a, _ in spans] + [(b, -1) for _, b in spans])
        now = peak = 0
        for _, step in edges:  # an end sorts before a start at the same moment
            now += step
            peak = max(peak, now)
        return peak

    running = [(j.started_at, j.finished_at) for j in jobs]
    in_flight = [(j.created_at, j.finished_at) for j in jobs]
    assert all(a is not None and b is not None for a, b in running)
    assert most_at_once(running) <= 3  # type: ignore[arg-type]
    assert most_at_once(in_flight) == 3  # type: ignore[arg-type]  # both workers fill it


def test_openai_models_on_azure_warn_and_a_new_customers_refusal_names_the_open_models(
    cli: Any, tmp_path: Path, sim: Any, remote_runs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = sim({"azure_new_customer": True})
    spec = azure_spec(tmp_path, server, monkeypatch, model="gpt-4.1-mini", trials=1, parallel=1)
    notice = (
        "warning: azure trains gpt-4.1-mini for existing customers only (until about "
        "2027-04-14); a new customer is refused: the open-weight gpt-oss-20b, "
        "Llama-3.3-70B-Instruct, Qwen-32B, Ministral-3B train for everyone (training_type "
        "global or datazone)"
    )
    r = cli("estimate", spec)
    assert r.code == 0 and notice in r.err
    r = cli("run", spec)
    assert r.code == 1, r.err
    assert notice in r.err
    refusal = (
        "azure refused to train gpt-4.1-mini: Azure trains the OpenAI models for existing "
        "customers only (until about 2027-04-14) and this resource is not one; train an "
        "open-weight model instead (gpt-oss-20b, Llama-3.3-70B-Instruct, Qwen-32B, "
        "Ministral-3B; training_type global or datazone) or use the local backend"
    )
    assert refusal in r.err
    assert not server.sim.jobs


def _openai_spec(tmp_path: Path, server: SimServer, model: str = "gpt-4.1-mini") -> Path:
    train, valid = write_task("tickets", tmp_path / "data", n_train=40, n_valid=12, fmt="chat")
    spec = {
        "name": "openai-test",
        "data": {"train": str(train), "valid": str(valid)},
        "backend": {"name": "openai", "model": model, "options": {"poll_interval": [0.05, 0.3]}},
        "trials": 1,
        "parallel": 1,
    }
    path = tmp_path / "openai.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_openai_counts_its_days_and_refuses_from_its_last_one(
    cli: Any, tmp_path: Path, sim: Any, remote_runs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = sim()
    for var, value in openai_env(server).items():
        monkeypatch.setenv(var, value)
    spec = _openai_spec(tmp_path, server)
    monkeypatch.setenv("FTSWEEP_NOW", "2026-12-07")
    days = "OpenAI takes new fine-tuning jobs for 30 more days (none from 2027-01-06"
    r = cli("estimate", spec)
    assert r.code == 0 and days in r.err
    train = tmp_path / "data" / "tickets.chat.train.jsonl"
    r = cli("validate", train, "--model", "gpt-4o-mini")
    assert r.code == 0 and days in r.err

    monkeypatch.setenv("FTSWEEP_NOW", "2027-01-07T08:00:00Z")
    assert clock.today().isoformat() == "2027-01-07"
    r = cli("run", spec)
    assert r.code == 1, r.err
    assert _last(r) == (
        "error: openai: OpenAI takes no new fine-tuning jobs since 2027-01-06 (nothing was "
        "uploaded): move this sweep to the azure backend (an open-weight model: gpt-oss-20b, "
        "Llama-3.3-70B-Instruct, Qwen-32B, Ministral-3B; training_type global) or the local "
        "backend"
    )
    assert server.sim.files == {} and not server.sim.jobs
    assert request_log(server, "files.create") == []
    r = cli("validate", train, "--model", "gpt-4o-mini")  # checking data still works, and says
    assert r.code == 0 and "OpenAI takes no new fine-tuning jobs since 2027-01-06: " in r.err


def test_a_bad_injected_date_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FTSWEEP_NOW", "next tuesday")
    with pytest.raises(UsageError, match="FTSWEEP_NOW='next tuesday': expected an ISO date"):
        clock.today()


def test_space_refuses_an_unknown_model_as_estimate_does(
    cli: Any, tmp_path: Path, sim: Any, remote_runs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = sim()
    for var, value in openai_env(server).items():
        monkeypatch.setenv(var, value)
    spec = _openai_spec(tmp_path, server, model="no-such-model-xyz")
    space, estimate = cli("space", spec), cli("estimate", spec)
    assert space.code == estimate.code == 2
    assert _last(space) == _last(estimate)
    assert _last(space).startswith(
        f"error: {spec}: backend.model: unknown model 'no-such-model-xyz'; known: "
        "gpt-4o-mini, gpt-4o, gpt-4.1, gpt-4.1-mini (new jobs until 2027-01-06"
    )
    assert "babbage-002" not in space.err and "gpt-3.5-turbo" not in space.err

"""Azure sweeps end to end against apisim, through the real SDK over HTTP: the dated surface,
the Developer tier with pre-emptions, the per-tier estimate, the budget stop, the quota cap."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.catalog.prices import training_price
from tests.apisim.fixtures import AZURE_KEY, request_log
from tests.azure.conftest import azure_spec, study


@pytest.mark.parametrize("surface", ["v1", "dated"])
def test_a_full_sweep_on_each_surface(
    cli, tmp_path: Path, sim, remote_runs: Path, monkeypatch: pytest.MonkeyPatch, surface: str
) -> None:
    server = sim()
    spec = azure_spec(tmp_path, server, monkeypatch, surface=surface)
    r = cli("run", spec)
    assert r.code == 0, r.err
    trials = study(remote_runs).trials
    assert [t.state.name for t in trials] == ["COMPLETE"] * 3
    assert all(t.user_attrs["ftsweep.cost_usd"] > 0 for t in trials)
    creates = request_log(server, "jobs.create")
    assert len(creates) == 3
    prefix = "/openai/v1/" if surface == "v1" else "/openai/fine_tuning/"
    assert all(e["path"].startswith(prefix) for e in creates), creates
    jobs = list(server.sim.jobs.values())
    assert {j.training_type for j in jobs} == {"GlobalStandard"}  # the default tier
    assert {j.surface for j in jobs} == {"v1" if surface == "v1" else "2024-10-21"}
    assert AZURE_KEY not in r.out + r.err


def test_a_developer_sweep_with_pauses_finishes_every_trial_at_the_developer_price(
    cli, tmp_path: Path, sim, remote_runs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = sim({"developer_pauses": [[0.3, 300], [0.6, 200]]})
    spec = azure_spec(tmp_path, server, monkeypatch, options={"training_type": "developer"})
    r = cli("run", spec)
    assert r.code == 0, r.err
    trials = study(remote_runs).trials
    assert [t.state.name for t in trials] == ["COMPLETE"] * 3  # no FAIL
    jobs = list(server.sim.jobs.values())
    assert len(jobs) == len(request_log(server, "jobs.create")) == 3  # no duplicate job
    assert all(len(j.pauses) == 2 and j.training_type == "developerTier" for j in jobs)
    assert "paused the job (pre-empted)" in r.err and "resumed the job" in r.err
    price = training_price("gpt-4.1-mini", provider="azure", tier="developer")
    assert price == training_price("gpt-4.1-mini", provider="azure", tier="global") / 2
    by_job = {j.id: j for j in jobs}
    for t in trials:
        job = by_job[t.user_attrs["ftsweep.job_id"]]
        expected = round(job.trained_tokens * price / 1_000_000, 4)
        assert t.user_attrs["ftsweep.cost_usd"] == pytest.approx(expected)


def test_estimate_prints_the_cost_per_tier(
    cli, tmp_path: Path, sim, remote_runs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = azure_spec(tmp_path, sim(), monkeypatch, options={"training_type": "developer"})
    r = cli("estimate", spec)
    assert r.code == 0, r.err
    table = r.out.split("cost per training tier", 1)[1]
    lines = [line for line in table.splitlines()[1:] if line.strip()][1:]  # under the header
    rows = {line.split()[0]: line for line in lines}
    assert list(rows) == ["standard", "global", "datazone", "developer"]  # Data zone: issue 24
    assert "$5.00" in rows["standard"] and "$4.00" in rows["global"]
    assert "(chosen)" in rows["developer"] and "$2.00" in rows["developer"]
    oss = azure_spec(tmp_path, sim(), monkeypatch, model="gpt-oss-20b")
    r = cli("estimate", oss)
    assert r.code == 0, r.err
    tiers = r.out.split("cost per training tier", 1)[1]
    # issue 24: Global and Data zone, not Developer nor Standard
    assert "global (chosen)" in tiers and "datazone" in tiers
    assert "developer" not in tiers and "standard" not in tiers


def test_a_budget_below_the_cheapest_trial_stops_before_any_upload(
    cli, tmp_path: Path, sim, remote_runs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = sim()
    spec = azure_spec(tmp_path, server, monkeypatch)
    r = cli("run", spec, "--budget", "0.0001")
    assert r.code == 1  # no trial completed: the budget stopped the sweep
    assert "budget:" in r.err and "Traceback" not in r.err
    assert request_log(server, "files.create") == []
    assert request_log(server, "jobs.create") == []


def test_the_engine_never_submits_past_azures_queue(
    cli, tmp_path: Path, sim, remote_runs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """23 trials in parallel: 3 run at Azure at a time (its running quota, issue 24), the
    others wait in ftsweep's own queue, never in Azure's (whose 21st would get apisim's 429
    quotaExceeded)."""
    server = sim(speed=300.0)
    spec = azure_spec(tmp_path, server, monkeypatch, trials=23, parallel=23)
    r = cli("run", spec)
    assert r.code == 0, r.err
    creates = request_log(server, "jobs.create")
    assert len(creates) == 23 and {e["status"] for e in creates} == {201}
    assert "queued" in r.err


def test_estimate_takes_prices_on_the_command_line(
    cli, tmp_path: Path, sim, remote_runs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = azure_spec(tmp_path, sim(), monkeypatch, model="gpt-5-turbo")
    assert cli("estimate", spec).code == 2  # unknown, unpriced
    r = cli("estimate", spec, "--price", "gpt-5-turbo=8", "--price", "gpt-5-turbo/developer=3")
    assert r.code == 0, r.err
    tiers = r.out.split("cost per training tier", 1)[1]
    assert "$8.00" in tiers and "$3.00" in tiers
    r = cli("estimate", spec, "--price", "gpt-5-turbo=cheap")
    assert r.code == 2 and "--price: expected MODEL[/TIER]=USD" in r.err

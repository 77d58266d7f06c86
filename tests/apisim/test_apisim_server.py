"""The simulator through the real SDK: statuses, pagination, quotas, faults, restarts."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import openai
import pytest
from openai import AzureOpenAI, OpenAI

from orchestrator import apisim
from orchestrator.apisim.server import SimServer
from tests.apisim.fixtures import AZURE_KEY, AZURE_VERSION, OPENAI_KEY, request_log
from tests.helpers import chat_rows, write_jsonl

HP = {"n_epochs": 2, "batch_size": 3, "learning_rate_multiplier": 0.1}


def oai(server: SimServer) -> OpenAI:
    return OpenAI(base_url=server.url + "/v1", api_key=OPENAI_KEY, max_retries=0)


def azure(server: SimServer) -> AzureOpenAI:
    return AzureOpenAI(
        azure_endpoint=server.url, api_key=AZURE_KEY, api_version=AZURE_VERSION, max_retries=0
    )


def new_job(client: Any, train: Path, **kw: Any) -> Any:
    file_id = client.files.create(file=train, purpose="fine-tune").id
    return client.fine_tuning.jobs.create(
        model="gpt-4o-mini", training_file=file_id, hyperparameters=HP, **kw
    )


def statuses(server: SimServer, client: Any, job_id: str, seconds: float, step: float) -> list[str]:
    seen: list[str] = []
    for _ in range(int(seconds / step)):
        status = client.fine_tuning.jobs.retrieve(job_id).status
        if not seen or seen[-1] != status:
            seen.append(status)
        server.sim.advance(step)
    return seen


def test_status_sequences(sim_server: SimServer, chat_data: tuple[Path, Path]) -> None:
    job = new_job(oai(sim_server), chat_data[0])
    assert statuses(sim_server, oai(sim_server), job.id, 60, 1) == [
        "validating_files",
        "queued",
        "running",
        "succeeded",
    ]
    job = new_job(azure(sim_server), chat_data[0])
    assert statuses(sim_server, azure(sim_server), job.id, 60, 1) == [
        "pending",
        "running",
        "succeeded",
    ]
    done = azure(sim_server).fine_tuning.jobs.retrieve(job.id)
    assert done.trained_tokens and done.trained_tokens % 2 == 0  # 2 epochs x billed tokens


def test_event_pagination(sim_server: SimServer, chat_data: tuple[Path, Path]) -> None:
    client = oai(sim_server)
    job = new_job(client, chat_data[0])
    sim_server.sim.advance(600)
    every = list(client.fine_tuning.jobs.list_events(job.id, limit=7))  # walks all pages
    ids = [e.id for e in every]
    assert len(ids) == len(set(ids)) == 20 + 7  # 20 steps, 7 messages (1 checkpoint)
    page = client.fine_tuning.jobs.list_events(job.id, limit=7)
    collected = []
    while True:
        collected += [e.id for e in page.data]
        assert page.has_more == (len(collected) < len(ids))
        if not page.has_more:
            break
        page = client.fine_tuning.jobs.list_events(job.id, limit=7, after=page.data[-1].id)
    assert collected == ids
    times = [e.created_at for e in every]
    assert times == sorted(times, reverse=True)  # newest first
    assert every[0].message == "The job has successfully completed"
    steps = [e for e in every if e.type == "metrics"]
    assert steps[0].message.startswith("Step 20/20: training loss=")
    assert steps[0].data["total_steps"] == 20
    last = client.fine_tuning.jobs.list_events(job.id, after=ids[-1])
    assert last.data == [] and last.has_more is False


def test_metadata_filter_and_job_pages(sim_server: SimServer, chat_data: tuple[Path, Path]) -> None:
    client = oai(sim_server)
    file_id = client.files.create(file=chat_data[0], purpose="fine-tune").id
    made = [
        client.fine_tuning.jobs.create(
            model="gpt-4o-mini", training_file=file_id, metadata={"k": str(i % 2)}
        ).id
        for i in range(5)
    ]
    assert [j.id for j in client.fine_tuning.jobs.list(limit=2)] == made[::-1]
    assert [j.id for j in client.fine_tuning.jobs.list(metadata={"k": "0"})] == made[::-2]
    assert list(client.fine_tuning.jobs.list(metadata={"k": "x"})) == []


def test_quota_keeps_extra_jobs_waiting(tmp_path: Path, chat_data: tuple[Path, Path]) -> None:
    faults = apisim.Faults.from_dict({"max_running": {"openai": 1}})
    with apisim.start(speed=0, state=tmp_path / "s", faults=faults) as server:
        client = oai(server)
        first, second = new_job(client, chat_data[0]), new_job(client, chat_data[0])
        server.sim.advance(12)
        jobs = client.fine_tuning.jobs
        assert (jobs.retrieve(first.id).status, jobs.retrieve(second.id).status) == (
            "running",
            "queued",
        )
        server.sim.advance(3600)
        one, two = server.sim.jobs[first.id], server.sim.jobs[second.id]
        assert one.status == two.status == "succeeded"
        assert two.started_at is not None and one.finished_at is not None
        assert two.started_at >= one.finished_at  # it waited for the slot


def test_azure_runs_three_jobs_per_resource(
    sim_server: SimServer, chat_data: tuple[Path, Path]
) -> None:
    # issue 24: 3 running training jobs per resource on Standard and Global (was 1)
    client = azure(sim_server)
    made = [new_job(client, chat_data[0]) for _ in range(4)]
    sim_server.sim.advance(12)
    jobs = client.fine_tuning.jobs
    assert [jobs.retrieve(j.id).status for j in made] == ["running"] * 3 + ["pending"]


def test_rate_limit_and_server_error_faults(tmp_path: Path, chat_data: tuple[Path, Path]) -> None:
    faults = {
        "requests": [
            {"op": "jobs.create", "status": 429, "retry_after": 7, "times": 1},
            {"op": "jobs.events", "status": 503, "times": 1, "skip": 1},
        ]
    }
    with apisim.start(speed=0, state=tmp_path / "s", faults=apisim.Faults.from_dict(faults)) as srv:
        client = oai(srv)
        file_id = client.files.create(file=chat_data[0], purpose="fine-tune").id
        with pytest.raises(openai.RateLimitError) as caught:
            client.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=file_id)
        assert caught.value.code == "daily_rate_limit_exceeded"
        assert caught.value.response.headers["retry-after"] == "7"
        assert caught.value.response.headers["x-should-retry"] == "false"
        job = client.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=file_id)
        client.fine_tuning.jobs.list_events(job.id)
        with pytest.raises(openai.InternalServerError):
            client.fine_tuning.jobs.list_events(job.id)
        client.fine_tuning.jobs.list_events(job.id)
        creates = [(e["status"]) for e in request_log(srv, "jobs.create")]
        assert creates == [429, 200]


def test_after_fault_does_the_work_then_fails(
    sim_server: SimServer, chat_data: tuple[Path, Path]
) -> None:
    sim_server.sim.set_faults(
        apisim.Faults.from_dict(
            {"requests": [{"op": "jobs.create", "status": 500, "when": "after"}]}
        )
    )
    client = oai(sim_server)
    file_id = client.files.create(file=chat_data[0], purpose="fine-tune").id
    with pytest.raises(openai.InternalServerError):
        client.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=file_id)
    assert len(list(client.fine_tuning.jobs.list())) == 1


def test_stuck_files_and_failing_jobs(tmp_path: Path, chat_data: tuple[Path, Path]) -> None:
    slow = write_jsonl(tmp_path / "slow-train.jsonl", chat_rows(20))
    faults = {
        "stuck_files": ["slow-*"],
        "jobs": [{"nth": 2, "code": "server_error", "message": "boom", "at_step": 3}],
    }
    with apisim.start(speed=0, state=tmp_path / "s", faults=apisim.Faults.from_dict(faults)) as srv:
        client = oai(srv)
        stuck = new_job(client, slow)
        failing = new_job(client, chat_data[0])
        srv.sim.advance(3600)
        assert client.files.retrieve(stuck.training_file).status == "uploaded"
        assert client.fine_tuning.jobs.retrieve(stuck.id).status == "validating_files"
        failed = client.fine_tuning.jobs.retrieve(failing.id)
        assert failed.status == "failed"
        assert (failed.error.code, failed.error.message) == ("server_error", "boom")
        steps = [e for e in client.fine_tuning.jobs.list_events(failed.id) if e.type == "metrics"]
        assert len(steps) == 3
        assert failed.trained_tokens is not None and failed.trained_tokens > 0


def test_state_survives_a_restart(tmp_path: Path, chat_data: tuple[Path, Path]) -> None:
    state = tmp_path / "state"
    with apisim.start(speed=0, state=state) as first:
        job = new_job(oai(first), chat_data[0])
        first.sim.advance(15)
        before = first.sim.clock.now()
        assert oai(first).fine_tuning.jobs.retrieve(job.id).status == "running"
    with apisim.start(speed=0, state=state) as second:
        assert second.sim.clock.now() == pytest.approx(before, abs=0.01)  # resumes, no jump
        client = oai(second)
        assert client.fine_tuning.jobs.retrieve(job.id).status == "running"
        assert client.files.retrieve(job.training_file).status == "processed"
        second.sim.advance(600)
        done = client.fine_tuning.jobs.retrieve(job.id)
        assert done.status == "succeeded" and done.result_files
        assert len(request_log(second, "jobs.create")) == 1  # the log persisted too


def test_pause_and_resume(sim_server: SimServer, chat_data: tuple[Path, Path]) -> None:
    client = oai(sim_server)
    job = new_job(client, chat_data[0])
    sim_server.sim.advance(12)
    assert client.fine_tuning.jobs.pause(job.id).estimated_finish is None
    done_before = sim_server.sim.jobs[job.id].steps_done(sim_server.sim.clock.now())
    sim_server.sim.advance(3600)
    assert sim_server.sim.jobs[job.id].steps_done(sim_server.sim.clock.now()) == done_before
    resumed = client.fine_tuning.jobs.resume(job.id)
    assert resumed.status == "running" and resumed.estimated_finish is not None
    sim_server.sim.advance(600)
    assert client.fine_tuning.jobs.retrieve(job.id).status == "succeeded"
    messages = [e.message for e in client.fine_tuning.jobs.list_events(job.id, limit=100)]
    assert "Fine-tuning job paused" in messages and "Fine-tuning job resumed" in messages
    with pytest.raises(openai.BadRequestError):
        client.fine_tuning.jobs.cancel(job.id)  # already finished


def test_requests_need_a_key(sim_server: SimServer) -> None:
    client = OpenAI(base_url=sim_server.url + "/v1", api_key="unused", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        client.with_options(default_headers={"Authorization": ""}).fine_tuning.jobs.list()


def test_admin_api_and_the_request_log(sim_server: SimServer) -> None:
    import json
    from urllib.request import Request, urlopen

    def admin(method: str, path: str, body: Any = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        with urlopen(Request(sim_server.url + path, data=data, method=method)) as response:
            return json.load(response)

    start = admin("GET", "/_sim/clock")["now"]
    assert admin("POST", "/_sim/clock", {"advance": 90})["now"] == pytest.approx(start + 90)
    faults = admin("PUT", "/_sim/faults", {"max_running": 2, "requests": [{"status": 500}]})
    assert faults["max_running"] == {"openai": 2, "azure": 2}
    with pytest.raises(openai.InternalServerError):
        oai(sim_server).files.list()
    oai(sim_server).files.list()
    log = admin("GET", "/_sim/requests?op=files.list")["data"]
    assert [e["status"] for e in log] == [500, 200]
    assert set(log[0]) == {"sim_time", "api", "method", "path", "op", "status"}


def test_serve_until_stopped(tmp_path: Path) -> None:
    stop = threading.Event()
    seen: list[str] = []

    def ready(server: SimServer) -> None:
        seen.append(server.url)
        oai(server).files.list()
        stop.set()

    apisim.serve(port=0, state=tmp_path / "s", on_ready=ready, stop=stop)
    assert seen and (tmp_path / "s" / "state.json").exists()


def test_cli_help_has_an_example(cli: Any) -> None:
    result = cli("apisim", "--help")
    assert result.code == 0
    assert "Example: ftsweep apisim" in result.out

"""Every simulator response validates against the official OpenAI spec (one test per endpoint
family), and Azure responses against the same schemas with Azure's documented differences."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any
from urllib.request import Request, urlopen

import pytest

from orchestrator.apisim.server import SimServer
from tests.apisim import openapi
from tests.apisim.fixtures import AZURE_KEY, AZURE_VERSION, OPENAI_KEY
from tests.helpers import chat_rows, write_jsonl

JOB = "/fine_tuning/jobs/{fine_tuning_job_id}"


def call(
    server: SimServer,
    method: str,
    path: str,
    body: Any = None,
    *,
    azure: bool = False,
    files: dict[str, tuple[str, bytes]] | None = None,
) -> tuple[int, Any]:
    """One raw HTTP request; returns (status, decoded JSON or bytes)."""
    if azure:
        sep = "&" if "?" in path else "?"
        url = f"{server.url}/openai{path}{sep}api-version={AZURE_VERSION}"
        headers = {"api-key": AZURE_KEY}
    else:
        url, headers = f"{server.url}/v1{path}", {"Authorization": f"Bearer {OPENAI_KEY}"}
    data = None
    if files is not None:
        boundary = "apisimboundary"
        parts = []
        for name, (filename, content) in files.items():
            disposition = f'form-data; name="{name}"'
            if filename:
                disposition += f'; filename="{filename}"'
            parts.append(
                f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode()
                + content
                + b"\r\n"
            )
        data = b"".join(parts) + f"--{boundary}--\r\n".encode()
        headers["Content-Type"] = f"multipart/form-data; boundary={boundary}"
    elif body is not None:
        data, headers["Content-Type"] = json.dumps(body).encode(), "application/json"
    request = Request(url, data=data, method=method, headers=headers)
    try:
        with urlopen(request) as response:
            raw = response.read()
            status = response.status
            ctype = response.headers.get("Content-Type", "")
    except Exception as exc:  # urllib raises HTTPError for 4xx/5xx; it is the response too
        status, raw, ctype = exc.code, exc.read(), exc.headers.get("Content-Type", "")  # type: ignore[attr-defined]
    if ctype.startswith("application/json"):
        return status, json.loads(raw)
    return status, raw


def upload(server: SimServer, path: Path, *, azure: bool = False) -> dict[str, Any]:
    status, body = call(
        server,
        "POST",
        "/files",
        azure=azure,
        files={"purpose": ("", b"fine-tune"), "file": (path.name, path.read_bytes())},
    )
    assert status == (201 if azure else 200), body
    assert isinstance(body, dict)
    return body


def finished_job(server: SimServer, chat_data: tuple[Path, Path], azure: bool = False) -> str:
    train, valid = (upload(server, p, azure=azure)["id"] for p in chat_data)
    status, job = call(
        server,
        "POST",
        "/fine_tuning/jobs",
        {
            "model": "gpt-4o-mini",
            "training_file": train,
            "validation_file": valid,
            "hyperparameters": {"n_epochs": 3, "batch_size": 3, "learning_rate_multiplier": 0.1},
            "seed": 5,
        },
        azure=azure,
    )
    assert status in (200, 201), job
    server.sim.advance(3600)
    return str(job["id"])


def test_files_endpoints(sim_server: SimServer, chat_data: tuple[Path, Path]) -> None:
    created = upload(sim_server, chat_data[0])
    openapi.validate(created, openapi.response_schema("/files", "post"))
    assert created["status"] == "uploaded"
    sim_server.sim.advance(5)
    _, got = call(sim_server, "GET", f"/files/{created['id']}")
    openapi.validate(got, openapi.response_schema("/files/{file_id}", "get"))
    assert got["status"] == "processed"
    _, listed = call(sim_server, "GET", "/files?purpose=fine-tune&limit=1")
    openapi.validate(listed, openapi.response_schema("/files", "get"))
    _, deleted = call(sim_server, "DELETE", f"/files/{created['id']}")
    openapi.validate(deleted, openapi.response_schema("/files/{file_id}", "delete"))
    _, empty = call(sim_server, "GET", "/files")
    openapi.validate(empty, openapi.response_schema("/files", "get"))


def test_job_endpoints(sim_server: SimServer, chat_data: tuple[Path, Path]) -> None:
    train = upload(sim_server, chat_data[0])["id"]
    body = {
        "model": "gpt-4o-mini",
        "training_file": train,
        "method": {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 2}}},
        "metadata": {"ftsweep_key": "k1"},
    }
    _, created = call(sim_server, "POST", "/fine_tuning/jobs", body)
    openapi.validate(created, openapi.response_schema("/fine_tuning/jobs", "post"))
    assert created["status"] == "validating_files"
    assert created["hyperparameters"]["batch_size"] == "auto"
    job = created["id"]
    seen = {created["status"]}
    for _ in range(40):
        sim_server.sim.advance(2)
        _, got = call(sim_server, "GET", f"/fine_tuning/jobs/{job}")
        openapi.validate(got, openapi.response_schema(JOB, "get"))
        seen.add(got["status"])
        if got["status"] == "running" and "paused" not in seen:
            _, paused = call(sim_server, "POST", f"/fine_tuning/jobs/{job}/pause")
            openapi.validate(paused, openapi.response_schema(JOB + "/pause", "post"))
            _, resumed = call(sim_server, "POST", f"/fine_tuning/jobs/{job}/resume")
            openapi.validate(resumed, openapi.response_schema(JOB + "/resume", "post"))
            seen.add("paused")
    assert {"validating_files", "queued", "running", "succeeded"} <= seen
    _, listed = call(sim_server, "GET", "/fine_tuning/jobs?metadata[ftsweep_key]=k1&limit=5")
    openapi.validate(listed, openapi.response_schema("/fine_tuning/jobs", "get"))
    assert [j["id"] for j in listed["data"]] == [job]
    _, other = call(sim_server, "POST", "/fine_tuning/jobs", body)
    _, cancelled = call(sim_server, "POST", f"/fine_tuning/jobs/{other['id']}/cancel")
    openapi.validate(cancelled, openapi.response_schema(JOB + "/cancel", "post"))
    assert cancelled["status"] == "cancelled"


def test_failed_job_validates(sim_server: SimServer, tmp_path: Path) -> None:
    small = write_jsonl(tmp_path / "small.jsonl", chat_rows(7))
    file_id = upload(sim_server, small)["id"]
    _, job = call(
        sim_server, "POST", "/fine_tuning/jobs", {"model": "gpt-4o-mini", "training_file": file_id}
    )
    sim_server.sim.advance(60)
    _, got = call(sim_server, "GET", f"/fine_tuning/jobs/{job['id']}")
    openapi.validate(got, openapi.response_schema(JOB, "get"))
    assert got["status"] == "failed"
    assert got["error"] == {
        "code": "invalid_n_examples",
        "message": "Training file has 7 example(s), but must have at least 10 examples",
        "param": "training_file",
    }


def test_events_checkpoints_and_content(
    sim_server: SimServer, chat_data: tuple[Path, Path]
) -> None:
    job = finished_job(sim_server, chat_data)
    _, events = call(sim_server, "GET", f"/fine_tuning/jobs/{job}/events?limit=100")
    openapi.validate(events, openapi.response_schema(JOB + "/events", "get"))
    kinds = {e["type"] for e in events["data"]}
    assert kinds == {"message", "metrics"}
    _, checkpoints = call(sim_server, "GET", f"/fine_tuning/jobs/{job}/checkpoints")
    openapi.validate(checkpoints, openapi.response_schema(JOB + "/checkpoints", "get"))
    assert [c["step_number"] for c in checkpoints["data"]] == [20, 10]  # newest first
    _, got = call(sim_server, "GET", f"/fine_tuning/jobs/{job}")
    _, content = call(sim_server, "GET", f"/files/{got['result_files'][0]}/content")
    openapi.validate(base64.b64encode(content).decode(), {"type": "string"})
    csv = base64.b64decode(content).decode()
    assert (
        csv.splitlines()[0] == "step,train_loss,train_accuracy,valid_loss,valid_mean_token_accuracy"
    )
    assert len(csv.splitlines()) == 1 + 30


def test_error_bodies(sim_server: SimServer) -> None:
    for method, path, body in (
        ("GET", "/fine_tuning/jobs/ftjob-missing", None),
        ("GET", "/files/file-missing", None),
        ("POST", "/fine_tuning/jobs", {"model": "gpt-4o-mini"}),
        ("POST", "/fine_tuning/jobs", {"model": "no-such-model", "training_file": "file-x"}),
        ("GET", "/fine_tuning/jobs?limit=0", None),
    ):
        status, error = call(sim_server, method, path, body)
        assert status in (400, 404), error
        openapi.validate(error, openapi.component("ErrorResponse"))


@pytest.mark.parametrize("family", ["files", "jobs", "events", "checkpoints"])
def test_azure_responses(sim_server: SimServer, chat_data: tuple[Path, Path], family: str) -> None:
    def check_list(body: dict[str, Any], item: str) -> None:
        assert body["object"] == "list" and isinstance(body["has_more"], bool)
        for entry in body["data"]:
            openapi.validate(entry, openapi.azure_variant(item))

    if family == "files":
        created = upload(sim_server, chat_data[0], azure=True)
        openapi.validate(created, openapi.azure_variant("OpenAIFile"))
        assert created["status"] == "pending"
        _, listed = call(sim_server, "GET", "/files", azure=True)
        check_list(listed, "OpenAIFile")
        return
    job = finished_job(sim_server, chat_data, azure=True)
    if family == "jobs":
        _, got = call(sim_server, "GET", f"/fine_tuning/jobs/{job}", azure=True)
        openapi.validate(got, openapi.azure_variant("FineTuningJob"))
        assert "metadata" not in got and got["organisation_id"] is None
        _, listed = call(sim_server, "GET", "/fine_tuning/jobs", azure=True)
        check_list(listed, "FineTuningJob")
        status, _ = call(sim_server, "DELETE", f"/fine_tuning/jobs/{job}", azure=True)
        assert status == 204
    elif family == "events":
        _, events = call(sim_server, "GET", f"/fine_tuning/jobs/{job}/events?limit=100", azure=True)
        check_list(events, "FineTuningJobEvent")
        times = [e["created_at"] for e in events["data"]]
        assert times == sorted(times)  # oldest first on Azure
    else:
        _, checkpoints = call(sim_server, "GET", f"/fine_tuning/jobs/{job}/checkpoints", azure=True)
        check_list(checkpoints, "FineTuningJobCheckpoint")
        assert len(checkpoints["data"]) == 2


def test_azure_error_shape(sim_server: SimServer) -> None:
    status, error = call(sim_server, "GET", "/fine_tuning/jobs/ftjob-missing", azure=True)
    assert status == 404
    assert set(error) == {"error"} and error["error"]["code"] == "notFound"
    assert set(error["error"]) <= {"code", "message", "target"}
    request = Request(f"{sim_server.url}/openai/files", headers={"api-key": AZURE_KEY})
    with pytest.raises(Exception) as caught:
        urlopen(request)
    assert caught.value.code == 400  # type: ignore[attr-defined]
    body = json.loads(caught.value.read())  # type: ignore[attr-defined]
    assert body["error"]["code"] == "MissingApiVersionParameter"


def test_model_endpoints(sim_server: SimServer, chat_data: tuple[Path, Path]) -> None:
    _, listed = call(sim_server, "GET", "/models")
    openapi.validate(listed, openapi.response_schema("/models", "get"))
    ids = [m["id"] for m in listed["data"]]
    assert "gpt-4o-mini-2024-07-18" in ids and "gpt-4.1-nano-2025-04-14" in ids
    dates = {m["id"]: m["shutdown_date"] for m in listed["data"]}
    assert dates["gpt-4.1-nano-2025-04-14"] == "2026-10-23"
    assert dates["gpt-4.1-mini-2025-04-14"] == "2027-01-14"
    assert dates["babbage-002"] is None
    _, one = call(sim_server, "GET", "/models/gpt-4o-mini-2024-07-18")
    openapi.validate(one, openapi.response_schema("/models/{model}", "get"))
    assert one["owned_by"] == "system" and one["object"] == "model"
    status, error = call(sim_server, "GET", "/models/gpt-9")
    assert status == 404 and error["error"]["code"] == "model_not_found"
    openapi.validate(error, openapi.component("ErrorResponse"))
    finished_job(sim_server, chat_data)  # its fine-tuned model is listed too
    _, listed = call(sim_server, "GET", "/models")
    openapi.validate(listed, openapi.response_schema("/models", "get"))
    tuned = [m for m in listed["data"] if m["id"].startswith("ft:")]
    assert len(tuned) == 1 and tuned[0]["owned_by"] == "org-apisim"
    _, again = call(sim_server, "GET", f"/models/{tuned[0]['id']}")
    openapi.validate(again, openapi.response_schema("/models/{model}", "get"))


def test_azure_model_list_shape(sim_server: SimServer, chat_data: tuple[Path, Path]) -> None:
    """Azure's "Models - List" (2024-10-21): ``capabilities``, ``lifecycle_status``,
    ``deprecation`` in unix seconds, ``created_at`` (Azure's spec is not in the repository:
    the shape of its REST reference example)."""
    finished_job(sim_server, chat_data, azure=True)
    status, listed = call(sim_server, "GET", "/models", azure=True)
    assert status == 200 and listed["object"] == "list"
    by_id = {m["id"]: m for m in listed["data"]}
    nano = by_id["gpt-4.1-nano-2025-04-14"]
    assert nano["capabilities"]["fine_tune"] is True
    assert nano["deprecation"] == {"fine_tune": 1807660800}  # 2027-04-14T00:00:00Z
    assert nano["lifecycle_status"] == "generally-available" and nano["object"] == "model"
    assert isinstance(nano["created_at"], int) and "created" not in nano
    assert by_id["gpt-4o-mini-2024-07-18"]["deprecation"] == {}
    tuned = [m for m in listed["data"] if ".ft-" in m["id"]]
    assert len(tuned) == 1 and tuned[0]["model"] == "gpt-4o-mini"
    assert tuned[0]["capabilities"]["fine_tune"] is False and tuned[0]["fine_tune"].startswith(
        "ftjob-"
    )
    _, one = call(sim_server, "GET", "/models/gpt-35-turbo-0125", azure=True)
    assert one["id"] == "gpt-35-turbo-0125"
    status, error = call(sim_server, "GET", "/models/gpt-9", azure=True)
    assert status == 404 and error["error"]["code"] == "notFound"
    # the two dialects keep their own lists
    _, openai_list = call(sim_server, "GET", "/models")
    assert "gpt-35-turbo-0125" not in {m["id"] for m in openai_list["data"]}

"""apisim's Azure side through the real ``openai`` SDK over HTTP: the v1 surface beside the
dated one, ``trainingType``, Developer-tier pre-emption, quotas, and Azure's error shapes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from orchestrator import apisim
from orchestrator.apisim.server import SimServer
from tests.apisim.fixtures import AZURE_KEY
from tests.helpers import chat_rows, write_jsonl


def _start(tmp_path: Path, faults: dict[str, Any] | None = None) -> SimServer:
    return apisim.start(
        state=tmp_path / "state",
        speed=0.0,
        faults=apisim.Faults.from_dict(faults) if faults else None,
    )


@pytest.fixture
def server(tmp_path: Path) -> Iterator[SimServer]:
    s = _start(tmp_path)
    yield s
    s.close()


def v1(server: SimServer, key: str = AZURE_KEY) -> openai.OpenAI:
    return openai.OpenAI(api_key=key, base_url=f"{server.url}/openai/v1/", max_retries=0)


def dated(server: SimServer, version: str = "2024-10-21") -> openai.AzureOpenAI:
    return openai.AzureOpenAI(
        api_key=AZURE_KEY, azure_endpoint=server.url, api_version=version, max_retries=0
    )


def _train(client: Any, tmp_path: Path) -> str:
    path = write_jsonl(tmp_path / "train.jsonl", chat_rows(20))
    file_id: str = client.files.create(file=path.open("rb"), purpose="fine-tune").id
    return file_id


def _method(n_epochs: int = 2) -> dict[str, Any]:
    hp = {"n_epochs": n_epochs, "batch_size": 4, "learning_rate_multiplier": 0.1}
    return {"type": "supervised", "supervised": {"hyperparameters": hp}}


def test_v1_and_dated_surfaces_share_one_resource(server: SimServer, tmp_path: Path) -> None:
    new, old = v1(server), dated(server)
    file_id = _train(new, tmp_path)
    assert old.files.retrieve(file_id).id == file_id  # one resource, two surfaces
    job = new.fine_tuning.jobs.create(
        model="gpt-4.1-mini", training_file=file_id, method=_method(),
        extra_body={"trainingType": "GlobalStandard"},
    )  # fmt: skip
    seen = old.fine_tuning.jobs.retrieve(job.id)
    assert seen.status == "pending"
    assert (seen.model_extra or {})["trainingType"] == "GlobalStandard"
    assert seen.hyperparameters.n_epochs == 2


def test_v1_requires_training_type_with_azures_misleading_message(
    server: SimServer, tmp_path: Path
) -> None:
    client = v1(server)
    file_id = _train(client, tmp_path)
    with pytest.raises(openai.BadRequestError) as info:
        client.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=file_id, method=_method())
    assert info.value.body == {
        "code": "invalidPayload",
        "message": "The specified base model does not support fine-tuning.",
    }
    with pytest.raises(openai.BadRequestError, match="Supported values"):
        client.fine_tuning.jobs.create(
            model="gpt-4o-mini", training_file=file_id, extra_body={"trainingType": "Global"}
        )
    # the 2024-10-21 surface has no trainingType in its schema: optional there, no method
    old = dated(server)
    assert old.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=file_id).id
    with pytest.raises(openai.BadRequestError, match="method"):
        old.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=file_id, method=_method())


def test_open_weight_models_train_on_global_only(server: SimServer, tmp_path: Path) -> None:
    client = v1(server)
    file_id = _train(client, tmp_path)
    with pytest.raises(openai.BadRequestError) as info:
        client.fine_tuning.jobs.create(
            model="gpt-oss-20b", training_file=file_id, extra_body={"trainingType": "Standard"}
        )
    # issue 24: Global and Data zone (the Data-zone spelling is a guess)
    assert "Supported training types: GlobalStandard, DataZoneStandard" in str(info.value)
    job = client.fine_tuning.jobs.create(
        model="gpt-oss-20b", training_file=file_id, extra_body={"trainingType": "GlobalStandard"}
    )
    assert job.status == "pending"


def test_developer_jobs_pause_and_resume_on_the_simulated_clock(
    server: SimServer, tmp_path: Path
) -> None:
    sim = server.sim
    sim.set_faults(apisim.Faults.from_dict({"developer_pauses": [[0.5, 1000]]}))
    client = v1(server)
    file_id = _train(client, tmp_path)
    job = client.fine_tuning.jobs.create(
        model="gpt-4.1-mini", training_file=file_id, method=_method(4),
        extra_body={"trainingType": "developerTier"},
    )  # fmt: skip
    record = sim.jobs[job.id]
    statuses = []
    for _ in range(2000):
        sim.advance(1)
        statuses.append(client.fine_tuning.jobs.retrieve(job.id).status)
        if statuses[-1] == "succeeded":
            break
    assert "paused" in statuses and statuses[-1] == "succeeded"
    first = statuses.index("paused")
    assert statuses[first - 1] == "running" and "running" in statuses[first:]
    paused_at, resumed_at = record.pauses[0]
    assert resumed_at is not None and paused_at is not None and resumed_at - paused_at == 1000
    # the pause took no training time: the job ends 1000 s later than it would have
    assert record.finished_at == pytest.approx(
        record.started_at + record.total_steps * record.step_seconds + 1000
    )
    messages = [e.message for e in client.fine_tuning.jobs.list_events(job.id, limit=100).data]
    assert "Job paused." in messages and "Job resumed." in messages
    assert record.trained_tokens == record.n_epochs * record.billed_tokens


def test_queue_and_total_quotas_answer_in_azures_error_shape(tmp_path: Path) -> None:
    server = _start(tmp_path, {"azure_quota": {"queued": 2, "total": 3}})
    try:
        client = v1(server)
        file_id = _train(client, tmp_path)

        def create() -> Any:
            return client.fine_tuning.jobs.create(
                model="gpt-4o-mini", training_file=file_id,
                extra_body={"trainingType": "GlobalStandard"},
            )  # fmt: skip

        create(), create()
        with pytest.raises(openai.RateLimitError) as busy:
            create()
        assert busy.value.body["code"] == "quotaExceeded"  # type: ignore[index]
        assert busy.value.response.headers["retry-after"] == "60"
        server.sim.advance(3600)  # both finish: the queue is free, the total is not
        create()
        with pytest.raises(openai.BadRequestError) as full:
            create()
        assert full.value.body["code"] == "quotaExceeded"  # type: ignore[index]
        assert "quota of 3 fine-tuning jobs" in full.value.body["message"]  # type: ignore[index]
    finally:
        server.close()


def test_expired_key_and_token_are_refused_in_azures_words(server: SimServer) -> None:
    from orchestrator.backends.remote.azure import key_client

    # the backend's v1 client sends the key as ``api-key``: the key's refusal, not a token's
    keyed = key_client(f"{server.url}/openai/v1/", "expired-key", 5.0)
    with pytest.raises(openai.AuthenticationError, match="invalid subscription key"):
        keyed.fine_tuning.jobs.list()
    with pytest.raises(openai.AuthenticationError, match="have expired"):
        v1(server, key="expired-as-bearer").fine_tuning.jobs.list()
    token = openai.AzureOpenAI(
        azure_ad_token_provider=lambda: "expired-token",
        azure_endpoint=server.url,
        api_version="2024-10-21",
        max_retries=0,
    )
    with pytest.raises(openai.AuthenticationError, match="have expired"):
        token.fine_tuning.jobs.list()

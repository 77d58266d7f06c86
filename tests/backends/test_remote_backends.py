"""The ``openai`` and ``azure`` backends against ``ftsweep apisim``, through the real SDK.

The simulator runs in-process with a frozen clock (speed 0): the tests move it between
polls, and the backends' sleeper moves it too, so nothing here sleeps for real.
"""

from __future__ import annotations

import socket
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from orchestrator import apisim
from orchestrator.apisim.server import SimServer
from orchestrator.backends import registry
from orchestrator.backends.base import (
    METRIC_NAMES,
    Hyperparameters,
    JobHandle,
    JobStatus,
    JobUpdate,
    MetricPoint,
    TrainingRequest,
)
from orchestrator.backends.remote import (
    AzureOpenAIBackend,
    OpenAIBackend,
    ProviderAuthError,
    ProviderBusyError,
    ProviderUnreachableError,
    RemoteBackend,
)
from orchestrator.backends.remote.azure import AzureOptions
from orchestrator.catalog.prices import training_cost, training_price
from orchestrator.catalog.tokens import openai_counter
from orchestrator.core.errors import BackendError, UnsupportedParameterError
from orchestrator.data.checks import check_file
from orchestrator.testing import BackendCase, points_in_fresh_process
from tests.apisim.fixtures import (
    AZURE_KEY,
    OPENAI_KEY,
    azure_env,
    chat_data,
    openai_env,
    request_log,
)
from tests.helpers import chat_rows, write_jsonl

__all__ = ["chat_data"]

MODEL = "gpt-4o-mini"


@dataclass
class Remote:
    """One backend kind against one simulator, with a simulated sleeper and clock."""

    name: str
    server: SimServer
    tmp: Path
    sleeps: list[float] = field(default_factory=list)

    @property
    def workdir(self) -> Path:
        return self.tmp / "work"

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.server.sim.advance(seconds)

    def backend(self, workdir: Path | None = None, **settings: Any) -> RemoteBackend:
        """A fresh backend instance configured from the environment, like a new process;
        ``settings`` are backend options (``connect_timeout=5``)."""
        cls = OpenAIBackend if self.name == "openai" else AzureOpenAIBackend
        return cls(
            workdir=workdir or self.workdir,
            sleeper=self.sleep,
            clock=self.server.sim.clock.now,
            **settings,
        )

    @property
    def address_variable(self) -> str:
        return "OPENAI_BASE_URL" if self.name == "openai" else "AZURE_OPENAI_ENDPOINT"

    @property
    def address_setting(self) -> str:
        option = "base_url" if self.name == "openai" else "endpoint"
        return f"{self.address_variable} / backend.options.{option}"

    def faults(self, **config: Any) -> None:
        self.server.sim.set_faults(apisim.Faults.from_dict(config))

    def creates(self) -> list[int]:
        return [entry["status"] for entry in request_log(self.server, "jobs.create")]

    def advance(self, seconds: float) -> None:
        self.server.sim.advance(seconds)


@pytest.fixture(params=["openai", "azure"])
def remote(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Remote]:
    server = apisim.start(speed=0, state=tmp_path / "apisim")
    env = openai_env(server) if request.param == "openai" else azure_env(server)
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    yield Remote(request.param, server, tmp_path)
    server.close()


def make_request(
    key: str,
    data: tuple[Path, Path | None],
    n_epochs: int = 4,
    batch_size: int = 1,
    **hp: Any,
) -> TrainingRequest:
    return TrainingRequest(
        key, MODEL, Hyperparameters(n_epochs, batch_size, 0.1, **hp), data[0], data[1], seed=11
    )


def run(
    remote: Remote, backend: RemoteBackend, handle: JobHandle, every: float = 5.0
) -> list[JobUpdate]:
    """Poll with each cursor, moving the simulated clock ``every`` seconds in between."""
    updates: list[JobUpdate] = []
    cursor = None
    for _ in range(2000):
        update = backend.poll(handle, cursor)
        updates.append(update)
        cursor = update.cursor
        if update.status.terminal:
            return updates
        remote.advance(every)
    raise AssertionError(f"{handle.job_id} did not finish")


def points_of(updates: list[JobUpdate]) -> list[MetricPoint]:
    return [p for u in updates for p in u.points]


def test_submit_and_poll_to_completion(remote: Remote, chat_data: tuple[Path, Path]) -> None:
    backend = remote.backend()
    request = make_request("sweep-t1-abc", chat_data)
    handle = backend.submit(request)
    assert handle == JobHandle(remote.name, handle.job_id, request.key)
    updates = run(remote, backend, handle)
    final = updates[-1]
    assert final.status is JobStatus.SUCCEEDED, final.error
    assert {u.status for u in updates} >= {JobStatus.QUEUED, JobStatus.RUNNING}
    points = points_of(updates)
    counts = Counter((p.step, p.name) for p in points)
    assert max(counts.values()) == 1, "a point was delivered twice"
    assert {p.name for p in points} == set(METRIC_NAMES)
    train = [p.step for p in points if p.name == "train_loss"]
    assert train == list(range(1, 121)) and final.total_steps == 120  # 30 examples x 4 epochs
    epochs = {p.step: p.value for p in points if p.name == "epoch"}
    assert epochs[30] == 1.0 and epochs[120] == 4.0 and epochs[45] == 1.5
    full = [p.step for p in points if p.name == "full_valid_loss"]
    assert full == [30, 60, 90, 120]
    # earlier epochs, from the checkpoints: what 2 and 3 epochs gave
    assert [(c.epoch, c.step) for c in final.checkpoints] == [(2, 60), (3, 90)]
    by_step = {(p.step, p.name): p.value for p in points}
    for ckpt in final.checkpoints:
        assert ckpt.metrics["full_valid_loss"] == by_step[(ckpt.step, "full_valid_loss")]
        assert ckpt.model_id.endswith(f":ckpt-step-{ckpt.step}")
    stats = check_file(chat_data[0], openai_counter(MODEL))[0]
    billed = stats.billed_tokens
    assert final.trained_tokens == 4 * billed
    assert final.fine_tuned_model and final.error is None
    # Azure prices by its tier (Global by default)
    price = training_price(MODEL) if remote.name == "openai" else backend.price(MODEL)
    assert price is not None
    assert backend.estimate_cost(request, stats) == training_cost(billed, 4, price)
    assert backend.job_cost(request, final, stats) == training_cost(4 * billed, 1, price)
    assert backend.poll(handle, final.cursor).points == ()
    assert list(backend.poll(handle, None).points) == points
    results = backend.results(handle)
    assert {(p.step, p.name) for p in results} <= set(counts)
    assert len({p.step for p in results}) == 120


def test_a_long_gap_between_polls_spans_event_pages(
    remote: Remote, chat_data: tuple[Path, Path]
) -> None:
    backend = remote.backend()
    handle = backend.submit(make_request("gap", chat_data))
    remote.advance(20)
    early = backend.poll(handle)
    assert early.status is JobStatus.RUNNING and early.points
    remote.advance(3600)  # 100+ new events: more than one page
    late = backend.poll(handle, early.cursor)
    assert late.status is JobStatus.SUCCEEDED
    assert list(early.points + late.points) == list(backend.poll(handle).points)


def test_cancel_keeps_the_metrics(remote: Remote, chat_data: tuple[Path, Path]) -> None:
    backend = remote.backend()
    handle = backend.submit(make_request("to-cancel", chat_data))
    remote.advance(25)
    before = backend.poll(handle)
    assert before.status is JobStatus.RUNNING and before.points
    backend.cancel(handle)
    after = backend.poll(handle, before.cursor)
    assert after.status is JobStatus.CANCELLED
    assert after.trained_tokens is not None and after.trained_tokens > 0
    assert list(backend.poll(handle).points) == list(before.points + after.points)
    backend.cancel(handle)  # again: a no-op
    remote.advance(3600)
    assert backend.poll(handle).status is JobStatus.CANCELLED


def test_resubmitting_a_key_never_creates_a_second_job(
    remote: Remote, chat_data: tuple[Path, Path]
) -> None:
    backend = remote.backend()
    request = make_request("same-key", chat_data)
    first = backend.submit(request)
    assert backend.submit(request) == first
    assert remote.backend().submit(request) == first  # a fresh instance, same workdir
    assert remote.backend(remote.tmp / "elsewhere").submit(request) == first  # no local state
    assert backend.find(request.key) == first
    assert remote.creates() == [200 if remote.name == "openai" else 201]
    other = backend.submit(make_request("other-key", chat_data))
    assert other.job_id != first.job_id
    assert len(request_log(remote.server, "files.create")) == 2  # train + valid, once each
    assert (remote.workdir / "remote-files.json").exists()


def test_find_reattaches_from_a_fresh_instance(
    remote: Remote, chat_data: tuple[Path, Path]
) -> None:
    handle = remote.backend().submit(make_request("find-me", chat_data))
    fresh = remote.backend(remote.tmp / "empty-workdir")
    assert fresh.find("find-me") == handle
    assert fresh.find("nobody") is None
    assert run(remote, fresh, handle)[-1].status is JobStatus.SUCCEEDED


def test_find_reattaches_from_a_fresh_process(remote: Remote, chat_data: tuple[Path, Path]) -> None:
    backend = remote.backend()
    handle = backend.submit(make_request("other-process", chat_data, n_epochs=2))
    remote.advance(3600)
    env = openai_env(remote.server) if remote.name == "openai" else azure_env(remote.server)
    case = BackendCase(
        name=remote.name,
        options={},
        workdir=remote.tmp / "fresh-process",
        short_request=lambda key: make_request(key, chat_data),
        long_request=lambda key: make_request(key, chat_data),
        env=env,
        timeout_s=20,
    )
    seen = points_in_fresh_process(case, "other-process")
    assert seen["job_id"] == handle.job_id and seen["status"] == "succeeded"
    assert seen["points"] == [[p.step, p.name, p.value] for p in backend.poll(handle).points]


def test_rate_limits_back_off_then_succeed(remote: Remote, chat_data: tuple[Path, Path]) -> None:
    remote.faults(requests=[{"op": "jobs.create", "status": 429, "retry_after": 30, "times": 2}])
    handle = remote.backend().submit(make_request("limited", chat_data))
    assert remote.sleeps == [30.0, 30.0]
    assert remote.creates()[:2] == [429, 429] and len(remote.creates()) == 3
    assert [j.id for j in remote.server.sim.jobs.values()] == [handle.job_id]


def test_a_file_not_ready_yet_is_waited_for(remote: Remote, chat_data: tuple[Path, Path]) -> None:
    message = "File file-abc is not ready yet. Please try again later."
    remote.faults(requests=[{"op": "jobs.create", "status": 400, "message": message}])
    remote.backend().submit(make_request("early", chat_data))
    assert len(remote.creates()) == 2 and len(remote.sleeps) == 1
    remote.faults(requests=[{"op": "jobs.create", "status": 400, "message": "Invalid model."}])
    with pytest.raises(BackendError, match=r"HTTP 400.*Invalid model"):
        remote.backend().submit(make_request("bad", chat_data))


def test_a_daily_cap_reports_busy_without_waiting_a_day(
    remote: Remote, chat_data: tuple[Path, Path]
) -> None:
    remote.faults(requests=[{"op": "jobs.create", "status": 429, "retry_after": 86400, "times": 0}])
    with pytest.raises(ProviderBusyError) as caught:
        remote.backend().submit(make_request("capped", chat_data))
    assert caught.value.retry_after == 86400
    expected = "daily_rate_limit_exceeded" if remote.name == "openai" else "tooManyRequests"
    assert expected in str(caught.value) and "rate-limited" in str(caught.value)
    assert remote.sleeps == [] and not remote.server.sim.jobs


def test_a_5xx_after_the_job_was_created_does_not_create_another(
    remote: Remote, chat_data: tuple[Path, Path]
) -> None:
    remote.faults(requests=[{"op": "jobs.create", "status": 500, "when": "after"}])
    handle = remote.backend().submit(make_request("created-anyway", chat_data))
    assert remote.creates() == [500]  # recovered by finding the key's job, not by a retry
    assert list(remote.server.sim.jobs) == [handle.job_id]
    assert len(remote.sleeps) == 1


def test_server_errors_on_every_call_path_are_retried(
    remote: Remote, chat_data: tuple[Path, Path]
) -> None:
    remote.faults(requests=[{"op": "files.create", "status": 500, "times": 1}])
    backend = remote.backend()
    handle = backend.submit(make_request("flaky", chat_data))
    assert remote.sleeps == [1.0]
    remote.faults(
        requests=[
            {"op": "jobs.retrieve", "status": 502, "times": 1},
            {"op": "jobs.events", "status": 503, "times": 2},
            {"op": "jobs.checkpoints", "status": 500, "times": 1},
        ]
    )
    remote.advance(40)
    assert backend.poll(handle).points
    assert remote.sleeps == [1.0, 1.0, 1.0, 2.0, 1.0]
    remote.faults(
        requests=[
            {"op": "files.retrieve", "status": 500, "times": 1},
            {"op": "jobs.list", "status": 503, "times": 1},
            {"op": "jobs.cancel", "status": 500, "times": 1},
        ]
    )
    other = remote.backend().submit(make_request("flaky-2", chat_data))
    assert other.job_id != handle.job_id
    backend.cancel(handle)
    assert backend.poll(handle).status is JobStatus.CANCELLED
    assert len(remote.sleeps) == 5 + 3
    assert len(remote.server.sim.jobs) == 2


def test_a_failed_job_reports_the_provider_message(
    remote: Remote, chat_data: tuple[Path, Path], tmp_path: Path
) -> None:
    remote.faults(
        jobs=[
            {"nth": 1, "code": "server_error", "message": "Internal failure, retry.", "at_step": 5}
        ]
    )
    backend = remote.backend()
    handle = backend.submit(make_request("doomed", chat_data))
    final = run(remote, backend, handle)
    assert final[-1].status is JobStatus.FAILED
    assert final[-1].error == "server_error: Internal failure, retry."
    assert max(p.step for p in points_of(final)) == 5
    small = write_jsonl(tmp_path / "small.jsonl", chat_rows(7))
    handle = backend.submit(make_request("too-small", (small, None)))
    update = run(remote, backend, handle)[-1]
    assert update.status is JobStatus.FAILED
    assert update.error == (
        "invalid_n_examples: Training file has 7 example(s), but must have at least 10 examples"
    )


def test_a_quota_of_one_keeps_the_second_job_queued(
    remote: Remote, chat_data: tuple[Path, Path]
) -> None:
    remote.faults(max_running=1)
    backend = remote.backend()
    first = backend.submit(make_request("q1", chat_data, n_epochs=1))
    second = backend.submit(make_request("q2", chat_data, n_epochs=1))
    remote.advance(20)
    assert backend.poll(first).status is JobStatus.RUNNING
    assert backend.poll(second).status is JobStatus.QUEUED
    assert run(remote, backend, second)[-1].status is JobStatus.SUCCEEDED
    assert backend.poll(first).status is JobStatus.SUCCEEDED
    # issue 24: Azure runs 3 jobs per resource on Standard and Global, 5 on Developer
    assert AzureOpenAIBackend.capabilities.max_concurrent_jobs == 3
    developer = AzureOpenAIBackend(options=AzureOptions(training_type="developer"))
    assert developer.capabilities.max_concurrent_jobs == 5
    assert developer.capabilities.max_in_flight == 5  # the rest wait in ftsweep's queue
    assert OpenAIBackend.capabilities.max_concurrent_jobs == 3


def test_a_file_stuck_in_processing_keeps_the_job_queued(remote: Remote, tmp_path: Path) -> None:
    remote.faults(stuck_files=["slow-*"])
    slow = write_jsonl(tmp_path / "slow-train.jsonl", chat_rows(20))
    backend = remote.backend()
    handle = backend.submit(make_request("stuck", (slow, None)))
    remote.advance(3600)
    assert backend.poll(handle).status is JobStatus.QUEUED


def test_uploads_are_reused_until_the_provider_loses_them(
    remote: Remote, chat_data: tuple[Path, Path]
) -> None:
    backend = remote.backend()
    handle = backend.submit(make_request("u1", chat_data))
    job = backend.client.fine_tuning.jobs.retrieve(handle.job_id)
    backend.client.files.delete(job.training_file)
    remote.backend().submit(make_request("u2", chat_data))
    uploads = request_log(remote.server, "files.create")
    assert len(uploads) == 3  # train, valid, then train again after it was deleted


def test_unsupported_parameters_fail_before_anything_is_spent(
    remote: Remote, chat_data: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    for var in ("OPENAI_API_KEY", "AZURE_OPENAI_API_KEY"):
        monkeypatch.delenv(var, raising=False)  # not even a client is needed to say no
    backend = remote.backend()
    cls = registry.load(remote.name)
    assert not cls.capabilities.accepts("prompt_loss_weight")
    assert cls.capabilities.max_batch_size == 256
    with pytest.raises(UnsupportedParameterError, match="prompt_loss_weight"):
        backend.check(make_request("plw", chat_data, prompt_loss_weight=0.1))
    with pytest.raises(UnsupportedParameterError, match="prompt_loss_weight"):
        backend.submit(make_request("plw", chat_data, prompt_loss_weight=0.1))
    with pytest.raises(UnsupportedParameterError, match="256"):
        backend.check(make_request("big", chat_data, batch_size=300))
    with pytest.raises(UnsupportedParameterError, match="lora"):
        backend.check(
            TrainingRequest(
                "opt", MODEL, Hyperparameters(2, 1, 0.1), chat_data[0], options={"lora": True}
            )
        )
    assert request_log(remote.server) == []


def test_the_api_key_is_never_written_anywhere(
    remote: Remote, chat_data: tuple[Path, Path], tmp_path: Path
) -> None:
    remote.faults(
        requests=[
            {"op": "jobs.create", "status": 429, "retry_after": 5, "times": 1},
            {"op": "jobs.events", "status": 500, "times": 1},
        ],
        jobs=[{"nth": 2, "code": "invalid_training_file", "message": "bad file"}],
    )
    backend = remote.backend()
    messages: list[str] = []
    for key in ("k1", "k2"):
        handle = backend.submit(make_request(key, chat_data))
        updates = run(remote, backend, handle, every=30)
        messages += [repr(u) for u in updates]
    remote.faults(requests=[{"op": "jobs.create", "status": 429, "retry_after": 9999, "times": 0}])
    with pytest.raises(BackendError) as caught:
        backend.submit(make_request("k3", chat_data))
    messages.append(str(caught.value))
    remote.server.sim.save()
    assert len(remote.server.sim.jobs) == 2  # k1, k2: one job per key despite the 429s
    assert sum(200 <= status < 300 for status in remote.creates()) == 2
    written = [p for folder in (remote.tmp,) for p in folder.rglob("*") if p.is_file()]
    assert any(p.name == "requests.jsonl" for p in written)
    assert any(p.name == "remote-files.json" for p in written)
    for key in (OPENAI_KEY, AZURE_KEY):
        for path in written:
            assert key.encode() not in path.read_bytes(), path
        assert not any(key in m for m in messages)
    from orchestrator.backends.remote.retry import redact

    assert OPENAI_KEY not in redact(f"Incorrect API key provided: {OPENAI_KEY}.")


def test_credentials_come_from_the_environment_only(
    remote: Remote, chat_data: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    cls = registry.load(remote.name)
    with pytest.raises(ValidationError, match="environment") as caught:
        cls.parse_options({"api_key": "sk-x"})
    assert "sk-x" not in str(caught.value.errors(include_input=False))
    with pytest.raises(ValidationError, match="Extra inputs"):
        cls.parse_options({"colour": "blue"})
    built = cls.from_options(cls.parse_options({"timeout": 5}), workdir=remote.workdir)
    assert built.options == cls.parse_options({"timeout": 5.0}) and built.workdir == remote.workdir
    for var in ("OPENAI_API_KEY", "AZURE_OPENAI_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    # Azure without a key tries Entra ID, which names the extra it needs when it is missing
    missing = (
        "^OPENAI_API_KEY is not set: export it"
        if remote.name == "openai"
        else "AZURE_OPENAI_API_KEY is not set, and Entra ID sign-in needs azure-identity: "
        "pip install 'ftsweep\\[azure\\]'"
    )
    with pytest.raises(ProviderAuthError, match=missing):
        remote.backend().submit(make_request("no-key", chat_data))
    with pytest.raises(ProviderAuthError, match=missing):
        remote.backend().preflight()
    assert request_log(remote.server) == []


# -- the provider refuses the credentials, or cannot be reached ---------------------------------
def _dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _credentials(remote: Remote) -> str:
    if remote.name == "openai":
        return "OPENAI_API_KEY"
    return (
        "AZURE_OPENAI_API_KEY (a key does not refresh: export a current key from the "
        "resource's Keys and Endpoint page) and AZURE_OPENAI_ENDPOINT"
    )


def test_a_refused_key_is_an_auth_error_at_once_on_every_call_path(
    remote: Remote, chat_data: tuple[Path, Path]
) -> None:
    backend = remote.backend()
    handle = backend.submit(make_request("before", chat_data))
    remote.faults(requests=[{"op": "*", "status": 401, "code": "invalid_api_key", "times": 0}])
    code = "invalid_api_key" if remote.name == "openai" else "unauthorized"
    expected = (
        f"{remote.name} rejected the credentials (HTTP 401 {code}): check {_credentials(remote)}"
    )
    calls = (
        lambda: remote.backend().submit(make_request("after", chat_data)),
        lambda: backend.poll(handle),
        lambda: backend.cancel(handle),
        lambda: remote.backend().find(handle.key),
        lambda: remote.backend().preflight(),
    )
    for call in calls:
        with pytest.raises(ProviderAuthError) as caught:
            call()
        assert str(caught.value) == expected
        assert not isinstance(caught.value, ProviderBusyError)
    assert remote.sleeps == []  # nothing retried: no retry fixes a refused key
    assert all(e["status"] == 401 for e in request_log(remote.server)[-len(calls) :])


def test_a_forbidden_account_or_one_that_may_not_fine_tune_is_an_auth_error(
    remote: Remote, chat_data: tuple[Path, Path]
) -> None:
    scopes = "You have insufficient permissions for this operation. Missing scopes: api.model.write"
    remote.faults(requests=[{"op": "jobs.create", "status": 403, "message": scopes}])
    with pytest.raises(ProviderAuthError) as caught:
        remote.backend().submit(make_request("forbidden", chat_data))
    code = " forbidden" if remote.name == "azure" else ""
    access = (
        "the key's organization and project (OPENAI_ORG_ID / OPENAI_PROJECT_ID)"
        if remote.name == "openai"
        else "the resource's region and fine-tuning access (AZURE_OPENAI_ENDPOINT)"
    )
    assert str(caught.value) == (
        f"{remote.name} refused access (HTTP 403{code}: {scopes}): "
        f"check {_credentials(remote)} and {access}"
    )
    refusal = "Your organization org-abc123 is not allowed to create fine-tuning jobs."
    remote.faults(requests=[{"op": "jobs.create", "status": 400, "message": refusal}])
    with pytest.raises(ProviderAuthError, match="does not allow fine-tuning for this account"):
        remote.backend().submit(make_request("no-fine-tuning", chat_data))
    assert not remote.server.sim.jobs and remote.sleeps == []


def test_which_messages_refuse_fine_tuning_to_the_account() -> None:
    from orchestrator.backends.remote.retry import refuses_fine_tuning

    refusals = [
        "Your organization org-abc123 is not allowed to create fine-tuning jobs.",
        "HTTP 403: You do not have access to fine-tuning.",
        "Fine-tuning is not available for your organization.",
        "This project is not permitted to use fine-tuning.",
        "The subscription is not enabled for fine-tuning in this region.",
    ]
    per_request = [
        "Model gpt-4 is not available for fine-tuning or does not exist.",
        "Invalid model.",
        "File file-abc is not ready yet. Please try again later.",
        "Example 3 has a message with invalid content.",
        "hyperparameters.n_epochs: must be at most 50",
    ]
    assert [refuses_fine_tuning(m) for m in refusals] == [True] * len(refusals)
    assert [refuses_fine_tuning(m) for m in per_request] == [False] * len(per_request)


def test_a_dead_address_is_unreachable_after_connect_timeout_not_busy(
    remote: Remote, chat_data: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"http://127.0.0.1:{_dead_port()}" + ("/v1" if remote.name == "openai" else "")
    monkeypatch.setenv(remote.address_variable, url)
    expected = f"cannot reach {url}: connection refused (set {remote.address_setting})"
    with pytest.raises(ProviderUnreachableError) as caught:
        remote.backend().submit(make_request("nowhere", chat_data))
    assert str(caught.value) == expected and caught.value.url == url
    assert not isinstance(caught.value, ProviderBusyError)
    assert remote.sleeps == [1.0, 2.0, 4.0, 8.0, 15.0]  # 30 s (the default), then it gives up
    remote.sleeps.clear()
    with pytest.raises(ProviderUnreachableError, match="connection refused"):
        remote.backend(connect_timeout=2.5).preflight()
    assert remote.sleeps == [1.0, 1.5]


def test_a_server_that_never_answers_times_out_as_unreachable(
    remote: Remote, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as silent:  # accepts connections (the backlog), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        url += "/v1" if remote.name == "openai" else ""
        monkeypatch.setenv(remote.address_variable, url)
        with pytest.raises(ProviderUnreachableError) as caught:
            remote.backend(timeout=0.2, connect_timeout=0.5).preflight()
    assert str(caught.value) == f"cannot reach {url}: timed out (set {remote.address_setting})"
    assert remote.sleeps == [0.5]


def test_preflight_lists_one_job_and_starts_nothing(remote: Remote) -> None:
    remote.backend().preflight()
    assert [(e["op"], e["status"]) for e in request_log(remote.server)] == [("jobs.list", 200)]
    assert not remote.server.sim.jobs and remote.sleeps == []


def test_preflight_passes_a_rate_limit_and_names_the_address_of_other_failures(
    remote: Remote, monkeypatch: pytest.MonkeyPatch
) -> None:
    remote.faults(requests=[{"op": "jobs.list", "status": 429, "retry_after": 3600}])
    remote.backend().preflight()  # a 429 comes after the key was accepted
    remote.faults(requests=[{"op": "jobs.list", "status": 503, "times": 0}])
    with pytest.raises(BackendError) as caught:
        remote.backend(connect_timeout=5).preflight()
    scope = remote.backend()._scope()
    assert str(caught.value).startswith(f"{remote.name} at {scope} is failing (")
    assert str(caught.value).endswith("): try again later")
    assert not isinstance(caught.value, ProviderBusyError)  # the run stops: exit 1
    assert sum(remote.sleeps) <= 5
    remote.faults()
    wrong = remote.server.url + "/nowhere"
    monkeypatch.setenv(remote.address_variable, wrong)
    with pytest.raises(BackendError) as caught:
        remote.backend().preflight()
    assert str(caught.value).startswith(f"{remote.name} at {wrong.rstrip('/')}")
    assert "HTTP 404" in str(caught.value)
    assert str(caught.value).endswith(f"check {remote.address_setting}")


def test_statuses_are_normalised() -> None:
    from orchestrator.backends.remote.events import job_status
    from orchestrator.backends.remote.files import normalise_file_status

    queued = ["validating_files", "queued", "pending", "created", "notRunning"]
    assert {job_status(s) for s in queued} == {JobStatus.QUEUED}
    assert job_status("running") is job_status("paused") is JobStatus.RUNNING
    assert job_status("canceled") is job_status("cancelled") is JobStatus.CANCELLED
    assert [normalise_file_status(s) for s in ("succeeded", "processed", "failed", "error")] == [
        "processed",
        "processed",
        "error",
        "error",
    ]
    assert normalise_file_status("running") == normalise_file_status("uploaded") == "pending"


def test_metrics_from_messages_and_result_files() -> None:
    import base64

    from orchestrator.backends.remote.events import metric_points, parse_result_csv

    message = "Step 290/303: training loss=0.00, validation loss=0.31, full validation loss=0.33"
    step, total, points = metric_points(None, message, per_epoch=101.0)
    assert (step, total) == (290, 303)
    assert {p.name: p.value for p in points} == {
        "train_loss": 0.0,
        "valid_loss": 0.31,
        "full_valid_loss": 0.33,
        "epoch": round(290 / 101, 6),
    }
    openai_csv = (
        b"step,train_loss,train_accuracy,valid_loss,valid_mean_token_accuracy\n1,3.6,0.5,,\n"
    )
    azure_csv = (
        b"step,train_loss,train_mean_token_accuracy,valid_loss,valid_mean_token_accuracy\n"
        b"1,3.6,0.5,-1,N/A\n"
    )
    expected = [MetricPoint(1, "train_loss", 3.6), MetricPoint(1, "train_mean_token_accuracy", 0.5)]
    assert parse_result_csv(base64.b64encode(openai_csv)) == expected
    assert parse_result_csv(azure_csv) == expected


def test_a_polled_result_file_and_a_read_one_give_the_same_curves() -> None:
    """The backend's lenient reader (:mod:`.events`) and ``ftsweep diagnose``'s strict one
    (:mod:`.resultfile`) share one table of columns: every spelling, the legacy API's
    included, gives the same curves through both."""
    from orchestrator.backends.remote import events, resultfile

    header = ["step", *resultfile.COLUMNS]
    rows = [[str(step), *(f"{step}.{i}" for i in range(len(header) - 1))] for step in (1, 2)]
    rows[1][1] = "N/A"  # a missing cell, in either reader
    csv = "\n".join(",".join(r) for r in [header, *rows]).encode()
    strict = resultfile.parse_result_csv(csv)
    lenient: dict[str, list[tuple[int, float]]] = {}
    for point in events.parse_result_csv(csv):
        lenient.setdefault(point.name, []).append((point.step, point.value))
    assert lenient == strict
    assert set(strict) == set(resultfile.COLUMNS.values())
    assert strict["train_loss"][0] == (1, 1.0)

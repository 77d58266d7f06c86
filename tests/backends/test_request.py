"""A training request's one shape: ``TrainingRequest.to_dict``/``from_dict`` (and the JSON
pair on top of them) is what the ledger stores, what a local job's ``request.json`` holds and
what its worker reads back; ``config_hash`` hashes part of it and never changes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from orchestrator.backends.base import Hyperparameters, JobStatus, TrainingRequest
from orchestrator.backends.local import LocalBackend, LocalOptions
from orchestrator.backends.local.jobfiles import JobFolder
from orchestrator.testing import poll_until
from tests.backends.conftest import LOCAL_OPTIONS

FULL = TrainingRequest.make(
    study="s",
    trial=3,
    model="m",
    hyperparameters=Hyperparameters(2, 4, 0.1, 0.01),
    train_file=Path("/a/t.jsonl"),
    valid_file=Path("v.jsonl"),
    seed=5,
    options={"x": "/p", "y": [1, 2]},
    metadata={"a": "b"},
)
BARE = TrainingRequest("k", "m", Hyperparameters(2, 4, 0.1), Path("t"))


@pytest.mark.parametrize("request_", [FULL, BARE], ids=["full", "bare"])
def test_a_request_reads_back_as_itself(request_: TrainingRequest) -> None:
    assert TrainingRequest.from_json(request_.to_json()) == request_
    assert TrainingRequest.from_dict(request_.to_dict()) == request_
    assert json.loads(request_.to_json()) == request_.to_dict()
    assert TrainingRequest.from_dict({**request_.to_dict(), "submitted": 1.0}) == request_


def test_a_request_missing_a_field_is_a_key_error() -> None:
    record = BARE.to_dict()
    del record["train_file"]
    with pytest.raises(KeyError, match="train_file"):
        TrainingRequest.from_dict(record)


def test_config_hashes_and_keys_do_not_change() -> None:
    """Existing studies find their jobs by these keys: the hash is pinned."""
    assert FULL.config_hash() == "65f86b145875ded7"
    assert FULL.key == "s-t3-65f86b145875ded7"
    assert BARE.config_hash() == "f02c3803a6b2c247"
    # the key and the metadata are not hashed
    assert (
        TrainingRequest(
            "other", "m", Hyperparameters(2, 4, 0.1), Path("t"), metadata={"a": "b"}
        ).config_hash()
        == BARE.config_hash()
    )


def test_a_local_jobs_request_file_is_the_request_resolved(
    local_workdir: Path, reverse_small: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``request.json`` is ``to_dict`` of the request with its paths resolved and its options
    complete, plus when it was submitted; the worker reads it back with ``from_dict`` (a model
    that does not exist fails there, naming it)."""
    backend = LocalBackend(local_workdir, LocalOptions.parse(LOCAL_OPTIONS))
    monkeypatch.chdir(reverse_small[0].parent)
    train, valid = (Path(p.name) for p in reverse_small)  # relative: resolved in the record
    request = TrainingRequest(
        "bad-model", "./no/such/model", Hyperparameters(1, 4, 1.0), train, valid
    )
    handle = backend.submit(request)
    record = JobFolder(local_workdir / "jobs" / handle.job_id).read_request()
    assert isinstance(record.pop("submitted"), float)
    assert TrainingRequest.from_dict(record) == TrainingRequest(
        "bad-model",
        "./no/such/model",
        request.hyperparameters,
        train.resolve(),
        valid.resolve(),
        options=backend.job_options(request).to_dict(),
    )
    polled = poll_until(backend, handle, timeout_s=60)
    assert polled.last.status is JobStatus.FAILED
    assert "./no/such/model" in (polled.last.error or "")

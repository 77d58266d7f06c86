"""The contract every backend passes (see ``orchestrator/backends/base.py``).

Each backend contributes a fixture named ``<name>_case`` returning a
:class:`tests.backends.jobs.BackendCase`; adding its name to ``BACKENDS`` runs the whole suite
against it.
"""

from __future__ import annotations

import time
from collections import Counter

import pytest

from orchestrator.backends.base import METRIC_NAMES, Backend, JobStatus
from tests.backends.jobs import BackendCase, Polled, points_in_fresh_process, poll_until

BACKENDS = ["local", "openai", "azure"]


@pytest.fixture(params=BACKENDS)
def case(request: pytest.FixtureRequest) -> BackendCase:
    built: BackendCase = request.getfixturevalue(f"{request.param}_case")
    return built


def _key(request: pytest.FixtureRequest) -> str:
    return f"contract-{request.node.name}-{time.time_ns()}"


def _assert_well_formed(polled: Polled) -> None:
    assert polled.points, "no metric points"
    assert {p.name for p in polled.points} <= set(METRIC_NAMES)
    assert "train_loss" in {p.name for p in polled.points}
    repeated = [k for k, n in Counter((p.step, p.name) for p in polled.points).items() if n > 1]
    assert not repeated, f"points delivered twice: {repeated[:5]}"
    assert all(p.step >= 1 for p in polled.points)


def test_submit_and_poll_to_completion(case: BackendCase, request: pytest.FixtureRequest) -> None:
    backend = case.backend()
    handle = backend.submit(case.short_request(_key(request)))
    assert handle.backend == backend.name
    polled = poll_until(backend, handle, timeout_s=case.timeout_s)
    final = polled.last
    assert final.status is JobStatus.SUCCEEDED, final.error
    _assert_well_formed(polled)
    steps = [s for s, _ in polled.series("train_loss")]
    assert steps == sorted(steps)
    if final.total_steps is not None:
        assert steps[-1] == final.total_steps
    # after the end, the cursor yields nothing new; no cursor yields everything again
    assert backend.poll(handle, polled.cursor).points == ()
    assert list(backend.poll(handle, None).points) == polled.points
    # cancelling a finished job is a no-op
    backend.cancel(handle)
    assert backend.poll(handle, polled.cursor).status is JobStatus.SUCCEEDED


def test_resubmit_with_the_same_key_returns_the_same_job(
    case: BackendCase, request: pytest.FixtureRequest
) -> None:
    backend = case.backend()
    key = _key(request)
    first = backend.submit(case.long_request(key))
    try:
        assert backend.submit(case.long_request(key)) == first
        assert case.backend().submit(case.long_request(key)) == first
        assert backend.find(key) == first
        other = backend.submit(case.long_request(key + "-other"))
        assert other.job_id != first.job_id
        backend.cancel(other)
    finally:
        backend.cancel(first)


def test_find_an_unknown_key(case: BackendCase) -> None:
    assert case.backend().find("no-such-key") is None


def test_cancel_stops_the_job_and_keeps_its_metrics(
    case: BackendCase, request: pytest.FixtureRequest
) -> None:
    backend = case.backend()
    handle = backend.submit(case.long_request(_key(request)))
    before = poll_until(
        backend,
        handle,
        lambda p: bool(p.points) or p.last.status.terminal,
        timeout_s=case.timeout_s,
    )
    assert before.last.status is JobStatus.RUNNING
    backend.cancel(handle)
    started = time.monotonic()
    after = poll_until(backend, handle, timeout_s=5.0, polled=before)
    assert after.last.status is JobStatus.CANCELLED
    assert time.monotonic() - started < 5.0
    everything = list(backend.poll(handle, None).points)
    assert everything == after.points
    assert everything[: len(before.points)] == before.points
    backend.cancel(handle)  # again: a no-op
    assert backend.poll(handle, after.cursor).status is JobStatus.CANCELLED


def test_reattach_from_a_fresh_process(case: BackendCase, request: pytest.FixtureRequest) -> None:
    backend: Backend = case.backend()
    key = _key(request)
    handle = backend.submit(case.short_request(key))
    seen = points_in_fresh_process(case, key)
    assert seen["job_id"] == handle.job_id
    assert seen["status"] == JobStatus.SUCCEEDED.value
    here = backend.poll(handle, None)
    assert [[p.step, p.name, p.value] for p in here.points] == seen["points"]
    assert points_in_fresh_process(case, key + "-unknown")["job_id"] is None

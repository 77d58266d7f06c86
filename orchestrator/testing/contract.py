"""The contract suite every backend passes (the contract is :mod:`orchestrator.backends.base`).

Run it against your backend with one import. Register the backend under the entry-point group
``ftsweep.backends`` (see :mod:`orchestrator.backends.registry`), define a pytest fixture named
``backend_case`` that returns a :class:`~orchestrator.testing.BackendCase`, and import the
tests into your test module::

    # tests/test_mybackend_contract.py
    import pytest

    from orchestrator.testing import BackendCase
    from orchestrator.testing.contract import *  # noqa: F403


    @pytest.fixture
    def backend_case(tmp_path) -> BackendCase:
        return BackendCase(
            name="mybackend",                    # its name in ftsweep.backends
            options={"endpoint": "http://127.0.0.1:8080"},  # its backend.options
            workdir=tmp_path / "work",           # the same in a fresh process
            short_request=...,                   # key -> a TrainingRequest that ends in seconds
            long_request=...,                    # key -> one that runs until cancelled
            env={},                              # what a fresh process needs (PYTHONPATH, keys)
            timeout_s=120.0,                     # the most a short job takes
            busy=None,                           # () -> a context in which submit is refused
            instant_jobs=False,                  # True: jobs have ended when submit returns
        )

``docs/backends.md`` ("Testing it") has the complete, runnable module (ftsweep's tests run it
as it is written there). ``pytest tests/test_mybackend_contract.py`` then runs every test
below against it. To test several backends, parametrize the fixture
(``tests/backends/test_contract.py`` of ftsweep runs ``local``, ``openai`` and ``azure`` this
way). The fields are described on :class:`~orchestrator.testing.BackendCase`; without
``busy`` the busy-provider test is skipped, and ``train_stats`` gives the training file's
statistics when ftsweep's data checks cannot count tokens for your models. For pytest's
detailed assertion messages inside these tests, add
``pytest.register_assert_rewrite("orchestrator.testing.contract")`` to your ``conftest.py``.

The tests: submit and poll to completion (each point once, in step order; each epoch ended
once, in step order, the last at the job's last step; polling again after the end yields
nothing new with the cursor and everything with ``None``; cancelling the finished job is a
no-op; every terminal update reports the same ``cost_usd``, and a priced backend's finished
job has a cost of its own: ``cost_usd`` on its terminal updates, or a ``job_cost`` that
computes it rather than falling back to the estimate); resubmitting a key returns its job;
``find`` of an unknown key is None; cancel stops a running job and keeps its metrics (with
``instant_jobs``: cancelling an ended job keeps it and its metrics); re-attach from a fresh
process; ``check`` accepts the case's requests and refuses values outside ``capabilities``;
``estimate_cost`` is None or a finite amount >= 0 (not None when ``capabilities.priced``);
while the provider is busy, ``submit`` raises ``ProviderBusyError`` and starts nothing.
"""

from __future__ import annotations

import copy
import itertools
import math
import time
from collections import Counter
from dataclasses import replace

import pytest

from orchestrator.backends.base import (
    METRIC_NAMES,
    THROUGHPUT_METRICS,
    Backend,
    Hyperparameters,
    JobStatus,
    JobUpdate,
    ModelInfo,
    TrainingRequest,
)
from orchestrator.core.errors import ProviderBusyError, UnsupportedParameterError
from orchestrator.testing.helpers import (
    BackendCase,
    Polled,
    out_of_range,
    points_in_fresh_process,
    poll_until,
    train_stats,
)

__all__ = [
    "test_cancel_stops_the_job_and_keeps_its_metrics",
    "test_check_accepts_the_case_requests",
    "test_check_refuses_values_outside_the_capabilities",
    "test_estimate_cost_is_none_or_a_finite_amount",
    "test_find_an_unknown_key",
    "test_list_models_is_none_or_model_infos",
    "test_reattach_from_a_fresh_process",
    "test_resubmit_with_the_same_key_returns_the_same_job",
    "test_submit_and_poll_to_completion",
    "test_submit_while_the_provider_is_busy_starts_nothing",
]


def _key(request: pytest.FixtureRequest) -> str:
    return f"contract-{request.node.name}-{time.time_ns()}"


def _assert_well_formed(polled: Polled) -> None:
    assert polled.points, "no metric points"
    names = {p.name for p in polled.points}
    known = set(METRIC_NAMES) | set(THROUGHPUT_METRICS)
    assert names <= known, f"unknown metric names: {sorted(names - known)}"
    assert "train_loss" in names, f"no train_loss among {sorted(names)}"
    repeated = [k for k, n in Counter((p.step, p.name) for p in polled.points).items() if n > 1]
    assert not repeated, f"points delivered twice: {repeated[:5]}"
    assert all(p.step >= 1 for p in polled.points), "steps are 1-based"


def _assert_epoch_ends(polled: Polled, everything: JobUpdate, n_epochs: int) -> None:
    """Each epoch 1..n_epochs ended once, in step order, the last at the job's last step;
    polling with None reports them all again."""
    ends = [e for u in polled.updates for e in u.epoch_ends]
    epochs = [e.epoch for e in ends]
    assert epochs == list(range(1, n_epochs + 1)), (
        f"epoch ends {epochs}, expected 1 to {n_epochs} once each, in order: say where "
        "epochs end in JobUpdate.epoch_ends (epoch_ends_of(points) from the epoch metric); "
        "the engine prunes only at epoch ends"
    )
    steps = [e.step for e in ends]
    assert all(a < b for a, b in itertools.pairwise(steps)), (
        f"epoch ends at steps {steps}: not increasing"
    )
    total = polled.last.total_steps or max(p.step for p in polled.points)
    assert steps[-1] == total, (
        f"the last epoch ends at step {steps[-1]}, but the job's last step is {total}"
    )
    assert everything.epoch_ends == tuple(ends), (
        "polling with None did not report every epoch end again"
    )


def _assert_costs(
    backend: Backend, case: BackendCase, request: TrainingRequest, terminal: list[JobUpdate]
) -> None:
    """The same ``cost_usd`` (None or a finite amount >= 0) on every terminal update; for
    a priced backend, a cost of the finished job (``job_cost`` of its terminal update) that
    is its own: ``cost_usd`` on the terminal updates, or a ``job_cost`` that computes it
    without falling back to the estimate."""
    reported = [u.cost_usd for u in terminal]
    assert len(set(reported)) == 1, (
        f"the terminal updates of one job report costs {reported}: cost_usd belongs on "
        "every terminal update, the same on each (the engine charges the first it polls, "
        "with whatever cursor)"
    )
    cost = reported[0]
    if cost is not None:
        assert isinstance(cost, int | float) and not isinstance(cost, bool), repr(cost)
        assert math.isfinite(cost) and cost >= 0, f"cost_usd {cost!r}"
    if not backend.capabilities.priced:
        return
    stats = train_stats(case, request, backend)
    charged = backend.job_cost(request, terminal[0], stats)
    assert charged is not None, (
        "a priced backend's finished job has no cost: report JobUpdate.cost_usd on its "
        "terminal updates, or compute it in job_cost"
    )
    assert math.isfinite(charged) and charged >= 0, f"job_cost {charged!r}"
    if cost is not None:
        return
    # job_cost's default falls back to the estimate: with no estimate to fall back on, is
    # there a cost of the job's own (computed in job_cost, from its trained tokens, say)?
    unestimated = copy.copy(backend)
    vars(unestimated)["estimate_cost"] = lambda request, train: None
    assert unestimated.job_cost(request, terminal[0], stats) is not None, (
        "a priced backend's finished job reports no cost of its own: its terminal updates "
        "have no cost_usd and job_cost only falls back to the estimate, so the budget is "
        "charged the estimate, never what the job cost: report JobUpdate.cost_usd on its "
        "terminal updates (the same on each), or compute the cost in job_cost"
    )


def test_submit_and_poll_to_completion(
    backend_case: BackendCase, request: pytest.FixtureRequest
) -> None:
    backend = backend_case.backend()
    short = backend_case.short_request(_key(request))
    handle = backend.submit(short)
    assert handle.backend == backend.name
    polled = poll_until(backend, handle, timeout_s=backend_case.timeout_s)
    final = polled.last
    assert final.status is JobStatus.SUCCEEDED, final.error
    _assert_well_formed(polled)
    steps = [s for s, _ in polled.series("train_loss")]
    assert steps == sorted(steps), "train_loss steps out of order"
    if final.total_steps is not None:
        assert steps[-1] == final.total_steps
    again = backend.poll(handle, polled.cursor)
    assert again.points == (), "polling with the last cursor after the end yielded new points"
    everything = backend.poll(handle, None)
    assert list(everything.points) == polled.points, (
        "polling with None did not yield every point again"
    )
    _assert_epoch_ends(polled, everything, short.hyperparameters.n_epochs)
    backend.cancel(handle)
    after = backend.poll(handle, polled.cursor)
    assert after.status is JobStatus.SUCCEEDED, "cancelling a finished job changed its status"
    _assert_costs(backend, backend_case, short, [final, again, everything, after])


def test_resubmit_with_the_same_key_returns_the_same_job(
    backend_case: BackendCase, request: pytest.FixtureRequest
) -> None:
    backend = backend_case.backend()
    key = _key(request)
    first = backend.submit(backend_case.long_request(key))
    try:
        assert backend.submit(backend_case.long_request(key)) == first
        assert backend_case.backend().submit(backend_case.long_request(key)) == first
        assert backend.find(key) == first
        other = backend.submit(backend_case.long_request(key + "-other"))
        assert other.job_id != first.job_id, "a different key got the same job"
        backend.cancel(other)
    finally:
        backend.cancel(first)


def test_find_an_unknown_key(backend_case: BackendCase) -> None:
    assert backend_case.backend().find("no-such-key") is None


def test_list_models_is_none_or_model_infos(backend_case: BackendCase) -> None:
    models = backend_case.backend().list_models()
    if models is None:
        return  # no model list: the default
    assert isinstance(models, list), f"list_models returned {type(models).__name__}"
    assert all(isinstance(m, ModelInfo) for m in models), "entries must be ModelInfo"
    assert all(m.id for m in models), "every model has an id"


def test_cancel_stops_the_job_and_keeps_its_metrics(
    backend_case: BackendCase, request: pytest.FixtureRequest
) -> None:
    backend = backend_case.backend()
    handle = backend.submit(backend_case.long_request(_key(request)))
    before = poll_until(
        backend,
        handle,
        lambda p: bool(p.points) or p.last.status.terminal,
        timeout_s=backend_case.timeout_s,
    )
    if backend_case.instant_jobs:
        assert before.last.status is JobStatus.SUCCEEDED, (
            f"the case declares instant_jobs, but the job's first poll says {before.last.status}"
        )
        backend.cancel(handle)  # an ended job: a no-op
        kept = backend.poll(handle, None)
        assert kept.status is JobStatus.SUCCEEDED, "cancelling an ended job changed its status"
        assert list(kept.points) == before.points, "cancelling an ended job lost its metrics"
        return
    assert before.last.status is JobStatus.RUNNING, (
        f"the long request's job was {before.last.status} at its first points, not running: "
        "make long_request run longer, or declare BackendCase(instant_jobs=True) when the "
        "backend's jobs have ended when submit returns"
    )
    backend.cancel(handle)
    started = time.monotonic()
    after = poll_until(backend, handle, timeout_s=5.0, polled=before)
    assert after.last.status is JobStatus.CANCELLED
    assert time.monotonic() - started < 5.0
    everything = list(backend.poll(handle, None).points)
    assert everything == after.points, "points reported before the cancel were lost"
    assert everything[: len(before.points)] == before.points
    backend.cancel(handle)  # again: a no-op
    assert backend.poll(handle, after.cursor).status is JobStatus.CANCELLED


def test_reattach_from_a_fresh_process(
    backend_case: BackendCase, request: pytest.FixtureRequest
) -> None:
    backend = backend_case.backend()
    key = _key(request)
    handle = backend.submit(backend_case.short_request(key))
    seen = points_in_fresh_process(backend_case, key)
    assert seen["job_id"] == handle.job_id, "find(key) in a fresh process missed the job"
    assert seen["status"] == JobStatus.SUCCEEDED.value
    here = backend.poll(handle, None)
    assert [[p.step, p.name, p.value] for p in here.points] == seen["points"]
    assert points_in_fresh_process(backend_case, key + "-unknown")["job_id"] is None


def test_check_accepts_the_case_requests(
    backend_case: BackendCase, request: pytest.FixtureRequest
) -> None:
    backend = backend_case.backend()
    key = _key(request)
    backend.check(backend_case.short_request(key))
    backend.check(backend_case.long_request(key))


def test_check_refuses_values_outside_the_capabilities(
    backend_case: BackendCase, request: pytest.FixtureRequest
) -> None:
    backend = backend_case.backend()
    accepted = backend_case.short_request(_key(request))
    refused = list(out_of_range(backend.capabilities))
    if not refused:
        pytest.skip("the backend's capabilities have no finite bound to step over")
    problems = []
    for name, value in refused:
        hp = Hyperparameters.from_dict({**accepted.hyperparameters.as_dict(), name: value})
        try:
            backend.check(replace(accepted, hyperparameters=hp))
        except UnsupportedParameterError as exc:
            if name not in str(exc):
                problems.append(f"{name}={value:g}: the message does not name it ({exc})")
        else:
            problems.append(f"{name}={value:g} was accepted")
    assert not problems, "check() must raise UnsupportedParameterError: " + "; ".join(problems)


def test_estimate_cost_is_none_or_a_finite_amount(
    backend_case: BackendCase, request: pytest.FixtureRequest
) -> None:
    backend = backend_case.backend()
    short = backend_case.short_request(_key(request))
    cost = backend.estimate_cost(short, train_stats(backend_case, short, backend))
    if cost is None:
        assert not backend.capabilities.priced, "a priced backend estimated no cost"
        return
    assert isinstance(cost, int | float) and not isinstance(cost, bool), repr(cost)
    assert math.isfinite(cost) and cost >= 0, f"estimated cost {cost!r}"


def test_submit_while_the_provider_is_busy_starts_nothing(
    backend_case: BackendCase, request: pytest.FixtureRequest
) -> None:
    if backend_case.busy is None:
        pytest.skip("the case has no way to make the provider busy (BackendCase.busy)")
    backend = backend_case.backend()
    key = _key(request)
    short = backend_case.short_request(key)
    with backend_case.busy(), pytest.raises(ProviderBusyError):
        backend.submit(short)
    assert backend.find(key) is None, "a refused submit left a job behind"
    assert backend_case.backend().find(key) is None, "a refused submit left a job behind"
    handle = backend.submit(short)  # the engine submits again once the provider takes work
    assert backend.find(key) == handle
    poll_until(backend, handle, timeout_s=backend_case.timeout_s)

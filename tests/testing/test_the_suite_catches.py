"""The contract suite fails a backend that breaks the contract: each flawed backend of
:mod:`tests.testing.flawed` (registered by entry point) fails the suite's test that guards
the rule it breaks, with a message that names the rule; the instant-job mode must be
declared, and declared only for jobs that end at submit."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from orchestrator.backends.base import Hyperparameters, TrainingRequest
from orchestrator.testing import BackendCase, instant
from orchestrator.testing import contract as suite
from tests.testing import flawed


@pytest.fixture(scope="session")
def flawed_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    site = tmp_path_factory.mktemp("flawed-site")
    flawed.install(site)
    instant.install(site)
    return site


def _case(
    tmp_path: Path,
    name: str,
    n_epochs: int = 2,
    instant_jobs: bool | None = None,
    **options: Any,
) -> BackendCase:
    """A case of backend ``name``; ``instant_jobs`` declared as ``finish_at_submit`` says,
    unless given."""
    if instant_jobs is None:
        instant_jobs = bool(options.get("finish_at_submit"))
    train = tmp_path / "train.jsonl"
    rows = [{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}]
    train.write_text(json.dumps(rows[0]) + "\n")

    def make(key: str, epochs: int) -> TrainingRequest:
        hp = Hyperparameters(n_epochs=epochs, batch_size=1, learning_rate_multiplier=0.1)
        return TrainingRequest(key=key, model="m", hyperparameters=hp, train_file=train)

    return BackendCase(
        name=name,
        options={"price_per_epoch": 0.5, **options},
        workdir=tmp_path / "work",
        short_request=lambda key: make(key, n_epochs),
        long_request=lambda key: make(key, 20),
        timeout_s=10.0,
        instant_jobs=instant_jobs,
    )


@pytest.mark.usefixtures("flawed_site")
@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("no-epoch-ends", r"epoch ends \[\], expected 1 to 3 once each"),
        ("epoch-numbers-as-steps", r"the last epoch ends at step 3, but the job's last step is 9"),
        ("ends-at-the-end", r"epoch ends at steps \[9, 9, 9\]: not increasing"),
        ("ends-lost-on-reattach", r"polling with None did not report every epoch end again"),
        ("cost-only-with-a-cursor", r"the terminal updates of one job report costs"),
        ("no-cost", r"a priced backend's finished job has no cost"),
        ("cost-only-estimated", r"finished job reports no cost of its own"),
    ],
)
def test_a_backend_that_breaks_a_rule_fails_the_suite(
    tmp_path: Path, request: pytest.FixtureRequest, name: str, message: str
) -> None:
    case = _case(tmp_path, name, n_epochs=3)
    with pytest.raises(AssertionError, match=message):
        suite.test_submit_and_poll_to_completion(case, request)


@pytest.mark.usefixtures("flawed_site")
def test_the_instant_backend_passes_where_the_flawed_ones_fail(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """The same test and case, on the backend the flawed ones change: it passes."""
    suite.test_submit_and_poll_to_completion(_case(tmp_path, "instant", n_epochs=3), request)


@pytest.mark.usefixtures("flawed_site")
def test_jobs_that_end_at_submit_fail_the_cancel_test_unless_declared(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    undeclared = _case(tmp_path, "instant", finish_at_submit=True, instant_jobs=False)
    assert not undeclared.instant_jobs
    with pytest.raises(AssertionError, match=r"declare BackendCase\(instant_jobs=True\)"):
        suite.test_cancel_stops_the_job_and_keeps_its_metrics(undeclared, request)
    declared = _case(tmp_path, "instant", finish_at_submit=True)
    assert declared.instant_jobs
    suite.test_cancel_stops_the_job_and_keeps_its_metrics(declared, request)


@pytest.mark.usefixtures("flawed_site")
def test_declaring_instant_jobs_for_jobs_that_run_fails(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    wrong = _case(tmp_path, "instant", instant_jobs=True)
    assert wrong.instant_jobs
    with pytest.raises(AssertionError, match="the case declares instant_jobs, but"):
        suite.test_cancel_stops_the_job_and_keeps_its_metrics(wrong, request)

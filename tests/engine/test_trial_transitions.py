"""A trial in flight changes phase only through its own methods, as ``TRANSITIONS`` allows
(orchestrator/engine/trial.py), and the loop's modules never assign a trial's fields."""

from __future__ import annotations

import ast
from collections.abc import Callable
from pathlib import Path

import optuna
import pytest

from orchestrator.backends.base import (
    Hyperparameters,
    JobHandle,
    JobStatus,
    JobUpdate,
    TrainingRequest,
)
from orchestrator.core.attrs import TrialAttrs
from orchestrator.engine.trial import (
    TRANSITIONS,
    WHILE_THE_JOB_EXISTS,
    IllegalTransition,
    Phase,
    TrialRun,
)

ENGINE = Path(__file__).resolve().parents[2] / "orchestrator" / "engine"
HANDLE = JobHandle("instant", "job-7", "key-7")

#: each event of the table, as the loop triggers it
EVENTS: dict[str, Callable[[TrialRun], None]] = {
    "submit": lambda run: run.submitted(HANDLE, 10.0, 0.5),
    "requeue": lambda run: run.requeue(20.0),
    "start_running": lambda run: run.start_running(),
    "finish": lambda run: run.finish(),
}
#: how a fresh trial reaches each phase, legally
REACH: dict[Phase, tuple[str, ...]] = {
    Phase.PENDING: (),
    Phase.SUBMITTED: ("submit",),
    Phase.RUNNING: ("submit", "start_running"),
    Phase.FINISHED: ("finish",),
}


@pytest.fixture
def study(tmp_path: Path) -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study(study_name="s", storage=f"sqlite:///{tmp_path / 'o.db'}")


def _run(study: optuna.Study, phase: Phase = Phase.PENDING) -> TrialRun:
    trial = study.ask()
    hp = Hyperparameters(n_epochs=2, batch_size=4, learning_rate_multiplier=1.0)
    request = TrainingRequest(key=f"key-{trial.number}", model="tiny", hyperparameters=hp,
                              train_file=Path("train.jsonl"))  # fmt: skip
    run = TrialRun(trial, request, wall=lambda: 1_800_000_000.0)
    for event in REACH[phase]:
        EVENTS[event](run)
    assert run.phase is phase
    return run


def test_the_table_names_every_event_and_reaches_every_phase() -> None:
    assert set(EVENTS) == set(TRANSITIONS)
    reached = {Phase.PENDING} | {
        after for moves in TRANSITIONS.values() for after in moves.values()
    }
    assert reached == set(Phase)
    assert not any(Phase.FINISHED in moves for moves in TRANSITIONS.values())  # terminal


@pytest.mark.parametrize("event", sorted(TRANSITIONS))
@pytest.mark.parametrize("phase", list(Phase))
def test_each_legal_transition_works_and_each_illegal_one_is_refused(
    study: optuna.Study, event: str, phase: Phase
) -> None:
    run = _run(study, phase)
    allowed = TRANSITIONS[event]
    if phase in allowed:
        EVENTS[event](run)
        assert run.phase is allowed[phase]
        return
    with pytest.raises(IllegalTransition) as refused:
        EVENTS[event](run)
    assert run.phase is phase  # unchanged
    message = str(refused.value)
    assert f"trial {run.number}" in message and repr(event) in message
    assert f"while {phase}" in message
    assert (refused.value.number, refused.value.phase, refused.value.event) == (
        run.number,
        phase,
        event,
    )


def test_the_phase_cannot_be_assigned(study: optuna.Study) -> None:
    run = _run(study)
    with pytest.raises(AttributeError):
        run.phase = Phase.RUNNING  # type: ignore[misc]
    assert run.phase is Phase.PENDING


def test_a_submit_records_the_job_and_is_polled_at_once(study: optuna.Study) -> None:
    run = _run(study)
    run.submitted(HANDLE, 10.0, 0.5)
    assert (run.handle, run.started_at, run.interval, run.due) == (HANDLE, 10.0, 0.5, 10.0)
    assert run.staged == {TrialAttrs.JOB_ID: "job-7"}  # goes with the next write


def test_the_first_running_poll_moves_a_submitted_trial_to_running(study: optuna.Study) -> None:
    run = _run(study, Phase.SUBMITTED)
    run.polled(JobUpdate(JobStatus.QUEUED, cursor="c1"))
    assert run.phase is Phase.SUBMITTED and run.cursor == "c1"
    run.polled(JobUpdate(JobStatus.RUNNING, cursor="c2"))
    assert run.phase is Phase.RUNNING and run.cursor == "c2"
    run.polled(JobUpdate(JobStatus.RUNNING, cursor="c3"))  # running already: stays
    assert run.phase is Phase.RUNNING


def test_a_failed_poll_backs_off_and_a_good_one_resets_the_count(study: optuna.Study) -> None:
    run = _run(study, Phase.RUNNING)
    assert run.poll_failed(100.0, 1.0, 30.0) == 1
    assert (run.interval, run.due) == (2.0, 102.0)
    assert run.poll_failed(102.0, 1.0, 30.0) == 2
    assert run.poll_failed(106.0, 1.0, 30.0) == 3
    assert run.interval == 8.0
    for _ in range(5):
        run.poll_failed(0.0, 1.0, 30.0)
    assert run.interval == 30.0  # capped
    run.polled(JobUpdate(JobStatus.RUNNING))
    assert run.poll_failures == 0


def test_a_cancel_to_retry_makes_the_trial_due_by_then(study: optuna.Study) -> None:
    run = _run(study, Phase.RUNNING)
    run.record_prune(1)
    assert run.cancel_pending and run.pruned_at == 1
    assert run.cancel_failed() == 1
    run.retry_cancel(12.0)
    run.next_poll(20.0, False, 1.0, 30.0)
    assert run.due == 12.0  # not the back-off's 20.75
    run.cancel_settled()
    run.next_poll(20.0, False, 1.0, 30.0)
    assert not run.cancel_pending and run.due > 20.0


@pytest.mark.parametrize("phase", [Phase.PENDING, Phase.FINISHED])
def test_polls_prunes_and_cancels_need_a_job(study: optuna.Study, phase: Phase) -> None:
    assert phase not in WHILE_THE_JOB_EXISTS
    run = _run(study, phase)
    for act in (
        lambda: run.polled(JobUpdate(JobStatus.RUNNING)),
        lambda: run.poll_failed(0.0, 1.0, 2.0),
        lambda: run.next_poll(0.0, True, 1.0, 2.0),
        lambda: run.epoch_ended(1),
        lambda: run.report(0.5, 1),
        lambda: run.record_prune(1),
        lambda: run.cancel_failed(),
        lambda: run.retry_cancel(1.0),
        lambda: run.cancel_settled(),
    ):
        with pytest.raises(IllegalTransition, match=f"trial {run.number}: .* while {phase}"):
            act()


def test_a_finished_trial_records_no_second_outcome(study: optuna.Study) -> None:
    run = _run(study, Phase.RUNNING)
    run.record_outcome({TrialAttrs.DIAGNOSIS: "ok"})
    run.finish()
    with pytest.raises(IllegalTransition, match="record the outcome"):
        run.record_outcome({TrialAttrs.DIAGNOSIS: "again"})
    assert study.trials[0].user_attrs[TrialAttrs.DIAGNOSIS] == "ok"


def test_a_reported_epoch_is_remembered_once(study: optuna.Study) -> None:
    run = _run(study, Phase.RUNNING)
    run.report(0.5, 1)
    run.report(0.7, 1)  # the study has epoch 1 already
    assert run.reported == {1} and run.staged_values == {1: 0.5}
    run.flush()
    assert study.trials[0].intermediate_values == {1: 0.5}


def test_a_reattached_trial_takes_its_ledger_back(study: optuna.Study) -> None:
    first = _run(study, Phase.RUNNING)
    first.set_attrs(
        TrialRun.intent(first.request, "instant", "host:1", 5.0, None, None)
        | {TrialAttrs.PRUNED_AT: 2}
    )
    first.report(0.5, 1)
    first.flush()
    frozen = study.trials[0]
    again = TrialRun.reattached(first.trial, frozen, lambda: 6.0, 42.0)
    assert again.phase is Phase.PENDING and again.request == first.request
    assert (again.pruned_at, again.cancel_pending, again.reported) == (2, True, {1})
    assert again.last_beat == 42.0


# -- the loop's modules never assign a trial's fields ----------------------------------------


def _assignments_to_runs(source: str) -> list[str]:
    """``run.x = ...``, ``run.x += ...``, ``run.a, run.b = ...`` and ``run.x.add(...)``-like
    mutations of a trial in flight (named ``run`` or ``r``), as ``line: text``."""
    found: list[tuple[int, str]] = []
    mutators = {"add", "update", "pop", "clear", "append", "discard", "setdefault"}

    def is_run(node: ast.AST) -> bool:
        while isinstance(node, ast.Attribute | ast.Subscript):
            node = node.value
            if isinstance(node, ast.Name):
                return node.id in ("run", "r")
        return False

    for node in ast.walk(ast.parse(source)):
        targets: list[ast.AST] = []
        if isinstance(node, ast.Assign):
            targets = list(node.targets)
        elif isinstance(node, ast.AugAssign | ast.AnnAssign):
            targets = [node.target]
        elif isinstance(node, ast.Delete):
            targets = list(node.targets)
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in mutators
            and isinstance(node.func.value, ast.Attribute)
        ):
            targets = [node.func.value]
        flat: list[ast.AST] = []
        for t in targets:
            flat += list(t.elts) if isinstance(t, ast.Tuple | ast.List) else [t]
        if any(is_run(t) for t in flat):
            found.append((node.lineno, f"{node.lineno}: {ast.unparse(node)}"))
    return [text for _, text in sorted(found)]


def test_the_checker_finds_each_kind_of_assignment() -> None:
    source = (
        "run.phase = 1\nrun.due += 2\nrun.a, run.due = 1, 2\nrun.reported.add(3)\n"
        "r.attrs['k'] = 1\nrun.staged.update({})\nself.runs[1] = run\nw.last_beat = 1\n"
    )
    assert [line.split(":")[0] for line in _assignments_to_runs(source)] == [
        "1",
        "2",
        "3",
        "4",
        "5",
        "6",
    ]


@pytest.mark.parametrize(
    "module", sorted(p.name for p in ENGINE.glob("*.py") if p.name != "trial.py")
)
def test_the_engine_changes_a_trial_only_through_its_methods(module: str) -> None:
    found = _assignments_to_runs((ENGINE / module).read_text(encoding="utf-8"))
    assert not found, f"orchestrator/engine/{module} assigns a trial's fields:\n" + "\n".join(found)

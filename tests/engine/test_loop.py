"""The engine through its clock seam: an instant third-party backend, real Optuna and MLflow
stores, no real sleeps."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from mlflow import MlflowClient

from orchestrator.core.errors import SweepInterrupted
from orchestrator.engine.events import Event, Listener, Note
from orchestrator.testing import instant as fakes
from orchestrator.workflows.sweep import Overrides, SweepResult, run_sweep
from tests.helpers import chat_rows, write_jsonl
from tests.reliability.stores import seed_mlflow


class Recorder(Listener):
    name = "recorder"

    def __init__(self) -> None:
        self.events: list[Event] = []

    def handle(self, event: Event) -> None:
        self.events.append(event)

    def notes(self) -> list[str]:
        return [e.text for e in self.events if isinstance(e, Note)]


@pytest.fixture
def instant(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Stores in tmp, the instant backend installed, a fresh provider world."""
    fakes.install(tmp_path / "site")
    monkeypatch.setenv("FTSWEEP_RUNS_DIR", str(tmp_path / "mlruns"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("FTSWEEP_OPTUNA_STORAGE", raising=False)
    fakes.WORLD.__init__()  # type: ignore[misc]
    seed_mlflow(tmp_path / "mlruns")
    yield tmp_path / "mlruns"


def _spec(
    tmp_path: Path, name: str = "inst", options: dict[str, Any] | None = None, **fields: Any
) -> Path:
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    train = write_jsonl(data / "train.jsonl", chat_rows(40))
    valid = write_jsonl(data / "valid.jsonl", chat_rows(8, start=100))
    spec: dict[str, Any] = {
        "name": name,
        "data": {"train": str(train), "valid": str(valid)},
        "backend": {"name": "instant", "model": "instant-small", "options": options or {}},
        "space": {
            "n_epochs": {"low": 2, "high": 4},
            "batch_size": {"low": 1, "high": 4},
            "learning_rate_multiplier": {"low": 0.02, "high": 2.0, "log": True},
        },
        "trials": 4,
        "parallel": 2,
        "sampler": {"name": "random", "seed": 1},
    }
    spec.update(fields)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def _run(
    spec: Path, clock: fakes.FakeClock | None = None, **kw: Any
) -> tuple[SweepResult, Recorder]:
    clock = clock or fakes.FakeClock()
    rec = Recorder()
    overrides = kw.pop("overrides", Overrides())
    result = run_sweep(
        spec,
        overrides,
        listeners=[rec],
        clock=clock.clock,
        sleep=clock.sleep,
        wall=clock.wall,
        **kw,
    )
    return result, rec


def _states(result: SweepResult) -> list[str]:
    return [t.state.name for t in result.study.trials]


def test_a_sweep_completes_and_mlflow_agrees(instant: Path, tmp_path: Path) -> None:
    result, _rec = _run(_spec(tmp_path))
    assert _states(result) == ["COMPLETE"] * 4
    client = MlflowClient(tracking_uri=f"sqlite:///{instant / 'mlflow.db'}")
    exp = client.get_experiment_by_name("inst")
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    runs = client.search_runs([exp.experiment_id])
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(runs) == 5 and len(children) == 4
    for child in children:
        trial = result.study.trials[int(child.data.tags["ftsweep.trial"])]
        assert child.info.status == "FINISHED"
        assert child.data.tags["ftsweep.state"] == "COMPLETE"
        assert child.data.metrics["objective"] == pytest.approx(trial.value)
        assert child.info.run_name.startswith(f"t{trial.number:03d} ep=")
        steps = [m.step for m in client.get_metric_history(child.info.run_id, "train_loss")]
        assert steps == sorted(set(steps))
    # one intermediate value per epoch, the epoch's objective
    for t in result.study.trials:
        assert sorted(t.intermediate_values) == list(range(1, t.params["n_epochs"] + 1))
        assert t.user_attrs["ftsweep.epochs_done"] == t.params["n_epochs"]


def test_a_repeated_configuration_is_trained_once(instant: Path, tmp_path: Path) -> None:
    space = {"n_epochs": [2, 3], "batch_size": 2, "learning_rate_multiplier": 0.1}
    result, _rec = _run(_spec(tmp_path, space=space, trials=6, parallel=1))
    assert _states(result) == ["COMPLETE"] * 6
    assert len(fakes.WORLD.created) == 2  # two distinct configurations
    reused = [t for t in result.study.trials if "ftsweep.reused_from" in t.user_attrs]
    assert len(reused) == 4
    for t in reused:
        twin = result.study.trials[t.user_attrs["ftsweep.reused_from"]]
        assert t.value == twin.value and t.params == twin.params


def test_target_stops_the_sweep(instant: Path, tmp_path: Path) -> None:
    result, _ = _run(_spec(tmp_path, trials=20, parallel=1, target=100.0))
    assert result.stop_reason is not None and result.stop_reason.startswith("target 100")
    assert len(result.study.trials) == 1


def test_timeout_stops_launching(instant: Path, tmp_path: Path) -> None:
    clock = fakes.FakeClock()
    result, _ = _run(_spec(tmp_path, trials=50, parallel=1, timeout_s=10), clock)
    assert result.stop_reason == "timeout of 10 s reached"
    assert 1 <= len(result.study.trials) < 50
    assert all(s == "COMPLETE" for s in _states(result))  # what started, finished


def test_enqueued_configurations_run_first(instant: Path, tmp_path: Path) -> None:
    baseline = {"n_epochs": 3, "batch_size": 2, "learning_rate_multiplier": 0.1}
    result, _ = _run(_spec(tmp_path, enqueue=[baseline], trials=2, parallel=1))
    assert result.study.trials[0].params == baseline
    assert _states(result) == ["COMPLETE"] * 2


def test_grid_sampler_covers_the_grid(instant: Path, tmp_path: Path) -> None:
    space = {"n_epochs": [2, 3], "batch_size": [1, 2], "learning_rate_multiplier": 0.1}
    result, _ = _run(_spec(tmp_path, space=space, trials=4, sampler={"name": "grid"}))
    seen = {(t.params["n_epochs"], t.params["batch_size"]) for t in result.study.trials}
    assert seen == {(2, 1), (2, 2), (3, 1), (3, 2)}


def test_hyperband_prunes_and_cancels(instant: Path, tmp_path: Path) -> None:
    space = {
        "n_epochs": 6,
        "batch_size": 2,
        "learning_rate_multiplier": {"low": 0.001, "high": 10.0, "log": True},
    }
    spec = _spec(
        tmp_path,
        space=space,
        trials=8,
        parallel=1,
        pruner={"name": "hyperband"},
        sampler={"name": "random", "seed": 4},
    )
    result, _rec = _run(spec)
    states = _states(result)
    assert "PRUNED" in states and "COMPLETE" in states
    for t in result.study.trials:
        if t.state.name == "PRUNED":
            assert t.user_attrs["ftsweep.pruned_at"] == max(t.intermediate_values)
            assert t.user_attrs["ftsweep.job_status"] == "cancelled"
            assert t.user_attrs["ftsweep.diagnosis"] != "underfit"
    # in the runs table, where KILLED and FAILED look alike, the name says pruned
    client = MlflowClient(tracking_uri=f"sqlite:///{instant / 'mlflow.db'}")
    exp = client.get_experiment_by_name("inst")
    for run in client.search_runs([exp.experiment_id]):
        trial = run.data.tags.get("ftsweep.trial")
        if trial is None:
            continue
        t = result.study.trials[int(trial)]
        pruned = f" pruned@ep{t.user_attrs.get('ftsweep.pruned_at')}"
        assert run.info.run_name.endswith(pruned) == (t.state.name == "PRUNED")
        assert run.info.status == ("KILLED" if t.state.name == "PRUNED" else "FINISHED")


def test_a_busy_provider_requeues_the_trial(instant: Path, tmp_path: Path) -> None:
    result, rec = _run(_spec(tmp_path, options={"busy_submits": 2}, trials=2, parallel=1))
    assert _states(result) == ["COMPLETE"] * 2
    assert len(fakes.WORLD.created) == 2
    assert any("is busy" in n and "submitting again in 30 s" in n for n in rec.notes())


def test_a_failing_cancel_is_retried(instant: Path, tmp_path: Path) -> None:
    spec = _spec(
        tmp_path,
        options={"failing_cancels": 2},
        space={"n_epochs": 20, "batch_size": 2, "learning_rate_multiplier": 5.0},
        trials=1,
        parallel=1,
        pruner={"name": "threshold", "options": {"upper": 1.0}},
    )
    result, rec = _run(spec)
    assert _states(result) == ["PRUNED"]
    assert fakes.WORLD.cancels == 3
    assert sum("cancel of job inst-0 failed" in n for n in rec.notes()) == 2


def test_one_trials_error_stays_in_that_trial(instant: Path, tmp_path: Path) -> None:
    result, _rec = _run(_spec(tmp_path, options={"poll_error_trial": 1}, parallel=1))
    states = _states(result)
    assert states[1] == "FAIL" and states.count("COMPLETE") == 3
    error = result.study.trials[1].user_attrs["ftsweep.error"]
    assert error == "internal error: ValueError: the provider's answer could not be parsed"
    assert fakes.WORLD.jobs["inst-1"].cancelled  # its job was not left running


def test_a_failing_listener_does_not_end_the_sweep(instant: Path, tmp_path: Path) -> None:
    class Broken(Listener):
        name = "broken"

        def points(self, event: Event) -> None:
            raise RuntimeError("disk full")

    rec = Recorder()
    clock = fakes.FakeClock()
    result = run_sweep(
        _spec(tmp_path, trials=2),
        listeners=[Broken(), rec],
        clock=clock.clock,
        sleep=clock.sleep,
        wall=clock.wall,
    )
    assert _states(result) == ["COMPLETE"] * 2
    assert any(n == "broken: disk full" for n in rec.notes())


def _orphan(tmp_path: Path, instant: Path, clock: fakes.FakeClock, heartbeat_age: float) -> Path:
    """Trial 0 RUNNING with its job submitted, owned by a worker on another host whose last
    heartbeat is ``heartbeat_age`` seconds old."""
    spec = _spec(tmp_path, options={"interrupt_on_poll": 1}, trials=1, parallel=1)
    with pytest.raises(SweepInterrupted):
        _run(spec, clock)
    study = optuna.load_study(study_name="inst", storage=f"sqlite:///{instant / 'optuna.db'}")
    trial_id = study.trials[0]._trial_id
    study._storage.set_trial_user_attr(trial_id, "ftsweep.worker", "otherhost:4242")
    study._storage.set_trial_user_attr(trial_id, "ftsweep.heartbeat", clock.wall() - heartbeat_age)
    return _spec(tmp_path, trials=1, parallel=1)


def test_a_stale_trial_of_another_host_is_adopted(instant: Path, tmp_path: Path) -> None:
    clock = fakes.FakeClock()
    spec = _orphan(tmp_path, instant, clock, heartbeat_age=500)
    result, rec = _run(spec, clock)
    assert _states(result) == ["COMPLETE"]
    assert "re-attached to job inst-0" in rec.notes()
    assert fakes.WORLD.created == ["inst-0"]  # found by its key, not run again
    trial = result.study.trials[0]
    assert trial.user_attrs["ftsweep.worker"] != "otherhost:4242"
    client = MlflowClient(tracking_uri=f"sqlite:///{instant / 'mlflow.db'}")
    run = client.get_run(trial.user_attrs["ftsweep.mlflow_run_id"])
    assert run.info.status == "FINISHED"
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "train_loss")]
    assert steps == sorted(set(steps))  # nothing logged twice across the two workers


def test_a_fresh_heartbeat_of_another_host_is_left_alone(instant: Path, tmp_path: Path) -> None:
    clock = fakes.FakeClock()
    spec = _orphan(tmp_path, instant, clock, heartbeat_age=5)
    result, _ = _run(spec, clock)
    assert _states(result) == ["RUNNING"]  # still the other worker's


def test_cli_exit_1_when_no_trial_completes(cli, instant: Path, tmp_path: Path) -> None:
    spec = _spec(tmp_path, options={"fail_trial": 0}, trials=1, parallel=1)
    r = cli("run", spec)
    assert r.code == 1
    assert r.err.strip().splitlines()[-1].startswith("error: no trial completed")


def test_cli_ctrl_c_says_which_jobs_still_run(cli, instant: Path, tmp_path: Path) -> None:
    spec = _spec(tmp_path, options={"interrupt_on_poll": 2}, trials=2, parallel=2)
    r = cli("run", spec)
    assert r.code == 130
    last = r.err.strip().splitlines()[-1]
    assert last.startswith(
        "error: interrupted with 2 job(s) still running at instant (trial 0: job inst-0"
    )
    assert f"`ftsweep run {spec}` re-attaches to them" in last


def test_the_backends_own_costs_bind_the_budget(instant: Path, tmp_path: Path) -> None:
    """A backend that prices its own jobs (no trained tokens, no price table) is charged."""
    space = {"n_epochs": 2, "batch_size": 2, "learning_rate_multiplier": {"low": 0.05, "high": 0.5}}
    spec = _spec(tmp_path, options={"price_per_epoch": 1.0}, space=space, trials=6, parallel=1)
    result, _rec = _run(spec, overrides=Overrides(budget_usd=5.0))
    costs = [t.user_attrs.get("ftsweep.cost_usd") for t in result.study.trials]
    assert costs[:2] == [2.0, 2.0] and len(fakes.WORLD.created) == 2
    assert sum(c or 0 for c in costs) <= 5.0
    assert result.stop_reason is not None and "over the $5.00 budget" in result.stop_reason


def test_a_transient_mlflow_error_makes_no_second_run(instant: Path, tmp_path: Path) -> None:
    """create_run goes through but its answer is lost once: the retry finds that run."""
    from mlflow.exceptions import MlflowException

    from orchestrator.tracking import Tracker

    class LostAnswer(MlflowClient):
        lost = 0

        def create_run(self, *args: Any, **kwargs: Any) -> Any:
            run = super().create_run(*args, **kwargs)
            if LostAnswer.lost < 2:  # the parent's creation and the first child's
                LostAnswer.lost += 1
                raise MlflowException("connection reset", error_code="TEMPORARILY_UNAVAILABLE")
            return run

    uri = f"sqlite:///{instant / 'mlflow.db'}"
    instant.mkdir(parents=True, exist_ok=True)
    tracker = Tracker(
        uri,
        "inst",
        instant / "artifacts",
        client=LostAnswer(tracking_uri=uri),
        sleep=lambda s: None,
    )
    result, _ = _run(_spec(tmp_path, trials=2), tracker=tracker)
    assert _states(result) == ["COMPLETE"] * 2 and LostAnswer.lost == 2
    runs = MlflowClient(tracking_uri=uri).search_runs([result.experiment_id])
    assert len(runs) == 3
    assert sorted(r.data.tags.get("ftsweep.trial", "parent") for r in runs) == ["0", "1", "parent"]


def test_cli_a_prune_that_could_not_cancel_says_the_job_finished(
    cli, instant: Path, tmp_path: Path
) -> None:
    spec = _spec(
        tmp_path,
        options={"failing_cancels": 100},
        space={"n_epochs": 3, "batch_size": 2, "learning_rate_multiplier": 0.1},
        trials=1,
        parallel=1,
        pruner={"name": "threshold", "options": {"upper": 1.0}},
    )
    r = cli("run", spec)
    assert r.code == 0, r.err
    assert "trial 0 pruned at epoch 1: cancelling job inst-0" in r.err
    assert (
        "trial 0 COMPLETE, objective 1.3353 (pruned at epoch 1, but its job had already "
        "finished; nothing was cancelled)" in r.err
    )
    assert "job cancelled" not in r.err


def test_cli_ctrl_c_before_the_sweep_starts(
    cli, instant: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C while the data is checked (Typer would exit 130 without a word)."""

    def interrupted(*args: Any, **kwargs: Any) -> Any:
        raise KeyboardInterrupt

    monkeypatch.setattr("orchestrator.engine.plan_spec", interrupted)  # the user's keyboard
    r = cli("run", _spec(tmp_path))
    assert r.code == 130
    assert r.err == "error: interrupted\n"


def test_a_backend_bug_while_concluding_stays_in_that_trial(instant: Path, tmp_path: Path) -> None:
    result, rec = _run(_spec(tmp_path, options={"cost_error": True}, trials=2, parallel=1))
    assert _states(result) == ["COMPLETE"] * 2  # the cost is unknown, the result is not
    assert sum(n == "cost unknown (internal error: KeyError: 'usd')" for n in rec.notes()) == 2


def test_provider_failures_do_not_count_and_are_tried_again(instant: Path, tmp_path: Path) -> None:
    space = {"n_epochs": 2, "batch_size": [1, 2, 3, 4], "learning_rate_multiplier": 0.1}
    spec = _spec(tmp_path, options={"failing_submits": 1}, space=space, trials=2, parallel=1)
    result, _ = _run(spec)
    states = _states(result)
    assert states == ["FAIL", "COMPLETE", "COMPLETE"]  # the failure did not count
    failed = result.study.trials[0]
    assert failed.user_attrs["ftsweep.environment_failure"] is True
    # the next run tries the failed configuration again, first, since the limit leaves room
    result, _ = _run(spec, overrides=Overrides(trials=3))
    retry = result.study.trials[3]
    assert retry.user_attrs["ftsweep.retry_of"] == 0 and retry.params == failed.params
    assert retry.state.name == "COMPLETE"


def test_a_provider_that_keeps_failing_stops_the_sweep(instant: Path, tmp_path: Path) -> None:
    result, _ = _run(_spec(tmp_path, options={"failing_submits": 100}, trials=5, parallel=1))
    assert _states(result) == ["FAIL"] * 3
    assert result.stop_reason is not None
    assert result.stop_reason.startswith("3 trials in a row failed for reasons of instant")


def test_a_trial_asked_by_a_worker_that_died_before_claiming_it_is_ended_at_once(
    instant: Path, tmp_path: Path
) -> None:
    """A worker killed between its ask and its claim (one step under the launch lock) leaves
    a young RUNNING trial with no owner and no parameters: the next run ends it as not
    started (not counted) instead of waiting until it is stale, and runs its own trials."""
    spec = _spec(tmp_path, trials=2, parallel=1)
    _run(spec)
    study = optuna.load_study(study_name="inst", storage=f"sqlite:///{instant / 'optuna.db'}")
    study.ask()  # what the dead worker's ask left: RUNNING, unclaimed, seconds old
    result, _ = _run(_spec(tmp_path, trials=3, parallel=1))
    states = _states(result)
    assert "RUNNING" not in states
    assert states.count("COMPLETE") == 3
    orphan = result.study.trials[2]
    assert orphan.state.name == "FAIL"
    assert orphan.user_attrs["ftsweep.not_started"] is True
    assert orphan.user_attrs["ftsweep.error"] == "interrupted before it started"

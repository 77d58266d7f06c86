"""Epochs as a free fidelity: a job's earlier epochs told as derived trials (engine/fidelity.py),
through the real loop, real Optuna and MLflow stores and the instant third-party backend."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mlflow import MlflowClient

from orchestrator.backends.base import Checkpoint, Hyperparameters
from orchestrator.core.attrs import TrialAttrs
from orchestrator.engine import Overrides
from orchestrator.engine.fidelity import derive, epoch_end_steps
from orchestrator.testing import instant as fakes
from tests.engine.test_loop import _run, _spec, instant  # noqa: F401  (the fixture)
from tests.engine.test_remote_sweeps import remote_runs, sim  # noqa: F401  (fixtures)

DERIVED = TrialAttrs.DERIVED_FROM


def _epochs() -> dict[str, object]:
    return {"name": "random", "seed": 1, "epochs_as_trials": True}


def test_earlier_epochs_become_trials_not_trained_not_counted_not_charged(
    instant: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    spec = _spec(tmp_path, options={"price_per_epoch": 1.0}, trials=4, sampler=_epochs())
    result, rec = _run(spec)
    trials = result.study.trials
    trained = [t for t in trials if DERIVED not in t.user_attrs]
    derived = [t for t in trials if DERIVED in t.user_attrs]
    assert len(trained) == 4 and len(fakes.WORLD.created) == 4  # `trials` counts jobs only
    expected = sum(t.params["n_epochs"] - 2 for t in trained)  # the space starts at 2 epochs
    assert len(derived) == expected > 0
    for t in derived:
        parent = trials[t.user_attrs[DERIVED]]
        k = t.params["n_epochs"]
        assert t.state.name == "COMPLETE" and 2 <= k < parent.params["n_epochs"]
        assert {n: v for n, v in t.params.items() if n != "n_epochs"} == {
            n: v for n, v in parent.params.items() if n != "n_epochs"
        }
        # the parent's objective (full_valid_loss) at the end of epoch k, as the pruner saw it
        hp = Hyperparameters.from_dict(t.params)
        assert t.value == pytest.approx(fakes.loss(hp, k))
        assert t.value == parent.intermediate_values[k]
        assert t.user_attrs[TrialAttrs.DERIVED_JOB] == parent.user_attrs[TrialAttrs.JOB_ID]
        assert TrialAttrs.COST not in t.user_attrs  # not charged
        assert t.user_attrs[TrialAttrs.MLFLOW_RUN] == parent.user_attrs[TrialAttrs.MLFLOW_RUN]
    # spent: the jobs' own costs only
    assert sum(t.user_attrs.get(TrialAttrs.COST, 0) for t in trials) == sum(
        t.params["n_epochs"] for t in trained
    )
    assert any("(derived, not trained)" in n for n in rec.notes())
    # MLflow: one run per trained trial, none left RUNNING; derived ones live on their parent
    client = MlflowClient(tracking_uri=f"sqlite:///{instant / 'mlflow.db'}")
    exp = client.get_experiment_by_name("inst")
    runs = client.search_runs([exp.experiment_id])
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(children) == 4 and all(r.info.status == "FINISHED" for r in runs)
    assert {r.data.tags["ftsweep.trial"] for r in children} == {str(t.number) for t in trained}


def test_a_derived_configuration_is_never_trained(
    instant: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    long = {"n_epochs": 4, "batch_size": 2, "learning_rate_multiplier": 0.1}
    short = {**long, "n_epochs": 3}
    spec = _spec(tmp_path, enqueue=[long, short], trials=2, parallel=1, sampler=_epochs())
    result, _ = _run(spec)
    trials = result.study.trials
    assert len(fakes.WORLD.created) == 1  # the 3-epoch configuration came from the 4-epoch job
    asked = [t for t in trials if DERIVED not in t.user_attrs]
    assert [t.params for t in asked] == [long, short]
    twin = trials[asked[1].user_attrs[TrialAttrs.REUSED_FROM]]
    assert twin.user_attrs[DERIVED] == asked[0].number and twin.params == short
    assert asked[1].value == twin.value == asked[0].intermediate_values[3]


def test_a_named_sampler_derives_nothing_unless_asked(
    instant: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    result, _ = _run(_spec(tmp_path, trials=3))
    assert len(result.study.trials) == 3
    assert not any(DERIVED in t.user_attrs for t in result.study.trials)


def test_a_resumed_sweep_derives_nothing_twice(
    instant: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    spec = _spec(tmp_path, trials=3, sampler=_epochs())
    first, _ = _run(spec)
    before = len(first.study.trials)
    again, _ = _run(spec, overrides=Overrides(trials=4))
    trials = again.study.trials
    assert len([t for t in trials if DERIVED not in t.user_attrs]) == 4
    hashes = [t.user_attrs[TrialAttrs.CONFIG_HASH] for t in trials if DERIVED in t.user_attrs]
    assert len(hashes) == len(set(hashes)) and len(trials) >= before + 1


# -- what an epoch end gives, on its own --------------------------------------------------
CURVES = {
    "epoch": [(5, 1.0), (10, 2.0), (15, 3.0), (20, 4.0)],
    "full_valid_loss": [(5, 0.9), (10, 0.7), (20, 0.8)],  # none at the end of epoch 3
    "valid_loss": [(5, 0.95), (10, 0.75), (15, 0.7), (20, 0.85)],
}


def test_only_epochs_with_the_objectives_own_metric_at_their_end_are_derived() -> None:
    found = derive(CURVES, (), "full_valid_loss", 4, {1, 2, 3, 4})
    # epoch 3 has no full_valid_loss: its valid_loss would not be comparable, so nothing
    assert [(d.epoch, d.step, d.metric, d.value) for d in found] == [
        (1, 5, "full_valid_loss", 0.9),
        (2, 10, "full_valid_loss", 0.7),
    ]
    assert [d.epoch for d in derive(CURVES, (), "full_valid_loss", 4, {2, 3, 4})] == [2]


def test_a_backend_without_full_validation_derives_from_its_stand_in() -> None:
    curves = {k: v for k, v in CURVES.items() if k != "full_valid_loss"}
    found = derive(curves, (), "full_valid_loss", 4, {1, 2, 3, 4})
    assert [(d.epoch, d.metric) for d in found] == [
        (1, "valid_loss"),
        (2, "valid_loss"),
        (3, "valid_loss"),
    ]


def test_no_epoch_ends_no_derived_trials() -> None:
    curves = {"valid_loss": CURVES["valid_loss"]}
    assert epoch_end_steps(curves) == {}
    assert derive(curves, (), "valid_loss", 4, {1, 2, 3}) == []


def test_checkpoints_give_the_epoch_ends_and_the_models() -> None:
    curves = {"full_valid_loss": [(10, 0.7), (15, 0.6), (20, 0.65)]}
    ckpts = (
        Checkpoint(10, 2, {"full_valid_loss": 0.7}, "ft:m:ckpt-step-10"),
        Checkpoint(15, 3, {"full_valid_loss": 0.6}, "ft:m:ckpt-step-15"),
    )
    found = derive(curves, ckpts, "full_valid_loss", 4, {2, 3, 4})
    assert [(d.epoch, d.value, d.model) for d in found] == [
        (2, 0.7, "ft:m:ckpt-step-10"),
        (3, 0.6, "ft:m:ckpt-step-15"),
    ]


# -- against apisim, through the real openai SDK: checkpoints are the derived models ------
def test_on_apisim_a_derived_trials_model_is_the_parents_checkpoint(
    cli,
    tmp_path: Path,
    sim,  # noqa: F811
    remote_runs: Path,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from tests.apisim.fixtures import request_log
    from tests.engine.test_remote_sweeps import _spec as remote_spec
    from tests.engine.test_remote_sweeps import _study

    server = sim()
    long = {"n_epochs": 4, "batch_size": 2, "learning_rate_multiplier": 0.1}
    spec = remote_spec(
        tmp_path,
        "openai",
        server,
        monkeypatch,
        trials=1,
        parallel=1,
        enqueue=[long],
        sampler={"name": "auto", "seed": 0},
    )
    r = cli("run", spec)
    assert r.code == 0, r.err
    trials = _study(remote_runs, "rehearsal-openai").trials
    assert len(request_log(server, "jobs.create")) == 1
    parent, derived = trials[0], trials[1:]
    assert parent.params == long and [t.params["n_epochs"] for t in derived] == [2, 3]
    checkpoints = parent.user_attrs[TrialAttrs.CHECKPOINTS]
    for t in derived:
        k = t.params["n_epochs"]
        assert t.user_attrs[DERIVED] == 0
        assert t.value == parent.intermediate_values[k]
        assert t.value == checkpoints[str(k)]["full_valid_loss"]
        assert t.user_attrs[TrialAttrs.FINE_TUNED_MODEL] == checkpoints[str(k)]["model"]
        assert t.user_attrs[TrialAttrs.DERIVED_MODEL].startswith("ft:")
    best = min(trials, key=lambda t: t.value)
    assert best.user_attrs[TrialAttrs.FINE_TUNED_MODEL]  # a model, checkpoint or final
    # the report and status read derived trials like any other
    report = cli("report", spec, "--format", "json")
    assert report.code == 0, report.err
    assert len(json.loads(report.out)) == len(trials)
    status = cli("status", spec)
    assert status.code == 0, status.err
    assert status.out.startswith("sweep rehearsal-openai: 1 complete, 2 derived (of 1)\n")

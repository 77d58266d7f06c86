"""``ftsweep status``, ``report`` and ``best`` only read: they plan nothing, create nothing,
and work on a finished sweep whose data files are gone."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import pytest

from orchestrator.backends.base import Hyperparameters, TrainingRequest
from orchestrator.core.attrs import TrialAttrs
from tests.conftest import Result
from tests.helpers import chat_rows, write_jsonl

NAME = "results-test"
COMMANDS = ["status", "report", "best"]

Cli = Callable[..., Result]


@pytest.fixture
def runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The stores folder (``FTSWEEP_RUNS_DIR``), not created."""
    folder = tmp_path / "runs"
    monkeypatch.setenv("FTSWEEP_RUNS_DIR", str(folder))
    monkeypatch.delenv("FTSWEEP_OPTUNA_STORAGE", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    return folder


def _spec(tmp_path: Path, extra: str = "") -> Path:
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    write_jsonl(data / "train.jsonl", chat_rows(20))
    write_jsonl(data / "valid.jsonl", chat_rows(5, start=50))
    spec = tmp_path / "sweep.yaml"
    spec.write_text(
        f"name: {NAME}\n"
        "data: {train: data/train.jsonl, valid: data/valid.jsonl}\n"
        "backend: {name: openai, model: gpt-4o-mini}\n"
        "objective: {metric: valid_loss}\n"
        "trials: 4\n" + extra
    )
    return spec


def _files(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` with the SHA-256 of its content."""
    if not folder.exists():
        return {}
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _not_started(store: str, spec: Path) -> str:
    return (
        f"error: sweep '{NAME}' has not run yet (no study in {store}): "
        f"start it with `ftsweep run {spec}`\n"
    )


@pytest.mark.parametrize("command", COMMANDS)
def test_a_sweep_that_never_ran_creates_nothing(
    cli: Cli, runs: Path, tmp_path: Path, command: str
) -> None:
    spec = _spec(tmp_path)
    r = cli(command, spec)
    assert (r.code, r.out) == (1, "")
    assert r.err == _not_started(f"sqlite:///{runs / 'optuna.db'}", spec)
    assert not runs.exists()
    runs.mkdir()
    r = cli(command, spec)
    assert r.code == 1 and r.err == _not_started(f"sqlite:///{runs / 'optuna.db'}", spec)
    assert _files(runs) == {}


@pytest.mark.parametrize("command", COMMANDS)
def test_a_store_without_this_study_is_left_as_it_was(
    cli: Cli, runs: Path, tmp_path: Path, command: str
) -> None:
    spec = _spec(tmp_path)
    runs.mkdir()
    url = f"sqlite:///{runs / 'optuna.db'}"
    optuna.create_study(study_name="another-sweep", storage=url)
    before = _files(runs)
    r = cli(command, spec)
    assert (r.code, r.out, r.err) == (1, "", _not_started(url, spec))
    assert _files(runs) == before


@pytest.mark.parametrize("command", COMMANDS)
def test_a_journal_store_that_does_not_exist(
    cli: Cli, runs: Path, tmp_path: Path, command: str
) -> None:
    journal = runs / "optuna.journal"
    spec = _spec(tmp_path, f"storage: {{optuna: 'journal:{journal}'}}\n")
    r = cli(command, spec)
    assert (r.code, r.out, r.err) == (1, "", _not_started(f"journal:{journal}", spec))
    assert not runs.exists()


@pytest.mark.parametrize(
    "url", ["sqlite://user:s3cr3t-pw@/:memory:", "postgresql://user:s3cr3t-pw@127.0.0.1:1/db"]
)
def test_a_password_in_the_store_url_is_not_shown(
    cli: Cli, runs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    monkeypatch.setenv("FTSWEEP_OPTUNA_STORAGE", url)
    r = cli("status", _spec(tmp_path))
    assert r.code == 1 and r.err.count("\n") == 1
    assert "s3cr3t-pw" not in r.err and "user:***@" in r.err


def _request(tmp_path: Path, trial: int, hp: Hyperparameters) -> TrainingRequest:
    return TrainingRequest.make(
        study=NAME,
        trial=trial,
        model="gpt-4o-mini",
        hyperparameters=hp,
        train_file=tmp_path / "data" / "train.jsonl",
        valid_file=tmp_path / "data" / "valid.jsonl",
    )


def _finished_trial(
    tmp_path: Path, number: int, value: float, hp: Hyperparameters, sampled: dict[str, Any]
) -> optuna.trial.FrozenTrial:
    request = _request(tmp_path, number, hp)
    distributions = {
        "n_epochs": optuna.distributions.IntDistribution(2, 4),
        "batch_size": optuna.distributions.IntDistribution(1, 8, log=True),
        "learning_rate_multiplier": optuna.distributions.FloatDistribution(0.02, 0.2, log=True),
    }
    return optuna.trial.create_trial(
        state=optuna.trial.TrialState.COMPLETE,
        value=value,
        params=sampled,
        distributions={k: distributions[k] for k in sampled},
        intermediate_values={1: value + 0.1, hp.n_epochs: value},
        user_attrs={
            TrialAttrs.REQUEST: request.to_json(),
            TrialAttrs.KEY: request.key,
            TrialAttrs.CONFIG_HASH: request.config_hash(),
            TrialAttrs.BACKEND: "openai",
            TrialAttrs.JOB_ID: f"ftjob-{number}",
            TrialAttrs.EPOCHS_DONE: hp.n_epochs,
            TrialAttrs.DIAGNOSIS: "good",
            TrialAttrs.RECOMMENDATION: "keep these settings",
            TrialAttrs.COST: 0.01,
            TrialAttrs.FINE_TUNED_MODEL: f"ft:gpt-4o-mini:org::t{number}",
            TrialAttrs.MLFLOW_RUN: f"run{number}",
        },
    )


@pytest.fixture
def finished(runs: Path, tmp_path: Path) -> tuple[Path, Hyperparameters]:
    """A sweep with two completed trials and one that failed before its job was submitted,
    built with optuna directly; then its data folder is deleted."""
    spec = _spec(tmp_path)
    runs.mkdir()
    study = optuna.create_study(
        study_name=NAME, storage=f"sqlite:///{runs / 'optuna.db'}", direction="minimize"
    )
    worse = Hyperparameters(2, 4, 0.05)
    # the request is what was trained: the 0.1 prompt-loss weight was fixed, never sampled
    best = Hyperparameters(3, 2, 0.1, prompt_loss_weight=0.1)
    sampled = {"n_epochs": 3, "batch_size": 2, "learning_rate_multiplier": 0.1}
    study.add_trial(_finished_trial(tmp_path, 0, 0.9, worse, worse.as_dict()))
    study.add_trial(_finished_trial(tmp_path, 1, 0.4, best, sampled))
    study.add_trial(
        optuna.trial.create_trial(
            state=optuna.trial.TrialState.FAIL,
            params={"n_epochs": 4},
            distributions={"n_epochs": optuna.distributions.IntDistribution(2, 4)},
            user_attrs={TrialAttrs.ERROR: "the provider refused the file"},
        )
    )
    for path in (tmp_path / "data").iterdir():
        path.unlink()
    (tmp_path / "data").rmdir()
    return spec, best


def test_status_of_a_finished_sweep_whose_data_is_gone(
    cli: Cli, runs: Path, finished: tuple[Path, Hyperparameters]
) -> None:
    spec, _ = finished
    before = _files(runs)
    r = cli("status", spec)
    assert (r.code, r.err) == (0, "")
    lines = r.out.splitlines()
    assert lines[0] == f"sweep {NAME}: 2 complete, 1 fail (of 4)"
    assert lines[1].split() == [
        "trial",
        "state",
        "value",
        "epochs",
        "batch",
        "lr_mult",
        "plw",
        "done",
        "diagnosis",
        "cost_usd",
        "best",
    ]
    assert lines[2].split() == ["0", "COMPLETE", "0.9", "2", "4", "0.05", "-", "2", "good", "0.01"]
    assert lines[3].split() == [
        "1",
        "COMPLETE",
        "0.4",
        "3",
        "2",
        "0.1",
        "0.1",
        "3",
        "good",
        "0.01",
        "*",
    ]
    assert lines[4].split() == ["2", "FAIL", "-", "4", "-", "-", "-", "-", "-", "-"]
    assert _files(runs) == before


@pytest.mark.parametrize("fmt", ["table", "csv", "json", "markdown", "html"])
def test_report_of_a_finished_sweep_whose_data_is_gone(
    cli: Cli, runs: Path, finished: tuple[Path, Hyperparameters], fmt: str
) -> None:
    spec, best = finished
    before = _files(runs)
    r = cli("report", spec, "--format", fmt)
    assert (r.code, r.err) == (0, "")
    if fmt == "json":
        rows = json.loads(r.out)
        assert [row["trial"] for row in rows] == [0, 1, 2]
        assert [row["state"] for row in rows] == ["COMPLETE", "COMPLETE", "FAIL"]
        assert {k: rows[1][k] for k in best.as_dict()} == best.as_dict()
        assert [row["best"] for row in rows] == [False, True, False]
        assert rows[2]["error"] == "the provider refused the file"
    elif fmt == "csv":
        assert r.out.splitlines()[0].startswith("trial,state,value,n_epochs,batch_size,")
        assert len(r.out.splitlines()) == 4
    else:
        assert "COMPLETE" in r.out and "FAIL" in r.out
    assert _files(runs) == before


def test_report_to_a_file(
    cli: Cli, runs: Path, tmp_path: Path, finished: tuple[Path, Hyperparameters]
) -> None:
    spec, _ = finished
    target = tmp_path / "trials.csv"
    r = cli("report", spec, "--format", "csv", "--out", target)
    assert (r.code, r.out, r.err) == (0, "", f"wrote {target}\n")
    assert target.read_text().startswith("trial,state,value,")


def test_best_of_a_finished_sweep_reads_what_was_trained(
    cli: Cli, runs: Path, finished: tuple[Path, Hyperparameters]
) -> None:
    spec, best = finished
    before = _files(runs)
    r = cli("best", spec)
    assert (r.code, r.err) == (0, "")
    shown = json.loads(r.out)
    recipe = shown.pop("recipe")
    assert (recipe["model"], recipe["api"]) == ("ft:gpt-4o-mini:org::t1", "chat.completions")
    assert "is gone" in recipe["notes"][0]  # the data folder was deleted
    assert shown == {
        "trial": 1,
        "generation": 1,
        "study": NAME,
        "objective": "valid_loss",
        "value": 0.4,
        "hyperparameters": best.as_dict(),
        "diagnosis": "good",
        "recommendation": "keep these settings",
        "fine_tuned_model": "ft:gpt-4o-mini:org::t1",
        "mlflow_run_id": "run1",
    }
    assert _files(runs) == before


def test_a_sweep_started_with_no_trial_yet(cli: Cli, runs: Path, tmp_path: Path) -> None:
    spec = _spec(tmp_path)
    runs.mkdir()
    optuna.create_study(study_name=NAME, storage=f"sqlite:///{runs / 'optuna.db'}")
    before = _files(runs)
    r = cli("status", spec)
    assert (r.code, r.out, r.err) == (0, f"sweep {NAME}: no trials yet (of 4)\n", "")
    r = cli("report", spec, "--format", "json")
    assert (r.code, r.out, r.err) == (0, "[]\n", "")
    r = cli("report", spec, "--format", "csv")
    assert r.code == 0 and r.out.startswith("trial,state,value,") and len(r.out.splitlines()) == 1
    r = cli("best", spec)
    assert (r.code, r.out) == (1, "")
    assert r.err == f"error: sweep '{NAME}' has no completed trial yet\n"
    assert _files(runs) == before

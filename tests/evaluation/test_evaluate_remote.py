"""``ftsweep evaluate`` against apisim for an openai and an azure sweep, through the real
SDK: chat completions of the fine-tuned models (on Azure through a Developer deployment made
and deleted around them), the scores logged to each child run once, ``best --by``."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from mlflow import MlflowClient

from orchestrator import apisim
from orchestrator.apisim.chat import WRONG
from orchestrator.apisim.server import SimServer
from orchestrator.backends.local.tasks import write_task
from tests.apisim.fixtures import azure_env, openai_env, request_log
from tests.reliability.stores import seed_mlflow


@pytest.fixture
def finished(
    cli: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> Iterator[tuple[Path, SimServer, str, Path]]:
    """A finished three-trial sweep on apisim whose held-out file is its validation file
    (so apisim, which stores that file, knows the answers)."""
    backend = str(request.param)
    server = apisim.start(state=tmp_path / "apisim", speed=6000.0)
    runs = tmp_path / "mlruns"
    monkeypatch.setenv("FTSWEEP_RUNS_DIR", str(runs))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    seed_mlflow(runs)
    env = openai_env(server) if backend == "openai" else azure_env(server)
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    train, valid = write_task("tickets", tmp_path / "data", n_train=40, n_valid=12, fmt="chat")
    spec = tmp_path / f"{backend}.yaml"
    spec.write_text(
        yaml.safe_dump(
            {
                "name": f"ev-{backend}",
                "data": {"train": str(train), "valid": str(valid)},
                "backend": {
                    "name": backend,
                    "model": "gpt-4o-mini",
                    "options": {"poll_interval": [0.05, 0.3]},
                },
                "trials": 3,
                "parallel": 3,
                "sampler": {"name": "random", "seed": 0},
                "evaluate": {"file": str(valid), "scorers": ["exact_match", "contains"]},
            }
        )
    )
    assert cli("run", spec).code == 0
    yield spec, server, backend, runs
    server.close()


@pytest.mark.parametrize("finished", ["openai", "azure"], indirect=True)
def test_evaluate_logs_scores_to_three_child_runs_once(
    cli: Any, finished: tuple[Path, SimServer, str, Path]
) -> None:
    spec, server, backend, runs = finished
    r = cli("evaluate", spec, "--top", "3", "--json")
    assert r.code == 0, r.err
    rows = json.loads(r.out)
    assert len(rows) == 3 and not any(row["recorded_before"] for row in rows)
    study = optuna.load_study(study_name=f"ev-{backend}", storage=f"sqlite:///{runs}/optuna.db")
    ranked = sorted(study.trials, key=lambda t: t.value)
    assert [row["trial"] for row in rows] == [t.number for t in ranked]
    chats = request_log(server, "chat.create")
    assert len(chats) == 3 * 12 and {e["status"] for e in chats} == {200}
    # each child run has its scores, at the step of its epochs
    client = MlflowClient(tracking_uri=f"sqlite:///{runs / 'mlflow.db'}")
    for row, trial in zip(rows, ranked, strict=True):
        assert 0 <= row["eval_exact_match"] <= row["eval_contains"] <= 1
        history = client.get_metric_history(row["mlflow_run_id"], "eval_exact_match")
        epochs = json.loads(trial.user_attrs["ftsweep.request"])["hyperparameters"]["n_epochs"]
        assert [(m.step, m.value) for m in history] == [(epochs, row["eval_exact_match"])]
    assert any(row["eval_exact_match"] > 0 for row in rows)  # apisim knows the answers
    if backend == "azure":  # one Developer deployment per model, made and deleted
        made = request_log(server, "deployments.create")
        gone = request_log(server, "deployments.delete")
        assert [e["status"] for e in made] == [201] * 3
        assert [e["status"] for e in gone] == [204] * 3
        assert "Developer tier: $0.00/h hosting" in r.err
    # again: nothing is generated or logged twice
    again = cli("evaluate", spec, "--top", "3", "--json")
    assert again.code == 0, again.err
    assert [row["recorded_before"] for row in json.loads(again.out)] == [True] * 3
    assert len(request_log(server, "chat.create")) == 3 * 12
    for row in rows:
        assert len(client.get_metric_history(row["mlflow_run_id"], "eval_exact_match")) == 1
    if backend == "openai":
        _answers_follow_the_surface(spec, server)
    # the scores as the policy of best
    best = json.loads(cli("best", spec, "--by", "eval_exact_match").out)
    top = max(rows, key=lambda row: (row["eval_exact_match"], -row["value"]))
    assert (best["trial"], best["eval_exact_match"]) == (top["trial"], top["eval_exact_match"])


def _answers_follow_the_surface(spec: Path, server: SimServer) -> None:
    """A model answers a known prompt right with probability its validation token accuracy
    (deterministically per model and prompt), else :data:`WRONG`; an unknown prompt never."""
    from openai import OpenAI

    from orchestrator.apisim.chat import correct_probability

    sim = server.sim
    client = OpenAI()
    valid = Path(yaml.safe_load(spec.read_text())["data"]["valid"])
    examples = [json.loads(line)["messages"] for line in valid.read_text().splitlines()]
    for job in [j for j in sim.jobs.values() if j.status == "succeeded"]:
        p = correct_probability(sim, job, job.total_steps)
        assert 0 < p < 1
        said = [
            client.chat.completions.create(model=job.fine_tuned_model, messages=m[:-1])
            .choices[0]
            .message.content
            for m in examples
        ]
        right = [a == m[-1]["content"] for a, m in zip(said, examples, strict=True)]
        assert all(a == WRONG for a, ok in zip(said, right, strict=True) if not ok)
        again = client.chat.completions.create(
            model=job.fine_tuned_model, messages=examples[0][:-1]
        )
        assert again.choices[0].message.content == said[0]
    unknown = client.chat.completions.create(
        model=job.fine_tuned_model, messages=[{"role": "user", "content": "never seen"}]
    )
    assert unknown.choices[0].message.content == WRONG
    with pytest.raises(Exception, match="does not exist"):
        client.chat.completions.create(model="ft:nope", messages=[{"role": "user", "content": "x"}])

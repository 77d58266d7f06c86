"""``ftsweep evaluate`` against apisim for an openai and an azure sweep, through the real
SDK: chat completions of the fine-tuned models (on Azure through a Developer deployment made
through Azure Resource Manager, waited for and deleted around them), the scores logged to
each child run once, ``best --by``."""

from __future__ import annotations

import importlib.util
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
from tests.apisim.fixtures import AZURE_KEY, azure_env, openai_env, request_log
from tests.reliability.stores import seed_mlflow

ACCOUNT = "ftsweep-res"
ARM = {
    "AZURE_SUBSCRIPTION_ID": "00000000-1111-2222-3333-444444444444",
    "AZURE_RESOURCE_GROUP": "rg-ftsweep",
    "AZURE_MANAGEMENT_TOKEN": "arm-token-secret",
}


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
                    "options": {"poll_interval": [0.05, 0.3]}
                    | (
                        {"management_endpoint": server.url, "account": ACCOUNT}
                        if backend == "azure"
                        else {}
                    ),
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
    cli: Any, finished: tuple[Path, SimServer, str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    spec, server, backend, runs = finished
    if backend == "azure":
        _refused_before_any_call(cli, spec, server, monkeypatch)
        for var, value in ARM.items():
            monkeypatch.setenv(var, value)
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
    if backend == "azure":  # one Developer deployment per model through ARM, made and deleted
        _deployed_through_arm(server, r.err)
    # again: nothing is generated or logged twice
    again = cli("evaluate", spec, "--top", "3", "--json")
    assert again.code == 0, again.err
    assert [row["recorded_before"] for row in json.loads(again.out)] == [True] * 3
    assert len(request_log(server, "chat.create")) == 3 * 12
    for row in rows:
        assert len(client.get_metric_history(row["mlflow_run_id"], "eval_exact_match")) == 1
    if backend == "openai":
        _answers_follow_the_surface(spec, server)
    else:
        _serves_only_once_succeeded(server, request_log(server, "deployments.create")[0]["path"])
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


def _refused_before_any_call(
    cli: Any, spec: Path, server: SimServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without the subscription or resource group (exit 2) or a management token (exit 1),
    ``evaluate`` says which in one line before any deployment or chat call."""
    for var in ARM:
        monkeypatch.delenv(var, raising=False)
    before = len(request_log(server))
    r = cli("evaluate", spec)
    assert (r.code, r.err.strip().splitlines()[-1]) == (2, (
        "error: azure: ftsweep evaluate deploys through Azure Resource Manager and needs the "
        "subscription: set backend.options.subscription_id or export AZURE_SUBSCRIPTION_ID"
    ))  # fmt: skip
    monkeypatch.setenv("AZURE_SUBSCRIPTION_ID", ARM["AZURE_SUBSCRIPTION_ID"])
    r = cli("evaluate", spec)
    assert r.code == 2 and "export AZURE_RESOURCE_GROUP" in r.err
    assert "backend.options.resource_group" in r.err
    monkeypatch.setenv("AZURE_RESOURCE_GROUP", ARM["AZURE_RESOURCE_GROUP"])
    if importlib.util.find_spec("azure.identity") is None:  # else a sign-in may exist here
        r = cli("evaluate", spec)  # no token and no azure-identity: no way to a token
        assert r.code == 1 and "export AZURE_MANAGEMENT_TOKEN" in r.err.strip().splitlines()[-1]
    ops = {e["op"] for e in request_log(server)[before:]}
    assert not ops & {"deployments.create", "chat.create"}, ops


def _deployed_through_arm(server: SimServer, said: str) -> None:
    """Each of the three models was deployed through ARM (PUT, polled until ``Succeeded``),
    answered by its deployment's name and deleted; none remains, the token stayed secret."""
    made = request_log(server, "deployments.create")
    polled = request_log(server, "deployments.retrieve")
    gone = request_log(server, "deployments.delete")
    assert [e["status"] for e in made] == [201] * 3
    assert len(polled) >= 3 and {e["status"] for e in polled} == {200}
    assert [e["status"] for e in gone] == [204] * 3
    resource = (
        f"/subscriptions/{ARM['AZURE_SUBSCRIPTION_ID']}/resourceGroups/rg-ftsweep/providers/"
        f"Microsoft.CognitiveServices/accounts/{ACCOUNT}/deployments/ftsweep-eval-"
    )
    assert all(e["path"].startswith(resource) for e in made + polled + gone)
    assert [e["path"] for e in made] == [e["path"] for e in gone]
    assert server.sim.deployments == {}
    assert "Developer tier: $0.00/h hosting" in said and "through Azure Resource Manager" in said
    assert ARM["AZURE_MANAGEMENT_TOKEN"] not in said


def _serves_only_once_succeeded(server: SimServer, path: str) -> None:
    """apisim's deployment is ``Creating`` for a while (chat by its name refused), then
    ``Succeeded`` (chat answers); a deleted one is gone."""
    from openai import NotFoundError, OpenAI

    from orchestrator.apisim.chat import DEPLOY_SECONDS

    jobs = [j for j in server.sim.jobs.values() if j.status == "succeeded"]
    url = f"{server.url}{path}?api-version=2025-06-01"
    arm = {"Authorization": "Bearer arm-token", "Content-Type": "application/json"}
    body = {"sku": {"name": "DeveloperTier", "capacity": 50},
            "properties": {"model": {"format": "OpenAI", "name": jobs[0].fine_tuned_model,
                                     "version": "1"}}}  # fmt: skip
    clock = f"{server.url}/_sim/clock"
    _http("POST", clock, {"Content-Type": "application/json"}, {"speed": 0})
    assert _http("PUT", url, arm, body)["properties"]["provisioningState"] == "Creating"
    name = path.rsplit("/", 1)[1]
    chat = OpenAI(api_key=AZURE_KEY, base_url=f"{server.url}/openai/v1/", max_retries=0)
    say = [{"role": "user", "content": "hi"}]
    with pytest.raises(NotFoundError, match="not ready"):
        chat.chat.completions.create(model=name, messages=say)  # type: ignore[arg-type]
    _http("POST", clock, {"Content-Type": "application/json"}, {"advance": DEPLOY_SECONDS + 1})
    assert _http("GET", url, arm)["properties"]["provisioningState"] == "Succeeded"
    assert chat.chat.completions.create(model=name, messages=say).choices  # type: ignore[arg-type]
    _http("DELETE", url, arm)
    assert server.sim.deployments == {}
    _http("POST", clock, {"Content-Type": "application/json"}, {"speed": 6000.0})


def _http(method: str, url: str, headers: dict[str, str], body: Any = None) -> Any:
    from urllib.request import Request, urlopen

    data = None if body is None else json.dumps(body).encode()
    with urlopen(Request(url, data=data, method=method, headers=headers)) as response:
        raw = response.read()  # loopback only
    return json.loads(raw) if raw else None

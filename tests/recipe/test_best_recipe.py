"""``ftsweep best`` prints the inference recipe, and its sample call works as printed: on a
finished tiny sweep it generates with the trained model until the stop sequence; on a
finished openai/azure rehearsal it is Python that sends its request through the SDK."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from orchestrator import apisim
from orchestrator.apisim.server import SimServer
from orchestrator.backends.local.tasks import write_task
from tests.apisim.fixtures import azure_env, openai_env, request_log
from tests.conftest import Result
from tests.engine.test_noop_resume import noop_in_a_fresh_process
from tests.recipe.conftest import Finished
from tests.reliability.stores import seed_mlflow

Cli = Callable[..., Result]


def _python(code: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run ``code`` as a user would after pasting it: a fresh interpreter, offline."""
    script = cwd / "call.py"
    script.write_text(code)
    full = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", **env}
    return subprocess.run(
        [sys.executable, str(script)],
        cwd=cwd,
        env=full,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_local_sample_call_generates_until_the_stop_sequence(
    cli: Cli, tiny_sweep: Finished, tmp_path: Path
) -> None:
    r = cli("best", tiny_sweep.spec)
    assert (r.code, r.err) == (0, "")
    recipe = json.loads(r.out)["recipe"]
    model = json.loads(r.out)["fine_tuned_model"]
    assert recipe["model"] == model and Path(model, "config.json").is_file()
    assert recipe["registered_model"] == "models:/tiny-recipe/1"
    # the reverse task's prompts all end with "\n->"; the trainer appends EOS to completions
    assert (recipe["separator"], recipe["stop"], recipe["api"]) == (
        "\n->",
        ["</s>"],
        "transformers",
    )
    code = cli("best", tiny_sweep.spec, "--code")
    assert code.code == 0 and code.out == recipe["sample_call"]
    ran = _python(code.out, tmp_path, {})
    assert ran.returncode == 0, ran.stderr[-2000:]
    answer = json.loads(ran.stdout.strip().splitlines()[-1])
    assert answer["finish_reason"] == "stop"  # it ended at EOS, not at max_new_tokens
    assert answer["completion"].startswith(" ") and "</s>" not in answer["completion"]
    assert 0 < len(answer["completion"]) < 20


def test_the_finished_tiny_sweep_run_again_loads_no_model_library(tiny_sweep: Finished) -> None:
    """The local backend's no-op run (a fresh ``ftsweep run``) hashes the data and reads the
    study: no torch, transformers, pandas, MLflow or SQLAlchemy is imported."""
    found, err = noop_in_a_fresh_process(tiny_sweep.spec, tiny_sweep.folder)
    assert found == {"code": 0, "heavy": []}
    assert "sweep tiny-recipe is already complete (1 trials)" in err


@pytest.fixture
def rehearsal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> Iterator[tuple[Path, SimServer, str]]:
    """A finished two-trial rehearsal on apisim, chat data, for the backend of the param."""
    backend = str(request.param)
    server = apisim.start(state=tmp_path / "apisim", speed=600.0)
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
                "name": f"recipe-{backend}",
                "data": {"train": str(train), "valid": str(valid)},
                "backend": {
                    "name": backend,
                    "model": "gpt-4o-mini",
                    "options": {"poll_interval": [0.05, 0.3]},
                },
                "trials": 2,
                "parallel": 2,
                "sampler": {"name": "random", "seed": 0},
            }
        )
    )
    yield spec, server, backend
    server.close()


@pytest.mark.parametrize("rehearsal", ["openai", "azure"], indirect=True)
def test_the_provider_sample_call_sends_its_request_through_the_sdk(
    cli: Cli, rehearsal: tuple[Path, SimServer, str], tmp_path: Path
) -> None:
    spec, server, backend = rehearsal
    assert cli("run", spec).code == 0
    r = cli("best", spec)
    assert r.code == 0, r.err
    shown = json.loads(r.out)
    recipe = shown["recipe"]
    model = shown["fine_tuned_model"]
    assert "gpt-4o-mini" in model and "ft" in model
    assert (recipe["model"], recipe["api"], recipe["separator"]) == (
        model,
        "chat.completions",
        None,
    )
    train = Path(yaml.safe_load(spec.read_text())["data"]["train"])
    system = json.loads(train.open().readline())["messages"][0]
    assert recipe["system"] == system["content"]
    code = cli("best", spec, "--code").out
    tree = ast.parse(code)  # valid Python ...
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call)]
    create = [c for c in calls if ast.unparse(c.func) == "client.chat.completions.create"]
    assert len(create) == 1
    messages = ast.literal_eval(next(k.value for k in create[0].keywords if k.arg == "messages"))
    assert messages[0] == {"role": "system", "content": system["content"]}
    # ... that, run as printed, sends its request with the SDK: apisim answers for the
    # fine-tuned model (OpenAI); on Azure the deployment must exist first (404 until then)
    env = openai_env(server) if backend == "openai" else azure_env(server)
    env["AZURE_OPENAI_DEPLOYMENT"] = "my-deployment"
    ran = _python(code, tmp_path, env)
    sent = [e for e in request_log(server) if e["path"].endswith("/chat/completions")]
    path = "/v1" if backend == "openai" else "/openai/deployments/my-deployment"
    if backend == "openai":
        assert ran.returncode == 0, ran.stderr[-2000:]
        assert ran.stdout.strip()  # the model's answer
        status = 200
    else:
        assert ran.returncode == 1 and "openai.NotFoundError" in ran.stderr
        status = 404
    assert [(e["method"], e["path"], e["status"]) for e in sent] == [
        ("POST", f"{path}/chat/completions", status)
    ]


def test_a_prompt_completion_recipe_for_the_completions_api(tmp_path: Path) -> None:
    """Legacy completion models (babbage-002, davinci-002): the separator goes after the
    prompt and the training data's stop sequence into ``stop``, exactly as in the data."""
    from orchestrator.tracking.recipe import build_recipe
    from tests.helpers import write_jsonl

    rows = [
        {"prompt": f"Ticket {i}: broken item {i}\n\n###\n\n", "completion": f" reply {i} END"}
        for i in range(20)
    ]
    train = write_jsonl(tmp_path / "train.jsonl", rows)
    recipe = build_recipe("openai", "ft:babbage-002:org::x1", "babbage-002", train)
    assert (recipe.format, recipe.api) == ("prompt_completion", "completions")
    assert (recipe.separator, recipe.stop, recipe.example) == (
        "\n\n###\n\n",
        (" END",),
        "Ticket 0: broken item 0",
    )
    code = recipe.sample_call()
    tree = ast.parse(code)
    call = next(
        n
        for n in ast.walk(tree)
        if isinstance(n, ast.Call) and ast.unparse(n.func) == "client.completions.create"
    )
    args = {k.arg: k.value for k in call.keywords}
    assert ast.literal_eval(args["stop"]) == [" END"]
    prompt = args["prompt"]  # the example + the separator, two string constants
    assert isinstance(prompt, ast.BinOp)
    joined = ast.literal_eval(prompt.left) + ast.literal_eval(prompt.right)
    assert joined == "Ticket 0: broken item 0\n\n###\n\n"
    with apisim.start(state=tmp_path / "apisim", speed=0.0) as server:
        ran = _python(code, tmp_path, openai_env(server))
        assert ran.returncode == 1 and "openai.NotFoundError" in ran.stderr
        sent = [(e["method"], e["path"]) for e in request_log(server) if e["op"] == "unknown"]
        assert sent == [("POST", "/v1/completions")]

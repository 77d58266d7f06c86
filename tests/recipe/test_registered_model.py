"""The Model Registry entry of a sweep's best trial loads by name and answers: a pyfunc that
applies the recipe (separator, stop sequences) around the trained model, loaded offline in a
fresh interpreter from the registry alone (the job folder moved away)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from orchestrator import apisim
from orchestrator.backends.local.tasks import write_task
from tests.apisim.fixtures import openai_env, request_log
from tests.recipe.conftest import Finished, run_cli
from tests.reliability.stores import seed_mlflow

PROMPTS = ["reverse: abcd", "reverse: xyz"]

LOAD = """
import json, sys
import mlflow
mlflow.set_tracking_uri(sys.argv[1])
model = mlflow.pyfunc.load_model(f"models:/{sys.argv[2]}/latest")
meta = model.metadata.metadata
try:
    answers = model.predict(json.loads(sys.argv[3]))
except Exception as exc:
    answers = f"{type(exc).__module__}.{type(exc).__name__}: {exc}"
print(json.dumps({"answers": answers, "metadata": meta}))
"""


def _load(store: str, name: str, inputs: Any, env: dict[str, str] | None = None) -> Any:
    full = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", **(env or {})}
    proc = subprocess.run(
        [sys.executable, "-c", LOAD, store, name, json.dumps(inputs)],
        capture_output=True,
        text=True,
        env=full,
        timeout=300,
        cwd="/",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _generate(folder: Path, prompt: str) -> tuple[str, bool]:
    """What the trained model says, greedily, and whether it ended with EOS."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True)
    inputs = tok(prompt, return_tensors="pt")
    out = model.generate(**inputs, max_new_tokens=64, do_sample=False)
    new = out[0, inputs["input_ids"].shape[1] :].tolist()
    return tok.decode(new, skip_special_tokens=True), new[-1] == tok.eos_token_id


def _job_model(finished: Finished) -> Path:
    import optuna

    from orchestrator.core.attrs import TrialAttrs

    storage = f"sqlite:///{finished.runs / 'optuna.db'}"
    study = optuna.load_study(
        study_name=yaml.safe_load(finished.spec.read_text())["name"], storage=storage
    )
    return Path(study.best_trial.user_attrs[TrialAttrs.FINE_TUNED_MODEL])


def test_the_registered_local_model_loads_by_name_and_answers(
    tiny_sweep: Finished, tmp_path: Path
) -> None:
    folder = _job_model(tiny_sweep)
    expected = [_generate(folder, p + "\n->") for p in PROMPTS]
    assert all(stopped for _, stopped in expected)  # the model learned to end at EOS
    moved = tmp_path / "moved"
    folder.parent.rename(moved)  # nothing may come from the job folder any more
    try:
        shown = _load(f"sqlite:///{tiny_sweep.runs / 'mlflow.db'}", "tiny-recipe", PROMPTS)
    finally:
        moved.rename(folder.parent)
    # the separator was appended for us, and the answer ends where the model said EOS
    assert shown["answers"] == [text for text, _ in expected]
    recipe = shown["metadata"]["ftsweep_recipe"]
    assert (recipe["separator"], recipe["stop"]) == ("\n->", ["</s>"])


def test_a_registered_lora_adapter_brings_its_base_model_and_a_true_readme(
    tiny_lora_sweep: Finished, tmp_path: Path
) -> None:
    from mlflow import MlflowClient

    folder = _job_model(tiny_lora_sweep)
    config = json.loads((folder / "adapter_config.json").read_text())
    assert Path(config["base_model_name_or_path"]).is_dir()  # the trainer names its cache
    store = f"sqlite:///{tiny_lora_sweep.runs / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=store)
    version = client.get_latest_versions("tiny-lora")[0]
    local = Path(client.download_artifacts(version.run_id, "model", str(tmp_path)))
    registered = json.loads((local / "artifacts/model/adapter_config.json").read_text())
    assert registered["base_model_name_or_path"] == "tiny"
    readme = (local / "artifacts/model/README.md").read_text()
    assert "LoRA adapter" in readme and "'\\n->'" in readme and str(folder) not in readme
    assert (local / "artifacts/base/config.json").is_file()
    moved = tmp_path / "moved"
    folder.parent.rename(moved)
    try:
        shown = _load(store, "tiny-lora", PROMPTS[0])
    finally:
        moved.rename(folder.parent)
    assert isinstance(shown["answers"], list) and len(shown["answers"]) == 1
    assert "</s>" not in shown["answers"][0]


def test_a_registered_openai_model_names_its_id_and_calls_the_provider(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = apisim.start(state=tmp_path / "apisim", speed=600.0)
    try:
        runs = tmp_path / "mlruns"
        monkeypatch.setenv("FTSWEEP_RUNS_DIR", str(runs))
        monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
        monkeypatch.chdir(tmp_path)
        seed_mlflow(runs)
        for var, value in openai_env(server).items():
            monkeypatch.setenv(var, value)
        train, valid = write_task("tickets", tmp_path / "data", n_train=40, n_valid=12, fmt="chat")
        spec = tmp_path / "openai.yaml"
        spec.write_text(
            yaml.safe_dump(
                {
                    "name": "registered-openai",
                    "data": {"train": str(train), "valid": str(valid)},
                    "backend": {
                        "name": "openai",
                        "model": "gpt-4o-mini",
                        "options": {"poll_interval": [0.05, 0.3]},
                    },
                    "trials": 1,
                    "sampler": {"name": "random", "seed": 0},
                }
            )
        )
        assert run_cli("run", spec) == 0
        shown = _load(
            f"sqlite:///{runs / 'mlflow.db'}",
            "registered-openai",
            ["My parcel never arrived"],
            openai_env(server),
        )
        assert shown["metadata"]["fine_tuned_model"].startswith("ft:gpt-4o-mini")
        assert shown["metadata"]["ftsweep_recipe"]["api"] == "chat.completions"
        # the SDK's request reaches apisim, which answers for the fine-tuned model (a prompt
        # in none of its files: the answer it gives what it does not know)
        assert shown["answers"] == ["I am not sure."]
        sent = [e for e in request_log(server) if e["path"] == "/v1/chat/completions"]
        assert [(e["method"], e["status"]) for e in sent] == [("POST", 200)]
    finally:
        server.close()


def test_saving_a_model_skips_mlflows_scan_of_every_installed_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The requirement check MLflow's save runs (a map of every installed distribution's
    modules, about 1 s of CPU at the end of each sweep) is left out of ftsweep's save, and is
    back after it; the name it swaps is where MLflow calls it from."""
    import importlib
    import inspect

    import importlib_metadata

    from orchestrator.tracking.pyfunc import REQUIREMENT_CHECK, save_recipe_model
    from orchestrator.tracking.recipe import Recipe

    module = importlib.import_module(REQUIREMENT_CHECK[0])
    check = getattr(module, REQUIREMENT_CHECK[1])
    assert REQUIREMENT_CHECK[1] in inspect.getsource(module._process_pip_requirements)
    import mlflow.utils.requirements_utils as requirements

    monkeypatch.setattr(requirements, "_MODULES_TO_PACKAGES", None)  # as in a fresh process
    scans: list[int] = []
    monkeypatch.setattr(importlib_metadata, "packages_distributions", lambda: scans.append(1) or {})
    recipe = Recipe("openai", "ft:gpt-4.1-mini:acme::abc", "gpt-4.1-mini", "chat")
    save_recipe_model(recipe, tmp_path / "model")
    assert (tmp_path / "model" / "MLmodel").is_file()
    assert scans == []
    assert getattr(module, REQUIREMENT_CHECK[1]) is check

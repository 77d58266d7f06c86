"""The registered model: an MLflow ``pyfunc`` that answers as the fine-tuned model was trained.

``mlflow.pyfunc.load_model("models:/NAME/latest").predict(["reverse: abc"])`` returns the
completions. Both flavours apply the :class:`~orchestrator.tracking.recipe.Recipe`: the separator is
appended to prompts (prompt/completion data), a conversation gets the chat template (local) or
goes as ``messages`` (providers), and a completion ends at the training data's stop sequences.

* :class:`LocalModel` (the local trainer): the artifacts hold the trained model folder, or a
  LoRA adapter **and** its base model folder, so loading needs nothing but the registry: no
  hub (``local_files_only``), no cache path of the machine that trained it. The adapter's
  README (peft's empty template naming a local cache path) and ``base_model_name_or_path``
  are rewritten in the registered copy to name the base model as the sweep file did.
* :class:`ProviderModel` (openai/azure): the fine-tuned model id and the recipe; ``predict``
  calls the provider with the ``openai`` SDK, credentials from the environment as for a sweep
  (on Azure, ``AZURE_OPENAI_DEPLOYMENT`` names the deployment of the fine-tuned model).

Inputs of ``predict``: a string, a list of strings (prompts or user messages), a list of
``{"role", "content"}`` messages (one conversation), a list of ``{"prompt"}`` or
``{"messages"}`` records, or a pandas DataFrame with a ``prompt`` or ``messages`` column.
``params``: ``max_new_tokens`` (default 64).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import mlflow.pyfunc
from mlflow.exceptions import MlflowException
from mlflow.pyfunc.model import PythonModel

from orchestrator.tracking.client import TrackingError
from orchestrator.tracking.recipe import Recipe, recipe_of_trial

__all__ = ["LocalModel", "ProviderModel", "log_recipe_model", "save_recipe_model"]

MAX_NEW_TOKENS = 64


def _inputs(model_input: Any) -> list[str | list[dict[str, Any]]]:
    """Each request: a prompt (str) or a conversation (a list of messages)."""
    if hasattr(model_input, "to_dict") and hasattr(model_input, "columns"):  # a DataFrame
        columns = list(model_input.columns)
        column = next((c for c in ("prompt", "messages") if c in columns), columns[0])
        return [_one(v) for v in model_input[column].tolist()]
    if isinstance(model_input, str):
        return [model_input]
    if isinstance(model_input, Mapping):
        return [_one(model_input)]
    items = list(model_input)
    if items and all(isinstance(m, Mapping) and "role" in m for m in items):
        return [[dict(m) for m in items]]
    return [_one(v) for v in items]


def _one(value: Any) -> str | list[dict[str, Any]]:
    if isinstance(value, Mapping):
        if "messages" in value:
            return [dict(m) for m in value["messages"]]
        if "prompt" in value:
            return str(value["prompt"])
    if isinstance(value, str):
        return value
    if isinstance(value, Sequence):
        return [dict(m) for m in value]
    return str(value)


def _conversation(recipe: Recipe, request: str | list[dict[str, Any]]) -> list[dict[str, Any]]:
    if not isinstance(request, str):
        return request
    head = [{"role": "system", "content": recipe.system}] if recipe.system else []
    return [*head, {"role": "user", "content": request}]


def _cut(text: str, stop: Sequence[str]) -> str:
    ends = [text.index(s) for s in stop if s in text]
    return text[: min(ends)] if ends else text


class LocalModel(PythonModel):
    """The local trainer's model (or base model + LoRA adapter) with its recipe."""

    #: inputs are free-form on purpose (see the module docstring): no type-hint validation
    _skip_type_hint_validation = True

    def load_context(self, context: Any) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from transformers import AutoModelForCausalLM, AutoTokenizer

        artifacts = context.artifacts
        self.recipe = Recipe.from_dict(json.loads(Path(artifacts["recipe"]).read_text("utf-8")))
        folder = artifacts["model"]
        self.model: Any
        self.tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        if "base" in artifacts:
            from peft import PeftModel

            base = AutoModelForCausalLM.from_pretrained(artifacts["base"], local_files_only=True)
            self.model = PeftModel.from_pretrained(base, folder, local_files_only=True)
        else:
            self.model = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True)
        self.model.eval()

    def _encode(self, request: str | list[dict[str, Any]]) -> Any:
        if self.recipe.format == "chat":
            return self.tokenizer.apply_chat_template(
                _conversation(self.recipe, request),
                add_generation_prompt=True,
                return_tensors="pt",
                return_dict=True,
            )
        text = request if isinstance(request, str) else str(request[-1].get("content", ""))
        return self.tokenizer(self.recipe.prompt_text(text), return_tensors="pt")

    # model_input is left unannotated: MLflow reads the hint as a schema and warns at every
    # save that Any is not one (any input is taken: a string, a list, a table)
    def predict(self, context: Any, model_input, params: Any = None) -> list[str]:  # type: ignore[no-untyped-def]
        import torch

        limit = int((params or {}).get("max_new_tokens", MAX_NEW_TOKENS))
        tok = self.tokenizer
        answers = []
        for request in _inputs(model_input):
            encoded = self._encode(request)
            inputs = {k: v for k, v in encoded.items() if k in ("input_ids", "attention_mask")}
            with torch.no_grad():
                out = self.model.generate(
                    **inputs,
                    max_new_tokens=limit,
                    do_sample=False,
                    eos_token_id=tok.eos_token_id,
                    pad_token_id=tok.pad_token_id or tok.eos_token_id,
                    stop_strings=list(self.recipe.stop) or None,
                    tokenizer=tok,
                )
            text = str(tok.decode(out[0, inputs["input_ids"].shape[1] :]))
            answers.append(_cut(text, self.recipe.stop))
        return answers


class ProviderModel(PythonModel):
    """A fine-tuned model of OpenAI or Azure OpenAI, called with the ``openai`` SDK."""

    _skip_type_hint_validation = True

    def load_context(self, context: Any) -> None:
        data = json.loads(Path(context.artifacts["recipe"]).read_text("utf-8"))
        self.recipe = Recipe.from_dict(data)

    def _client(self) -> tuple[Any, str]:
        import openai

        if self.recipe.backend == "azure":
            from orchestrator.backends.remote.providers import AZURE_API_VERSION

            version = os.environ.get("OPENAI_API_VERSION", AZURE_API_VERSION)
            model = os.environ.get("AZURE_OPENAI_DEPLOYMENT", self.recipe.model)
            return openai.AzureOpenAI(api_version=version), model
        return openai.OpenAI(), self.recipe.model

    # model_input is left unannotated: MLflow reads the hint as a schema and warns at every
    # save that Any is not one (any input is taken: a string, a list, a table)
    def predict(self, context: Any, model_input, params: Any = None) -> list[str]:  # type: ignore[no-untyped-def]
        client, model = self._client()
        limit = int((params or {}).get("max_new_tokens", 256))
        answers = []
        for request in _inputs(model_input):
            if self.recipe.format == "chat":
                response = client.chat.completions.create(
                    model=model,
                    messages=_conversation(self.recipe, request),
                    max_tokens=limit,
                    temperature=0,
                )
                answers.append(response.choices[0].message.content or "")
            else:
                text = request if isinstance(request, str) else str(request[-1]["content"])
                response = client.completions.create(
                    model=model,
                    prompt=self.recipe.prompt_text(text),
                    stop=list(self.recipe.stop) or None,
                    max_tokens=limit,
                    temperature=0,
                )
                answers.append(response.choices[0].text)
        return answers


def _model_card(recipe: Recipe, base_name: str) -> str:
    kind = (
        " as a LoRA adapter (peft), registered with its base model" if recipe.adapter_base else ""
    )
    system = f"- system message: {recipe.system!r}\n" if recipe.system else ""
    return (
        f"# Fine-tuned {base_name} (ftsweep)\n\n"
        f"Trained by ftsweep's local trainer from `{base_name}`{kind}.\n\n"
        "Load it by name: `mlflow.pyfunc.load_model('models:/NAME/latest').predict([...])`.\n\n"
        "## Inference recipe\n\n"
        f"- format: {recipe.format}\n"
        f"- separator appended to prompts: {recipe.separator!r}\n"
        f"- stop sequences: {list(recipe.stop)!r}\n{system}"
    )


def _stage_local(recipe: Recipe, folder: Path) -> dict[str, str]:
    """The artifacts of a local model, staged in ``folder``: the model (the adapter with a
    README and metadata naming the base model as the user does, not a cache path) and, for
    an adapter, its base model."""
    model = folder / "model"
    shutil.copytree(recipe.model, model, ignore=shutil.ignore_patterns("checkpoint-*"))
    artifacts = {"model": str(model)}
    if recipe.adapter_base:
        config_file = model / "adapter_config.json"
        config = json.loads(config_file.read_text("utf-8"))
        config["base_model_name_or_path"] = recipe.base_model
        config_file.write_text(json.dumps(config, indent=2), "utf-8")
        base = folder / "base"  # staged under its own name: MLflow keeps the folder's name
        shutil.copytree(recipe.adapter_base, base)
        artifacts["base"] = str(base)
    (model / "README.md").write_text(_model_card(recipe, recipe.base_model), "utf-8")
    return artifacts


#: where MLflow's save checks the model's pip requirements against the installed packages
REQUIREMENT_CHECK = ("mlflow.utils.environment", "warn_dependency_requirement_mismatches")


@contextlib.contextmanager
def _requirements_trusted() -> Iterator[None]:
    """While saving, MLflow checks each pip requirement against the installed packages, after
    mapping every installed distribution's modules (about 1 s of CPU, once per process, paid
    at the end of every sweep). ftsweep's requirements are unpinned names of packages the
    saving process runs with (``mlflow`` and ``openai``, or ``torch``, ``transformers`` and
    ``peft`` after local training), so the check cannot find a mismatch to warn of: it is
    left out of this save (:data:`REQUIREMENT_CHECK`, put back after). An MLflow without
    that name keeps its check (slower, nothing else)."""
    import importlib

    module_name, name = REQUIREMENT_CHECK
    module = importlib.import_module(module_name)
    check = getattr(module, name, None)
    if check is None:
        yield
        return
    setattr(module, name, lambda requirements: None)
    try:
        yield
    finally:
        setattr(module, name, check)


def save_recipe_model(recipe: Recipe, path: Path) -> None:
    """Save the pyfunc model of ``recipe`` into the new folder ``path``."""
    with tempfile.TemporaryDirectory() as tmp:
        staged = Path(tmp)
        recipe_file = staged / "recipe.json"
        recipe_file.write_text(recipe.to_json(), "utf-8")
        artifacts = {"recipe": str(recipe_file)}
        requirements = ["mlflow", "openai"]
        python_model: Any
        if recipe.backend == "local":
            artifacts.update(_stage_local(recipe, staged))
            requirements = ["mlflow", "torch", "transformers"]
            if recipe.adapter_base:
                requirements.append("peft")
            python_model = LocalModel()
        else:
            python_model = ProviderModel()
        metadata = {"ftsweep_recipe": recipe.as_dict(), "fine_tuned_model": recipe.model}
        quiet = logging.getLogger("mlflow.pyfunc")
        level = quiet.level
        quiet.setLevel(logging.ERROR)  # "a Python object as python_model ... CloudPickle"
        try:
            # "type hint ... not supported for validation"
            with warnings.catch_warnings(), _requirements_trusted():
                warnings.simplefilter("ignore")
                mlflow.pyfunc.save_model(
                    path=str(path),
                    python_model=python_model,
                    artifacts=artifacts,
                    pip_requirements=requirements,
                    metadata=metadata,
                )
        finally:
            quiet.setLevel(level)


def log_recipe_model(
    tracker: Any, run_id: str, artifact_path: str, backend: str, trial: Any, study: Any = None
) -> bool:
    """Log the pyfunc model of ``trial``'s fine-tuned model under ``artifact_path`` of run
    ``run_id`` (a :class:`~orchestrator.tracking.Tracker`); False when the trial kept none.
    ``study`` gives an earlier epoch told as a trial its parent's base model and data."""
    recipe = recipe_of_trial(backend, trial, study)
    if recipe is None:
        return False
    if backend == "local" and not Path(recipe.model).is_dir():
        return False
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / artifact_path
        try:
            save_recipe_model(recipe, path)
        except MlflowException as exc:
            first = (exc.message.splitlines() or [type(exc).__name__])[0]
            raise TrackingError(f"MLflow: saving the model of the best trial: {first}") from exc
        tracker.log_file(run_id, path, artifact_path)
    return True

"""Chat completions of fine-tuned models, and Azure's deployments of them.

**Answers.** ``POST /chat/completions`` answers for the ``fine_tuned_model`` of a succeeded
job, or one of its checkpoints (``...:ckpt-step-N``); on Azure ``model`` is a deployment's
name (``/openai/v1/chat/completions``) or the deployment is in the path
(``/openai/deployments/{name}/chat/completions?api-version=``). The simulator has no model:
it knows the answer to a prompt only when that prompt is in a file it stores (the job's
training or validation file, or any other uploaded file of the same API), as the last
assistant message after the same messages (chat) or the completion of the same prompt (a
conversation of one user message). It then answers with that reference with probability
``p``, the validation mean token accuracy at the model's step (``exp(-0.55 * loss)`` on the
response surface; the training accuracy when the job had no validation file), drawn
deterministically from the model id and the prompt; otherwise, and for a prompt it has never
seen, it answers :data:`WRONG`. So a job near the surface's optimum answers more prompts
right, an over-fitted last epoch fewer than its earlier checkpoint, and a test can score a
held-out file by uploading it (as a validation file, or with ``purpose: fine-tune``).

**Deployments** (Azure's control plane, kept in memory, not in the state folder): the ARM
paths ``/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.CognitiveServices/
accounts/{account}/deployments/{name}?api-version=`` (a bearer token required; the one
simulated resource answers for any subscription, group and account). ``PUT`` with ARM's
body ``{"sku": {"name": "DeveloperTier", "capacity": N}, "properties": {"model": {"format":
"OpenAI", "name": MODEL, "version": "1"}}}`` creates one (201, or 200 when it exists) in
``provisioningState`` ``Creating``, ``Succeeded`` after :data:`DEPLOY_SECONDS` of simulated
time; ``GET`` reads it, ``DELETE`` removes it (204, also when there is none). Chat
completions by its name answer only once it succeeded (before: 404 ``DeploymentNotReady``).
"""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Any

from orchestrator.apisim.errors import ApiError
from orchestrator.evaluation.examples import EvalExample, example_of

if TYPE_CHECKING:
    from orchestrator.apisim.simulator import Simulator
    from orchestrator.apisim.store import JobRecord

__all__ = [
    "DEPLOY_SECONDS",
    "WRONG",
    "answer",
    "chat_completion",
    "correct_probability",
    "deployment",
]

#: the answer to a prompt the simulator does not know, or gets wrong
WRONG = "I am not sure."
_SKUS = ("DeveloperTier", "Standard", "GlobalStandard")
#: simulated seconds a deployment stays ``Creating``
DEPLOY_SECONDS = 60.0


def _model_job(sim: Simulator, api: str, model: str) -> tuple[JobRecord, int]:
    """The succeeded job whose model (or checkpoint) ``model`` is, and the model's step."""
    base, _, ckpt = model.partition(":ckpt-step-")
    for job in sim.jobs.values():
        if job.api != api or job.status != "succeeded" or job.fine_tuned_model != base:
            continue
        if not ckpt:
            return job, job.total_steps
        if ckpt.isdigit():
            for view in sim.job_checkpoints(api, job.id):
                if view.step == int(ckpt):
                    return job, view.step
    raise ApiError(
        404, f"The model '{model}' does not exist", param="model", code="model_not_found"
    )


def correct_probability(sim: Simulator, job: JobRecord, step: int) -> float:
    """How often the model at ``step`` of ``job`` answers a known prompt right: the mean
    token accuracy on the validation data at its last measured step (training if none)."""
    curve = sim.curve(job)[:step]
    for m in reversed(curve):
        for value in (m.full_valid_mean_token_accuracy, m.valid_mean_token_accuracy):
            if value is not None:
                return float(value)
    return float(curve[-1].train_mean_token_accuracy) if curve else 0.0


def _known(sim: Simulator, api: str) -> dict[str, str]:
    """Prompt key -> reference, from every stored file of ``api`` (first one wins)."""
    found: dict[str, str] = {}
    for record in sorted(sim.files.values(), key=lambda f: f.created_at):
        if record.api != api or record.deleted or record.purpose != "fine-tune":
            continue
        try:
            text = sim.store.blob_path(record.id).read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError):
            continue
        for line in text.splitlines():
            try:
                example = example_of(json.loads(line)) if line.strip() else None
            except ValueError:
                continue
            if example is not None:
                found.setdefault(example.key, example.reference)
    return found


def _keys(messages: list[dict[str, Any]]) -> list[str]:
    msgs = tuple(
        {"role": str(m.get("role")), "content": str(m.get("content") or "")} for m in messages
    )
    keys = [EvalExample(0, "", messages=msgs).key]
    if len(msgs) == 1 and msgs[0]["role"] == "user":
        keys.append(msgs[0]["content"])
    return keys


def answer(sim: Simulator, api: str, model: str, messages: list[dict[str, Any]]) -> str:
    """What ``model`` answers to ``messages`` (see the module docstring)."""
    job, step = _model_job(sim, api, model)
    known = _known(sim, api)
    reference = next((known[k] for k in _keys(messages) if k in known), None)
    if reference is None:
        return WRONG
    seed = hashlib.sha256(f"{model}\0{_keys(messages)[0]}".encode()).digest()
    draw = int.from_bytes(seed[:8], "big") / 2**64
    return reference if draw < correct_probability(sim, job, step) else WRONG


def chat_completion(sim: Simulator, api: str, body: Any, deployment: str | None) -> dict[str, Any]:
    """The response of ``POST /chat/completions`` (``deployment``: Azure's, from the path)."""
    if not isinstance(body, dict):
        raise ApiError(400, "The request body must be a JSON object.")
    messages = body.get("messages")
    if (
        not isinstance(messages, list)
        or not messages
        or not all(isinstance(m, dict) for m in messages)
    ):
        raise ApiError(400, "'messages' must be a non-empty array of objects", param="messages")
    name = deployment or body.get("model")
    if not isinstance(name, str) or not name:
        raise ApiError(400, "you must provide a model parameter", param="model")
    model = name
    if api == "azure":
        found = sim.deployments.get(name)
        if found is None:
            raise ApiError(404, f"The API deployment {name} does not exist.",
                           azure_code="DeploymentNotFound")  # fmt: skip
        if _rendered(sim, found)["properties"]["provisioningState"] != "Succeeded":
            raise ApiError(404, f"The API deployment {name} is not ready yet (Creating).",
                           azure_code="DeploymentNotReady")  # fmt: skip
        model = found["properties"]["model"]["name"]
    text = answer(sim, api, model, messages)
    max_tokens = body.get("max_tokens") or body.get("max_completion_tokens")
    finish = "stop"
    if isinstance(max_tokens, int) and max_tokens > 0 and len(text.split()) > max_tokens:
        text, finish = " ".join(text.split()[:max_tokens]), "length"
    prompt_tokens = sum(len(str(m.get("content") or "").split()) for m in messages)
    n = len(text.split())
    digest = hashlib.sha256(f"{model}{text}{sim.clock.now()}".encode()).hexdigest()[:24]
    return {
        "id": f"chatcmpl-{digest}",
        "object": "chat.completion",
        "created": int(sim.clock.now()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text, "refusal": None},
                "finish_reason": finish,
                "logprobs": None,
            }
        ],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": n,
                  "total_tokens": prompt_tokens + n},
    }  # fmt: skip


def _rendered(sim: Simulator, record: dict[str, Any]) -> dict[str, Any]:
    """``record`` as ARM shows it now: ``Creating`` until its ready time, then ``Succeeded``."""
    shown = {k: v for k, v in record.items() if k != "ready_at"}
    state = "Succeeded" if sim.clock.now() >= record["ready_at"] else "Creating"
    shown["properties"] = {**record["properties"], "provisioningState": state}
    return shown


def deployment(
    sim: Simulator, method: str, name: str, body: Any, resource: str = ""
) -> tuple[int, dict[str, Any] | None]:
    """Azure's deployment ``name``: create (PUT), read (GET) or delete (DELETE); ``resource``
    is the ARM id of its account (``/subscriptions/.../accounts/{account}``)."""
    found = sim.deployments.get(name)
    if method == "DELETE" and found is None:
        return 204, None  # ARM: deleting what is not there succeeds
    if method == "GET":
        if found is None:
            raise ApiError(404, f"The deployment {name} does not exist.",
                           azure_code="DeploymentNotFound")  # fmt: skip
        return 200, _rendered(sim, found)
    if method == "DELETE":
        del sim.deployments[name]
        return 204, None
    props = body.get("properties") if isinstance(body, dict) else None
    model = props.get("model") if isinstance(props, dict) else None
    sku = body.get("sku") if isinstance(body, dict) else None
    if not isinstance(model, dict) or not isinstance(model.get("name"), str):
        raise ApiError(400, "properties.model.name is required.", param="properties.model.name")
    sku_name = sku.get("name") if isinstance(sku, dict) else None
    if sku_name not in _SKUS:
        raise ApiError(400, f"sku.name must be one of {', '.join(_SKUS)}.", param="sku.name")
    _model_job(sim, "azure", model["name"])
    record = {
        "id": f"{resource}/deployments/{name}",
        "name": name,
        "type": "Microsoft.CognitiveServices/accounts/deployments",
        "sku": {
            "name": sku_name,
            "capacity": sku.get("capacity", 1) if isinstance(sku, dict) else 1,
        },
        "properties": {
            "model": {
                "format": str(model.get("format") or "OpenAI"),
                "name": model["name"],
                "version": str(model.get("version") or "1"),
            },
        },
        "ready_at": sim.clock.now() + DEPLOY_SECONDS,
    }
    sim.deployments[name] = record
    return (200 if found else 201), _rendered(sim, record)

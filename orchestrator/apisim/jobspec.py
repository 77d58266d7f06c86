"""Job creation: validating the request body, analysing the data, planning the job.

The request rules follow the OpenAI spec (``CreateFineTuningJobRequest``) and Azure's
2024-10-21 ``FineTuningJobCreation`` (no ``method``, no ``metadata``); the data analysis uses
the package's own exact token counts (:func:`orchestrator.data.checks.check_file`).
"""

from __future__ import annotations

import hashlib
import math
import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.apisim.errors import ApiError
from orchestrator.apisim.faults import JobFault
from orchestrator.apisim.store import FileRecord, JobRecord
from orchestrator.apisim.surface import Resolved, resolve
from orchestrator.core.errors import OrchestratorError

__all__ = [
    "MAX_STEPS",
    "CreateSpec",
    "analyse",
    "check_steps",
    "new_job",
    "parse_create",
    "plan_failure",
    "resolved",
]

MIN_EXAMPLES = 10
PURPOSES = ("assistants", "batch", "fine-tune", "vision", "user_data", "evals")
_FIELDS = {
    "openai": {
        "model", "training_file", "validation_file", "hyperparameters", "method", "suffix",
        "seed", "integrations", "metadata",
    },
    "azure": {
        "model", "training_file", "validation_file", "hyperparameters", "method", "suffix",
        "seed", "trainingType",
    },
}  # fmt: skip
#: the message Azure answers a create without ``trainingType`` with (reference notes (docs):
#: the text is Azure's, from MS Q&A; that a missing trainingType causes it is litellm's report)
NO_TRAINING_TYPE = "The specified base model does not support fine-tuning."
_LIMITS = {"n_epochs": (1, 50), "batch_size": (1, 256)}
#: training steps one simulated job may take (its curve is kept in memory)
MAX_STEPS = 1_000_000
_AZURE_SUFFIX = re.compile(r"^[A-Za-z0-9_-]{1,40}$")


@dataclass(frozen=True)
class CreateSpec:
    """A validated create request."""

    model: str
    training_file: str
    validation_file: str | None
    hyperparameters: dict[str, Any]
    seed: int
    suffix: str | None
    metadata: dict[str, str] | None
    training_type: str | None = None


def modern(api: str, version: str) -> bool:
    """Does this surface take ``method`` and need ``trainingType``? OpenAI, Azure's v1 and
    dated versions after 2024-10-21 (a guess: the notes say "newer versions")."""
    return api == "openai" or version == "v1" or version[:10] > "2024-10-21"


def check_purpose(purpose: str) -> None:
    if purpose not in PURPOSES:
        raise ApiError(400, f"Invalid purpose: {purpose!r}", param="purpose")


def _bad(message: str, param: str | None = None, code: str | None = None) -> ApiError:
    return ApiError(400, message, param=param, code=code)


def _hyperparameters(api: str, body: dict[str, Any], version: str = "") -> dict[str, Any]:
    raw: Any = body.get("hyperparameters")
    where = "hyperparameters"
    method = body.get("method") if modern(api, version) else None
    if method is not None:
        if not isinstance(method, dict) or method.get("type") != "supervised":
            kind = method.get("type") if isinstance(method, dict) else method
            raise _bad(f"The simulator runs supervised jobs only, not {kind!r}.", "method.type")
        supervised = method.get("supervised") or {}
        if not isinstance(supervised, dict):
            raise _bad("Invalid type for 'method.supervised': expected an object.",
                       "method.supervised")  # fmt: skip
        raw = supervised.get("hyperparameters")
        where = "method.supervised.hyperparameters"
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise _bad(f"Invalid type for '{where}': expected an object.", where)
    out: dict[str, Any] = {}
    for name, value in raw.items():
        param = f"{where}.{name}"
        if name not in ("n_epochs", "batch_size", "learning_rate_multiplier"):
            raise _bad(f"Unknown parameter: '{param}'.", param, "unknown_parameter")
        if value == "auto" and api == "openai":
            out[name] = "auto"
            continue
        if name in _LIMITS:
            low, high = _LIMITS[name]
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise _bad(f"Invalid '{param}': expected an integer from {low} to {high}.", param)
        elif (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
            or value <= 0
        ):
            raise _bad(f"Invalid '{param}': expected a number greater than 0.", param)
        out[name] = value
    return out


def _training_type(api: str, body: dict[str, Any], version: str) -> str | None:
    from orchestrator.catalog.azure import TIER_NAMES

    if api != "azure":
        return None
    value = body.get("trainingType")
    if value is None:
        if modern(api, version):
            raise ApiError(400, NO_TRAINING_TYPE, azure_code="invalidPayload")
        return None
    if value not in TIER_NAMES:  # the wording is a guess
        raise _bad(
            f"Invalid value for 'trainingType': {value!r}. Supported values: "
            + ", ".join(TIER_NAMES),
            "trainingType",
        )
    return str(value)


def parse_create(api: str, body: Any, version: str = "") -> CreateSpec:
    """Check a create body the way the provider does; raise :class:`ApiError` (400).
    ``version``: Azure's ``api-version`` or ``v1``."""
    if not isinstance(body, dict):
        raise _bad("The request body must be a JSON object.")
    fields = _FIELDS[api] if modern(api, version) else _FIELDS[api] - {"method"}
    unknown = sorted(set(body) - fields)
    if unknown:
        raise _bad(f"Unrecognized request argument supplied: {', '.join(unknown)}", unknown[0])
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _bad("Missing required parameter: 'model'.", "model")
    training_file = body.get("training_file")
    if not isinstance(training_file, str) or not training_file:
        raise _bad("Missing required parameter: 'training_file'.", "training_file")
    validation_file = body.get("validation_file")
    if validation_file is not None and not isinstance(validation_file, str):
        raise _bad("Invalid 'validation_file': expected a file id.", "validation_file")
    seed = body.get("seed")
    if seed is None:
        seed = secrets.randbelow(2**31)
    elif isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= 2147483647:
        raise _bad("Invalid 'seed': expected an integer from 0 to 2147483647.", "seed")
    suffix = body.get("suffix")
    if suffix is not None:
        ok = (
            isinstance(suffix, str) and 1 <= len(suffix) <= 64
            if api == "openai"
            else isinstance(suffix, str) and _AZURE_SUFFIX.match(suffix) is not None
        )
        if not ok:
            raise _bad(f"Invalid 'suffix': {suffix!r}.", "suffix")
    metadata = body.get("metadata") if api == "openai" else None
    if metadata is not None:
        if not isinstance(metadata, dict) or len(metadata) > 16:
            raise _bad("Invalid 'metadata': at most 16 string pairs.", "metadata")
        for k, v in metadata.items():
            if not isinstance(v, str) or len(k) > 64 or len(v) > 512:
                raise _bad(f"Invalid 'metadata.{k}': keys <= 64, values <= 512 chars.", "metadata")
    return CreateSpec(
        model=model,
        training_file=training_file,
        validation_file=validation_file,
        hyperparameters=_hyperparameters(api, body, version),
        seed=seed,
        suffix=suffix,
        metadata=dict(metadata) if metadata is not None else None,
        training_type=_training_type(api, body, version),
    )


def analyse(record: FileRecord, path: Path, model: str) -> dict[str, Any]:
    """Examples, billed tokens and the first format error of an uploaded file (cached)."""
    from orchestrator.catalog.azure import azure_model
    from orchestrator.catalog.tokens import (
        OpenAIExampleCounter,
        TokenModel,
        model_info,
        openai_counter,
    )
    from orchestrator.data.checks import check_file

    counter: Any
    open_weight = azure_model(model)
    if open_weight is not None and open_weight.open_weight:
        counter = OpenAIExampleCounter("gpt-4o")  # o200k_base counts (an estimate)
        counter.max_tokens_per_example = open_weight.context
        info = TokenModel(open_weight.name, counter.name, counter.max_tokens_per_example)
    else:
        try:
            info = model_info(model)
        except OrchestratorError as exc:
            raise ApiError(
                400,
                f"Model {model} is not available for fine-tuning or does not exist.",
                param="model",
                code="model_not_available",
            ) from exc
        counter = openai_counter(info.name)
    key = f"{info.encoding}:{info.max_tokens_per_example}"
    if key not in record.analysis:
        stats, log, _ = check_file(path, counter, model=info.name)
        errors = [f for f in log.findings() if f.severity == "error"]
        first = None
        if errors:
            line = f"Example {errors[0].lines[0]}: " if errors[0].lines else ""
            first = f"Invalid file format. {line}{errors[0].message}"
        record.analysis[key] = {
            "n_examples": stats.n_examples,
            "billed_tokens": stats.billed_tokens,
            "sha256": stats.sha256,
            "error": first,
        }
    return record.analysis[key]


def new_job(
    api: str,
    job_id: str,
    nth: int,
    spec: CreateSpec,
    analysis: dict[str, Any],
    n_valid: int,
    now: float,
) -> JobRecord:
    """A job record with its hyper-parameters resolved against the data."""
    n = int(analysis["n_examples"])
    hp = resolve(spec.hyperparameters, max(1, n))
    tokens_per_example = int(analysis["billed_tokens"]) / max(1, n)
    hexid = job_id.removeprefix("ftjob-")
    if api == "openai":
        model_id = f"ft:{spec.model}:apisim:{spec.suffix or ''}:{hexid[:8]}"
    else:
        model_id = f"{spec.model}.ft-{hexid}" + (f"-{spec.suffix}" if spec.suffix else "")
    family = spec.model.split(".ft-")[0]
    return JobRecord(
        id=job_id,
        api=api,
        nth=nth,
        model=spec.model,
        training_file=spec.training_file,
        validation_file=spec.validation_file,
        seed=spec.seed,
        suffix=spec.suffix,
        metadata=spec.metadata,
        requested=spec.hyperparameters,
        created_at=now,
        fine_tuned_model=model_id,
        training_type=spec.training_type,
        n_epochs=hp.n_epochs,
        batch_size=hp.batch_size,
        learning_rate_multiplier=hp.learning_rate_multiplier,
        n_train=max(1, n),
        billed_tokens=int(analysis["billed_tokens"]),
        data_key=hashlib.sha256(f"{analysis['sha256']}|{family}".encode()).hexdigest(),
        step_seconds=round(0.5 + hp.batch_size * tokens_per_example / 8000, 4),
    )


def check_steps(job: JobRecord) -> None:
    """Refuse a job longer than the simulator keeps (:data:`MAX_STEPS` steps)."""
    if job.total_steps > MAX_STEPS:
        raise _bad(
            f"The simulator runs at most {MAX_STEPS:,} training steps per job; this one needs "
            f"{job.total_steps:,} (use a larger batch_size or fewer n_epochs).",
            "hyperparameters",
        )


def plan_failure(
    job: JobRecord,
    analysis: dict[str, Any],
    valid: FileRecord | None,
    n_valid: int,
    fault: JobFault | None,
) -> None:
    """Decide now whether (and when) the job fails: bad data first, then configured faults."""
    n = int(analysis["n_examples"])
    if analysis["error"]:
        job.fail_code, job.fail_param = "invalid_training_file", "training_file"
        job.fail_message = f"The job failed due to an invalid training file. {analysis['error']}"
    elif n < MIN_EXAMPLES:
        job.fail_code, job.fail_param = "invalid_n_examples", "training_file"
        job.fail_message = (
            f"Training file has {n} example(s), but must have at least {MIN_EXAMPLES} examples"
        )
    elif valid is not None and n_valid < 1:
        job.fail_code, job.fail_param = "invalid_validation_file", "validation_file"
        job.fail_message = "The job failed due to an invalid validation file. It has no examples."
    elif fault is not None:
        job.fail_code, job.fail_message, job.fail_param = fault.code, fault.message, fault.param
        if fault.at_step is not None:
            job.fail_at_step = max(1, min(fault.at_step, job.total_steps))


def resolved(job: JobRecord) -> Resolved:
    return Resolved(job.n_epochs, job.batch_size, job.learning_rate_multiplier)

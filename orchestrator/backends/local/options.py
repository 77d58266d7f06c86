"""The local backend's options, validated once at the edge.

Options come from the sweep file's ``backend.options`` (backend-wide defaults) and from
:attr:`TrainingRequest.options` (per job, overriding them)::

    max_device_batch: 8            # examples per forward pass; larger batches accumulate gradients
    base_learning_rate: 1.0e-4     # lr = base x learning_rate_multiplier (default: see below)
    lora: {r: 8, alpha: 16, dropout: 0.05, target_modules: all-linear}   # or true for defaults
    valid_every: 10                # steps between valid_loss points (default: ~20 per run)
    valid_sample: 16               # validation examples behind valid_loss
    max_length: 1024               # tokens per example (longer ones are truncated)
    device: auto                   # auto (CUDA when present), cpu, cuda, cuda:1, mps
    torch_threads: 1               # CPU threads per job (default: torch's choice)
    save_model: true               # keep the final model (or LoRA adapter) in the job folder
    checkpoints: auto              # also keep the models of up to N epochs before the last;
                                   # auto: every earlier epoch's LoRA adapter, or for a full
                                   # fine-tune the best earlier epoch so far (full_valid_loss);
                                   # none with save_model: false
    eval_generations: 0            # at each epoch end, greedily generate the completions of up
                                   # to N validation examples: full_valid_exact_match and
                                   # full_valid_label_accuracy (objectives to maximize)
    # -- speed and memory (the libraries underneath; defaults right for the device) --
    precision: auto                # auto (bf16 autocast on CUDA with bf16, fp16 with loss
                                   # scaling on older CUDA, fp32 elsewhere), fp32, bf16, fp16
    attn_implementation: null      # transformers' attn_implementation (default: sdpa where the
                                   # model has it), e.g. eager, sdpa, flash_attention_2
    gradient_checkpointing: auto   # true, false, or auto: off, switched on by a CUDA
                                   # out-of-memory error at one example per pass
    packing: auto                  # pack each pass's examples into rows with position ids
                                   # instead of padding them (auto: for model types known to
                                   # honour packed position ids)
    compile: false                 # torch.compile the decoder (opt-in): true (inductor) or a
                                   # torch.compile backend name, e.g. aot_eager, cudagraphs
    load_in_4bit: false            # QLoRA: the frozen base in 4-bit NF4 (bitsandbytes, CUDA,
                                   # needs lora)
    loss_chunk: null               # positions per checkpointed chunk of the LM head and loss
                                   # (default: one pass unless its fp32 logits exceed 1 GiB)
    peak_tflops: null              # the device's dense bf16 peak for mfu (default: known GPUs)
    # -- scheduling on GPUs (docs/local-trainer.md, "GPUs") --
    devices: [0, 1]                # GPUs jobs may lease (default: every CUDA device found)
    gpus_per_trial: 1              # GPUs per job (default 1 where there are GPUs); > 1: DDP
    gpu_memory_gb: 24              # memory of each GPU in GiB (default: as CUDA reports it)
    epoch_handshake_s: 60          # at an epoch's end, wait at most this long for the engine
                                   # to read it (and prune); 0: never wait
    # -- where jobs run (docs/scaling.md, "Ray") --
    executor: here                 # here (a process on this machine), ray, or a plugin's name
    ray_address: null              # the Ray dashboard, http://HOST:8265 (default: RAY_ADDRESS)
    ray_num_cpus: 1                # CPUs each Ray job reserves
    ray_memory_gb: null            # memory each Ray job reserves, in GiB
    model_dir: null                # where Ray jobs write models: a path every node shares, or
                                   # an fsspec URL such as s3://bucket/models (needed by ray)

Base learning rates (``lr = base x learning_rate_multiplier``): :data:`TINY_LR` for the
built-in ``tiny`` model, :data:`LORA_LR` with LoRA, :data:`FULL_LR` for a full fine-tune.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeInt,
    ValidationInfo,
    field_validator,
    model_validator,
)

from orchestrator.backends.base import BackendOptions
from orchestrator.backends.local.precision import PRECISIONS, qlora_problem
from orchestrator.core.errors import UnsupportedParameterError

__all__ = [
    "DEFAULT_PROMPT_LOSS_WEIGHT",
    "FULL_LR",
    "LORA_LR",
    "TINY_LR",
    "LocalBackendOptions",
    "LocalOptions",
    "LoraOptions",
    "LoraSpec",
    "device_conflict",
    "executor_problem",
]

TINY_LR = 1e-3
FULL_LR = 2e-5
LORA_LR = 2e-4
#: used when a request leaves ``prompt_loss_weight`` unset (the design's fixed default)
DEFAULT_PROMPT_LOSS_WEIGHT = 0.1


class LoraSpec(BaseModel):
    """``lora:`` in the sweep file (a mapping; ``true`` means every default)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    r: int = Field(default=8, ge=1)
    alpha: int = Field(default=16, ge=1)
    dropout: float = Field(default=0.0, ge=0, lt=1)
    target_modules: str | list[str] = "all-linear"


class LocalBackendOptions(BackendOptions):
    """The sweep file's ``backend.options`` for ``local`` (see the module docstring)."""

    max_device_batch: int | None = Field(default=None, ge=1)
    base_learning_rate: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    lora: bool | LoraSpec | None = None
    valid_every: int | None = Field(default=None, ge=1)
    valid_sample: int = Field(default=16, ge=1)
    max_length: int | None = Field(default=None, ge=1)
    device: str = Field(default="auto", pattern=r"^(auto|cpu|mps|cuda(:\d+)?)$")
    torch_threads: int | None = Field(default=None, ge=1)
    save_model: bool = True
    checkpoints: Annotated[int, Field(ge=0)] | Literal["auto"] = "auto"
    eval_generations: int = Field(default=0, ge=0)
    #: the sweep's ``evaluate:`` block, set by the plan when the objective is one of its
    #: scores (:mod:`.taskeval`); not written in the sweep file's options
    evaluate: dict[str, Any] | None = None
    # -- speed and memory --
    precision: str = Field(default="auto", pattern=r"^(auto|fp32|bf16|fp16)$")
    attn_implementation: str | None = Field(default=None, min_length=1)
    gradient_checkpointing: bool | Literal["auto"] = "auto"
    packing: bool | Literal["auto"] = "auto"
    compile: bool | str = False
    load_in_4bit: bool = False
    loss_chunk: int | None = Field(default=None, ge=1)
    peak_tflops: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    # -- scheduling on GPUs --
    devices: list[NonNegativeInt] | None = Field(default=None, min_length=1)
    gpus_per_trial: int | None = Field(default=None, ge=1)
    gpu_memory_gb: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    epoch_handshake_s: float = Field(default=60.0, ge=0, allow_inf_nan=False)
    # -- where jobs run --
    executor: str = Field(default="here", pattern=r"^[a-z][a-z0-9_-]*$")
    ray_address: str | None = Field(default=None, min_length=1)
    ray_num_cpus: float = Field(default=1.0, gt=0, allow_inf_nan=False)
    ray_memory_gb: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    model_dir: str | None = Field(default=None, min_length=1)

    @field_validator("load_in_4bit")
    @classmethod
    def _qlora_can_run(cls, value: bool, info: ValidationInfo) -> bool:
        if value:
            problem = qlora_problem(bool(info.data.get("lora")), info.data.get("device", "auto"))
            if problem:
                raise ValueError(problem)
        return value

    @model_validator(mode="after")
    def _devices_agree(self) -> LocalBackendOptions:
        problem = device_conflict(self.device, self.devices, self.gpus_per_trial)
        if problem is not None:
            raise ValueError(problem)
        problem = executor_problem(self.executor, self.model_dir)
        if problem is not None:
            raise ValueError(problem)
        return self

    def local(self) -> LocalOptions:
        """As the trainer's :class:`LocalOptions`."""
        return LocalOptions.parse(self.model_dump(mode="json", exclude_defaults=True))


@dataclass(frozen=True)
class LoraOptions:
    """LoRA adapter settings (peft ``LoraConfig``)."""

    r: int = 8
    alpha: int = 16
    dropout: float = 0.0
    target_modules: str | tuple[str, ...] = "all-linear"


@dataclass(frozen=True)
class LocalOptions:
    """Validated options of one local job. See the module docstring for each field."""

    max_device_batch: int | None = None
    base_learning_rate: float | None = None
    lora: LoraOptions | None = None
    valid_every: int | None = None
    valid_sample: int = 16
    max_length: int | None = None
    device: str = "auto"
    torch_threads: int | None = None
    save_model: bool = True
    checkpoints: int | str = "auto"
    eval_generations: int = 0
    evaluate: dict[str, Any] | None = None
    # -- speed and memory --
    precision: str = "auto"
    attn_implementation: str | None = None
    gradient_checkpointing: bool | str = "auto"
    packing: bool | str = "auto"
    compile: bool | str = False
    load_in_4bit: bool = False
    loss_chunk: int | None = None
    peak_tflops: float | None = None
    # -- scheduling on GPUs --
    devices: tuple[int, ...] | None = None
    gpus_per_trial: int | None = None
    gpu_memory_gb: float | None = None
    epoch_handshake_s: float = 60.0
    # -- where jobs run --
    executor: str = "here"
    ray_address: str | None = None
    ray_num_cpus: float = 1.0
    ray_memory_gb: float | None = None
    model_dir: str | None = None

    @classmethod
    def parse(cls, raw: Mapping[str, Any], base: LocalOptions | None = None) -> LocalOptions:
        """Options from a mapping laid over ``base``; a bad key or value raises
        :class:`UnsupportedParameterError` naming it."""
        opts = base or cls()
        known = set(cls.__dataclass_fields__)
        changes: dict[str, Any] = {}
        for key, value in raw.items():
            if key not in known:
                raise UnsupportedParameterError(
                    f"local backend: unknown option {key!r}; known: {', '.join(sorted(known))}"
                )
            changes[key] = _parse_field(key, value)
        opts = replace(opts, **changes)
        if opts.load_in_4bit and ("load_in_4bit" in changes or "lora" in changes):
            problem = qlora_problem(opts.lora is not None, opts.device)
            if problem:
                raise UnsupportedParameterError(f"local backend: option 'load_in_4bit' {problem}")
        problem = device_conflict(opts.device, opts.devices, opts.gpus_per_trial)
        if problem is not None:
            raise UnsupportedParameterError(f"local backend: {problem}")
        return opts

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form that :meth:`parse` reads back."""
        data = asdict(self)
        if self.devices is not None:
            data["devices"] = list(self.devices)
        if self.lora is not None:
            data["lora"] = asdict(self.lora)
            if isinstance(self.lora.target_modules, tuple):
                data["lora"]["target_modules"] = list(self.lora.target_modules)
        return data

    def learning_rate(self, multiplier: float, *, tiny: bool) -> float:
        """``base x multiplier`` with the base chosen as documented above."""
        if self.base_learning_rate is not None:
            base = self.base_learning_rate
        elif tiny:
            base = TINY_LR
        else:
            base = LORA_LR if self.lora is not None else FULL_LR
        return base * multiplier


def device_conflict(
    device: str, devices: Sequence[int] | None, gpus_per_trial: int | None
) -> str | None:
    """Why ``device``, ``devices`` and ``gpus_per_trial`` contradict each other, or None.

    Leased GPUs reach a job as ``CUDA_VISIBLE_DEVICES``, where the job sees them as
    ``cuda:0``, ``cuda:1``...: so leasing goes with ``device: auto`` or ``cuda``, never with
    ``cpu``, ``mps`` or one named ``cuda:N``."""
    leasing = devices is not None or gpus_per_trial is not None
    if leasing and device not in ("auto", "cuda"):
        return (
            f"devices and gpus_per_trial lease GPUs, which device {device!r} does not use "
            "(use device: auto or cuda, and devices: [N] to pick GPU N)"
        )
    if devices is not None and len(set(devices)) != len(devices):
        return f"devices lists a GPU twice: {list(devices)}"
    if devices is not None and gpus_per_trial is not None and gpus_per_trial > len(devices):
        return f"gpus_per_trial {gpus_per_trial} is more than the {len(devices)} devices listed"
    return None


def _bad(key: str, what: str, value: Any) -> UnsupportedParameterError:
    return UnsupportedParameterError(f"local backend: option {key!r} must be {what}, got {value!r}")


def _positive_int(key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise _bad(key, "an integer >= 1", value)
    return value


def _parse_field(key: str, value: Any) -> Any:
    if value is None and key in {
        "max_device_batch",
        "base_learning_rate",
        "lora",
        "valid_every",
        "max_length",
        "torch_threads",
        "attn_implementation",
        "loss_chunk",
        "peak_tflops",
        "devices",
        "gpus_per_trial",
        "gpu_memory_gb",
        "ray_address",
        "ray_memory_gb",
        "model_dir",
    }:
        return None
    if key in _SPEED_FIELDS:
        return _parse_speed_field(key, value)
    if key in _GPU_FIELDS:
        return _parse_gpu_field(key, value)
    if key in _EXECUTOR_FIELDS:
        return _parse_executor_field(key, value)
    if key in {"max_device_batch", "valid_every", "valid_sample", "max_length", "torch_threads"}:
        return _positive_int(key, value)
    if key == "base_learning_rate":
        if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
            raise _bad(key, "a number > 0", value)
        return float(value)
    if key == "device":
        if not isinstance(value, str) or value.split(":")[0] not in {"auto", "cpu", "cuda", "mps"}:
            raise _bad(key, "auto, cpu, cuda, cuda:N or mps", value)
        return value
    if key == "evaluate":
        if value is not None and not isinstance(value, dict):
            raise _bad(key, "the sweep's evaluate: block (a mapping)", value)
        return value
    if key == "checkpoints" and value == "auto":
        return value
    if key in ("checkpoints", "eval_generations"):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise _bad(key, ("auto or " if key == "checkpoints" else "") + "an integer >= 0", value)
        return value
    if key == "save_model":
        if not isinstance(value, bool):
            raise _bad(key, "true or false", value)
        return value
    return _parse_lora(value)


_SPEED_FIELDS = frozenset(
    {
        "precision",
        "attn_implementation",
        "gradient_checkpointing",
        "packing",
        "compile",
        "load_in_4bit",
        "loss_chunk",
        "peak_tflops",
    }
)


def _parse_speed_field(key: str, value: Any) -> Any:
    """The speed and memory options (one block, see the module docstring)."""
    if key == "precision":
        if value not in PRECISIONS:
            raise _bad(key, " or ".join(PRECISIONS), value)
        return value
    if key == "attn_implementation":
        if not isinstance(value, str) or not value:
            raise _bad(key, "an attention implementation name, e.g. sdpa", value)
        return value
    if key in ("gradient_checkpointing", "packing"):
        if not isinstance(value, bool) and value != "auto":
            raise _bad(key, "true, false or auto", value)
        return value
    if key == "compile":
        if not isinstance(value, bool) and not (isinstance(value, str) and value):
            raise _bad(key, "true, false or a torch.compile backend name", value)
        return value
    if key == "load_in_4bit":
        if not isinstance(value, bool):
            raise _bad(key, "true or false", value)
        return value
    if key == "loss_chunk":
        return _positive_int(key, value)
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < math.inf:
        raise _bad(key, "a number > 0 (TFLOP/s)", value)
    return float(value)


_GPU_FIELDS = frozenset({"devices", "gpus_per_trial", "gpu_memory_gb", "epoch_handshake_s"})


def _parse_gpu_field(key: str, value: Any) -> Any:
    """The scheduling-on-GPUs options (one block, see the module docstring)."""
    if key == "devices":
        if not isinstance(value, list | tuple) or not value:
            raise _bad(key, "a list of GPU numbers (integers >= 0)", value)
        if any(isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in value):
            raise _bad(key, "a list of GPU numbers (integers >= 0)", value)
        return tuple(value)
    if key == "gpus_per_trial":
        return _positive_int(key, value)
    low = "> 0" if key == "gpu_memory_gb" else ">= 0"
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
        raise _bad(key, f"a number {low}", value)
    if not (value > 0 if key == "gpu_memory_gb" else value >= 0) or value == float("inf"):
        raise _bad(key, f"a number {low}", value)
    return float(value)


_EXECUTOR_FIELDS = frozenset(
    {"executor", "ray_address", "ray_num_cpus", "ray_memory_gb", "model_dir"}
)


def _parse_executor_field(key: str, value: Any) -> Any:
    """Where jobs run (one block, see the module docstring)."""
    if key in ("ray_num_cpus", "ray_memory_gb"):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _bad(key, "a number > 0", value)
        if not 0 < value < math.inf:
            raise _bad(key, "a number > 0", value)
        return float(value)
    if not isinstance(value, str) or not value:
        raise _bad(key, "a non-empty string", value)
    return value


def executor_problem(executor: str, model_dir: str | None) -> str | None:
    """Why ``executor`` cannot run jobs as configured, or None: Ray jobs need ``model_dir``
    (they run on other machines, so the model cannot stay in a job folder here)."""
    if executor == "ray" and model_dir is None:
        return (
            "executor ray needs model_dir: a path every Ray node shares, "
            "or an fsspec URL such as s3://bucket/models"
        )
    return None


def _parse_lora(value: Any) -> LoraOptions | None:
    if value is True:
        return LoraOptions()
    if value is False:
        return None
    if isinstance(value, LoraOptions):
        return value
    if not isinstance(value, Mapping):
        raise _bad("lora", "true, false or a mapping {r, alpha, dropout, target_modules}", value)
    fields = set(LoraOptions.__dataclass_fields__)
    unknown = sorted(set(value) - fields)
    if unknown:
        raise _bad("lora", f"a mapping with keys among {sorted(fields)}", unknown)
    lora = LoraOptions()
    if "r" in value:
        lora = replace(lora, r=_positive_int("lora.r", value["r"]))
    if "alpha" in value:
        lora = replace(lora, alpha=_positive_int("lora.alpha", value["alpha"]))
    if "dropout" in value:
        dropout = value["dropout"]
        if isinstance(dropout, bool) or not isinstance(dropout, int | float):
            raise _bad("lora.dropout", "a number in [0, 1)", dropout)
        if not 0 <= dropout < 1:
            raise _bad("lora.dropout", "a number in [0, 1)", dropout)
        lora = replace(lora, dropout=float(dropout))
    if "target_modules" in value:
        targets = value["target_modules"]
        if isinstance(targets, str) and targets:
            lora = replace(lora, target_modules=targets)
        elif (
            isinstance(targets, list | tuple)
            and targets
            and all(isinstance(t, str) and t for t in targets)
        ):
            lora = replace(lora, target_modules=tuple(targets))
        else:
            raise _bad("lora.target_modules", "'all-linear' or a list of module names", targets)
    return lora

"""Number formats a local job trains in, and whether this machine can run QLoRA.

Option ``precision`` (see :mod:`.options`):

* ``auto``: bf16 autocast on a CUDA device that supports bf16; fp16 autocast with dynamic
  loss scaling (``torch.amp.GradScaler``) on an older CUDA device; fp32 on CPU and MPS.
* ``fp32``, ``bf16``, ``fp16``: forced. bf16 and fp16 also run on CPU (torch's CPU autocast
  and CPU ``GradScaler``), which is how these paths are tested without a GPU.

The master weights and the optimizer stay fp32 in every mode; with LoRA the frozen base
weights are loaded in the autocast type (peft keeps the adapters fp32). Mixed precision comes
from ``torch.amp`` directly rather than accelerate's ``Accelerator``: its process-wide state
refuses a second run in the same process with another ``mixed_precision``, and the trainer is
also run in-process (tests, benchmarks).

Heavy libraries are imported inside the functions.
"""

from __future__ import annotations

import contextlib
import importlib.util
from dataclasses import dataclass
from typing import Any

__all__ = ["PRECISIONS", "Precision", "qlora_problem", "resolve_precision"]

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


@dataclass(frozen=True)
class Precision:
    """The resolved number format of one run."""

    #: ``fp32``, ``bf16`` or ``fp16``
    name: str
    #: the torch dtype of autocast (None for fp32)
    dtype: Any
    device_type: str

    def autocast(self) -> Any:
        """A fresh context manager for one forward pass."""
        if self.dtype is None:
            return contextlib.nullcontext()
        import torch

        return torch.autocast(self.device_type, dtype=self.dtype)

    def scaler(self) -> Any:
        """A ``GradScaler`` for fp16 (dynamic loss scaling), else None."""
        if self.name != "fp16":
            return None
        import torch

        return torch.amp.GradScaler(self.device_type)

    def frozen_dtype(self, lora: bool) -> Any:
        """The dtype to load the model in: the autocast type for a LoRA base, else fp32."""
        import torch

        return self.dtype if lora and self.dtype is not None else torch.float32


def resolve_precision(option: str, device: Any) -> Precision:
    """The precision ``option`` means on ``device`` (a ``torch.device``)."""
    import torch

    name = option
    if option == "auto":
        name = "fp32"
        if device.type == "cuda":
            name = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    dtypes = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
    return Precision(name, dtypes[name], device.type)


def qlora_problem(lora: bool, device: str) -> str | None:
    """Why ``load_in_4bit`` cannot run here with these options, or None when it can.

    Checked where options are validated (planning a sweep, submitting a job): QLoRA needs
    LoRA, a CUDA device and bitsandbytes. Imports torch only to look for CUDA.
    """
    if not lora:
        return "needs lora (QLoRA trains LoRA adapters on a 4-bit base)"
    if device.split(":")[0] not in ("auto", "cuda"):
        return f"needs a CUDA device (device is {device!r})"
    if importlib.util.find_spec("bitsandbytes") is None:
        return "needs bitsandbytes (pip install bitsandbytes), which is not installed"
    import torch

    if not torch.cuda.is_available():
        return "needs a CUDA device, and this machine has none"
    return None

"""A loaded model made ready to train: LoRA (peft), QLoRA preparation, gradient
checkpointing (transformers), ``torch.compile``, and whether its passes may be packed.

Each is a library call; this module only decides when to make it:

* ``lora``: ``peft.get_peft_model`` with ``LoraConfig`` (adapters stay fp32);
* ``load_in_4bit``: ``peft.prepare_model_for_kbit_training`` before the adapters;
* ``gradient_checkpointing``: ``model.gradient_checkpointing_enable`` with the non-reentrant
  checkpoint (no ``enable_input_require_grads`` needed under LoRA); ``auto`` leaves it off and
  the trainer switches it on when a CUDA out-of-memory error hits at one example per pass;
* ``compile``: ``torch.compile`` of the decoder module, in place, with dynamic shapes (``true``:
  inductor; a string: that torch.compile backend, e.g. ``aot_eager`` traces forward and
  backward without generating code, which is how the option is tested on CPU);
* ``packing``: ``auto`` packs for model types whose attention goes through transformers'
  mask utilities, which read restarting position ids as separate sequences.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:  # pydantic-free at run time: benchmarks/gpu_check.py runs without it
    from orchestrator.backends.local.options import LocalOptions

__all__ = ["PACKABLE_MODEL_TYPES", "enable_checkpointing", "packs", "prepare_model"]

#: model types known to honour packed position ids (block-diagonal attention) in transformers 5
PACKABLE_MODEL_TYPES = frozenset(
    {
        "llama",
        "mistral",
        "mixtral",
        "qwen2",
        "qwen2_moe",
        "qwen3",
        "qwen3_moe",
        "gemma",
        "gemma2",
        "gemma3_text",
        "phi3",
        "olmo",
        "olmo2",
        "granite",
        "smollm3",
    }
)


def packs(model: Any, option: bool | str) -> bool:
    """Whether passes are packed: the option, or for ``auto`` the model type."""
    if option != "auto":
        return bool(option)
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return getattr(base.config, "model_type", None) in PACKABLE_MODEL_TYPES


def enable_checkpointing(model: Any) -> None:
    """transformers' gradient checkpointing with the non-reentrant torch checkpoint."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def prepare_model(model: Any, opts: LocalOptions) -> Any:
    """The trainable model for ``opts`` (see the module docstring)."""
    if opts.load_in_4bit:
        from peft import prepare_model_for_kbit_training

        model = cast(Any, prepare_model_for_kbit_training)(
            model,
            use_gradient_checkpointing=opts.gradient_checkpointing is True,
            gradient_checkpointing_kwargs={"use_reentrant": False},
        )
    if opts.lora is not None:
        from peft import LoraConfig, get_peft_model

        lora = opts.lora
        targets = lora.target_modules
        with warnings.catch_warnings():  # peft calls a transformers API deprecated in v5
            warnings.simplefilter("ignore", FutureWarning)
            model = get_peft_model(
                model,
                LoraConfig(
                    r=lora.r,
                    lora_alpha=lora.alpha,
                    lora_dropout=lora.dropout,
                    target_modules=targets if isinstance(targets, str) else list(targets),
                    task_type="CAUSAL_LM",
                ),
            )
    model.config.use_cache = False
    if opts.gradient_checkpointing is True:
        enable_checkpointing(model)
    if opts.compile:
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        backend = opts.compile if isinstance(opts.compile, str) else "inductor"
        base.get_decoder().compile(backend=backend, dynamic=True)
    return model

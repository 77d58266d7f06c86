"""The local trainer's answers for ``ftsweep evaluate``: a job's model folder, or a LoRA
adapter on its base (``adapter_config.json``'s ``base_model_name_or_path``), prompted as it
was trained (:class:`~orchestrator.tracking.recipe.Recipe`: the chat template, or the
prompt's separator) and stopped at the training data's stop sequences, greedily (or sampled
at ``evaluate.temperature``), ``evaluate.max_tokens`` new tokens at most."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from orchestrator.core.errors import OrchestratorError

if TYPE_CHECKING:
    import optuna

    from orchestrator.config import EvaluateSpec
    from orchestrator.evaluation import EvalExample
    from orchestrator.tracking.recipe import Recipe

__all__ = ["local_answerer"]


def local_answerer(
    study: optuna.Study, ev: EvaluateSpec
) -> Callable[[str, Sequence[EvalExample]], list[str]]:
    """Answers of a local model (a folder) to held-out examples; ``study`` finds the trial
    whose model it is (for its recipe)."""
    from orchestrator.core.attrs import TrialAttrs
    from orchestrator.tracking.recipe import recipe_of_trial

    def answer(model: str, examples: Sequence[EvalExample]) -> list[str]:
        trial = next(
            t
            for t in study.get_trials(deepcopy=False)
            if t.user_attrs.get(TrialAttrs.FINE_TUNED_MODEL) == model
        )
        recipe = recipe_of_trial("local", trial, study)
        if recipe is None:  # pragma: no cover (the caller picks trials with a model)
            raise OrchestratorError(f"trial {trial.number} kept no model")
        return generate(recipe, examples, ev.max_tokens, ev.temperature)

    return answer


def _load(recipe: Recipe) -> tuple[Any, Any]:
    from pathlib import Path

    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(recipe.model)
    if not path.is_dir():
        raise OrchestratorError(f"the model folder {path} is gone: its trial cannot be evaluated")
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    if recipe.adapter_base:
        from peft import PeftModel

        base = AutoModelForCausalLM.from_pretrained(recipe.adapter_base, local_files_only=True)
        model: Any = PeftModel.from_pretrained(base, path, local_files_only=True)
    else:
        model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True)
    model.eval()
    return tokenizer, model


def generate(
    recipe: Recipe, examples: Sequence[EvalExample], max_tokens: int, temperature: float
) -> list[str]:
    """The model's answer to each example, cut at the first stop sequence."""
    import torch

    tokenizer, model = _load(recipe)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    answers = []
    torch.manual_seed(0)
    with torch.no_grad():
        for e in examples:
            if e.is_chat:
                ids = tokenizer.apply_chat_template(
                    list(e.messages), add_generation_prompt=True, return_tensors="pt",
                    return_dict=True,
                )  # fmt: skip
                inputs = {k: v for k, v in ids.items() if k in ("input_ids", "attention_mask")}
            else:
                inputs = dict(tokenizer(recipe.prompt_text(e.prompt or ""), return_tensors="pt"))
            out = model.generate(
                **inputs,
                max_new_tokens=max_tokens,
                do_sample=temperature > 0,
                temperature=temperature if temperature > 0 else None,
                top_p=None,
                top_k=None,
                eos_token_id=tokenizer.eos_token_id,
                pad_token_id=pad,
            )
            text = tokenizer.decode(out[0, inputs["input_ids"].shape[1] :])
            ends = [text.index(s) for s in recipe.stop if s in text]
            answers.append(text[: min(ends)] if ends else text)
    return answers

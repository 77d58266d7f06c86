"""Task metrics at each epoch's end: a sweep whose objective is an ``eval_<scorer>`` of its
``evaluate:`` block (``objective: {metric: eval_exact_match, direction: maximize}``) has the
local trainer answer the held-out prompts after every epoch, greedily, and score the answers
with the block's scorers (:mod:`orchestrator.evaluation`), so each epoch end reports
``eval_<scorer>`` like any metric: the pruner, the derived epochs and the objective read it.
The plan passes the block to the job as option ``evaluate`` only then (generation costs a
forward pass per new token).

Prompts are built as ``ftsweep evaluate`` builds them for the trained model: the chat template
with the generation prompt, or the prompt text as in the file; the answer is decoded without
special tokens and cut at the training data's stop sequence (taken off the references too).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["TaskEval"]


class TaskEval:
    """The held-out prompts, encoded once, and the scorers of an ``evaluate`` option."""

    def __init__(self, block: Mapping[str, Any], tokenizer: Any, stop: str | None) -> None:
        from orchestrator.config.models import EvaluateSpec
        from orchestrator.evaluation import load_scorers, read_examples

        spec = EvaluateSpec.model_validate(dict(block), strict=False)
        self.max_tokens = spec.max_tokens
        self.scorers = load_scorers(spec, "backend.options.evaluate")
        examples = read_examples(Path(spec.file), spec.limit)
        self.stop = stop
        self.references = [
            e.reference[: -len(stop)] if stop and e.reference.endswith(stop) else e.reference
            for e in examples
        ]
        self.prompts: list[list[int]] = []
        for e in examples:
            if e.is_chat:
                ids = tokenizer.apply_chat_template(list(e.messages), add_generation_prompt=True)
                if isinstance(ids, Mapping):
                    ids = ids["input_ids"]
            else:
                ids = tokenizer(e.prompt or "")["input_ids"]
            self.prompts.append([int(i) for i in ids])

    def score(self, model: Any, tokenizer: Any, device: Any, pad_id: int) -> dict[str, float]:
        """``{eval_<scorer>: mean}`` of the model's answers now (it is left in train mode)."""
        import torch

        from orchestrator.evaluation import score_answers

        answers = []
        model.eval()
        with torch.no_grad():
            for prompt in self.prompts:
                ids = torch.tensor([prompt], device=device)
                out = model.generate(
                    input_ids=ids,
                    attention_mask=torch.ones_like(ids),
                    max_new_tokens=self.max_tokens,
                    do_sample=False,
                    use_cache=True,
                    pad_token_id=pad_id,
                    eos_token_id=tokenizer.eos_token_id,
                )
                text = tokenizer.decode(out[0, len(prompt) :], skip_special_tokens=True)
                if self.stop and self.stop in text:
                    text = text[: text.index(self.stop)]
                answers.append(text)
        model.train()
        return score_answers(self.scorers, answers, self.references)

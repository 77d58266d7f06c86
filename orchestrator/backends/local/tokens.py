"""Exact token counts of examples as the local trainer encodes them.

Used by the data checks when the model is a local one (``tiny``, ``smollm2-135m``, a folder, a
GGUF file, a hub id): the counts are those of :mod:`.encoding`, chat template and end-of-text
tokens included, so ``ftsweep validate --model smollm2-135m`` sees what training will see.
"""

from __future__ import annotations

from typing import Any

from orchestrator.backends.local import models
from orchestrator.backends.local.encoding import encode_chat, encode_prompt_completion
from orchestrator.core.progress import report

__all__ = ["LocalTokenCounter"]


class LocalTokenCounter:
    """Counts (total, completion) tokens of one example with a local model's tokenizer."""

    special_tokens: frozenset[str] = frozenset()

    def __init__(self, model: str) -> None:
        source = models.resolve(model, progress=report)
        self.tokenizer, context = models.load_tokenizer(source)
        self.model = source.name
        self.name = f"{source.name} tokenizer"
        self.max_tokens_per_example = int(context or self.tokenizer.model_max_length)

    def example(self, fmt: str, value: dict[str, Any]) -> tuple[int, int]:
        """(tokens, completion tokens) as :mod:`.encoding` makes them; ValueError when the
        chat template refuses the example (Gemma's refuses a system message)."""
        from jinja2 import TemplateError

        if fmt == "chat":
            try:
                enc = encode_chat(self.tokenizer, value["messages"], 0.0, value.get("tools"))
            except TemplateError as exc:
                raise ValueError(f"the chat template of {self.model} refuses it: {exc}") from exc
            except ValueError:  # a template that is not prefix-stable: count the whole
                ids = self.tokenizer.apply_chat_template(value["messages"], tokenize=True)
                ids = ids["input_ids"] if hasattr(ids, "keys") else ids
                return len(ids), 0
        else:
            enc = encode_prompt_completion(
                self.tokenizer, value["prompt"], value["completion"], 0.0
            )
        return len(enc), sum(enc.completion)

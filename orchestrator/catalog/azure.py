"""What Azure OpenAI fine-tunes (2026-12): base models, their limits, tokenizers and tiers.

Sources: ``reference/updates-2026-12.md`` (Azure section) and ``reference/finetuning-api.md``
§2.4/§2.6/§2.7, both summarising the Microsoft docs (``MicrosoftDocs/azure-ai-docs``:
``fine-tune-supported-models.md``, ``how-to-fine-tuning-cost-management-content.md``,
``quotas-limits.md``). Each fact is marked: *docs* (from the reference notes (docs)) or
*guess*.

* Training tiers, sent as ``trainingType`` in the job-create body: ``Standard`` (regional),
  ``GlobalStandard`` and ``developerTier`` -- spellings from the reference notes (docs),
  which mark them "verify"; the search corpus here had no Microsoft page that settles them.
  Developer training is pre-emptible: its jobs may pause and resume (docs).
* Models (docs): SFT on gpt-4o-mini; SFT (and DPO) on gpt-4o, gpt-4.1, gpt-4.1-mini,
  gpt-4.1-nano, in every tier; SFT on the open-weight gpt-oss-20b, Llama-3.3-70B, Qwen-32B and
  Ministral-3B, Global only. Developer for the open-weight ones: a guess (allowed here).
* Context per training example (docs): 65,536 for gpt-4o, gpt-4o-mini, gpt-4.1, gpt-4.1-mini;
  32,768 for gpt-4.1-nano. For the open-weight models: a guess (32,768).
* Tokenizers: OpenAI models use ``o200k_base`` (tiktoken, exact, offline here). gpt-oss-20b's
  ``o200k_harmony`` extends ``o200k_base`` (so counts are close; labelled an estimate, its
  chat template differs); Llama, Qwen and Ministral tokenizers are not available offline:
  counted with ``o200k_base`` and labelled an estimate.
* Quotas per resource (docs): 1 running training job, 20 queued, 100 in all.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from orchestrator.catalog.names import family

__all__ = [
    "AZURE_MODELS",
    "DEFAULT_TIER",
    "MAX_QUEUED",
    "MAX_RUNNING",
    "MAX_TOTAL",
    "TIERS",
    "TIER_NAMES",
    "AzureModel",
    "azure_model",
]

#: ``backend.options.training_type`` -> the provider's ``trainingType`` spelling (docs)
TIERS: dict[str, str] = {
    "standard": "Standard",
    "global": "GlobalStandard",
    "developer": "developerTier",
}
#: the provider's spelling -> ours
TIER_NAMES: dict[str, str] = {v: k for k, v in TIERS.items()}
#: the default tier: Global, cheaper than regional and the only one open-weight models take
DEFAULT_TIER: Final = "global"
MAX_RUNNING = 1
MAX_QUEUED = 20
MAX_TOTAL = 100

_ALL = ("standard", "global", "developer")
_GLOBAL = ("global", "developer")


@dataclass(frozen=True)
class AzureModel:
    """One family Azure fine-tunes."""

    name: str
    #: tokens per training example
    context: int
    #: the tiktoken encoding used to count its tokens
    encoding: str
    #: whether those counts are exact (the model's own tokenizer) or an estimate
    exact_tokens: bool
    tiers: tuple[str, ...]
    open_weight: bool = False

    @property
    def tokens_note(self) -> str:
        if self.exact_tokens:
            return f"exact ({self.encoding})"
        return f"an estimate ({self.encoding}; {self.name}'s own tokenizer is not used offline)"


AZURE_MODELS: dict[str, AzureModel] = {
    m.name: m
    for m in (
        AzureModel("gpt-4o-mini", 65_536, "o200k_base", True, _ALL),
        AzureModel("gpt-4o", 65_536, "o200k_base", True, _ALL),
        AzureModel("gpt-4.1", 65_536, "o200k_base", True, _ALL),
        AzureModel("gpt-4.1-mini", 65_536, "o200k_base", True, _ALL),
        AzureModel("gpt-4.1-nano", 32_768, "o200k_base", True, _ALL),
        AzureModel("gpt-oss-20b", 32_768, "o200k_base", False, _GLOBAL, open_weight=True),
        AzureModel(
            "Llama-3.3-70B-Instruct", 32_768, "o200k_base", False, _GLOBAL, open_weight=True
        ),
        AzureModel("Qwen-32B", 32_768, "o200k_base", False, _GLOBAL, open_weight=True),
        AzureModel("Ministral-3B", 32_768, "o200k_base", False, _GLOBAL, open_weight=True),
    )
}


def azure_model(model: str) -> AzureModel | None:
    """The family ``model`` belongs to (``gpt-4o-mini-2024-07-18`` -> gpt-4o-mini;
    ``Llama-3.3-70B`` -> Llama-3.3-70B-Instruct), or None."""
    name = model.strip()
    if name == "Llama-3.3-70B":
        name = "Llama-3.3-70B-Instruct"
    known = family(name, AZURE_MODELS)
    return AZURE_MODELS[known] if known is not None else None

"""What Azure OpenAI fine-tunes (2026-12): its models (a view of the model table,
:mod:`orchestrator.catalog.models`, where their sources are), training tiers and quotas.

Sources: ``reference/updates-2026-12.md`` (Azure section) and ``reference/finetuning-api.md``
§2.4/§2.6/§2.7, both summarising the Microsoft docs (``MicrosoftDocs/azure-ai-docs``:
``fine-tune-supported-models.md``, ``how-to-fine-tuning-cost-management-content.md``,
``quotas-limits.md``). Each fact is marked: *docs* (from the reference notes (docs)) or
*guess*.

* Training tiers, sent as ``trainingType`` in the job-create body: ``Standard`` (regional),
  ``GlobalStandard`` and ``developerTier`` -- spellings from the reference notes (docs),
  which mark them "verify"; the search corpus here had no Microsoft page that settles them.
  Developer training is pre-emptible: its jobs may pause and resume (docs).
* Models, their context per example, tiers and tokenizers: the rows of
  :data:`~orchestrator.catalog.models.MODELS` with Azure tiers.
* Quotas per resource (docs): 1 running training job, 20 queued, 100 in all.
"""

from __future__ import annotations

from typing import Final

from orchestrator.catalog.models import AZURE_TIER_NAMES, MODELS, ModelFacts
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
TIERS: dict[str, str] = dict(
    zip(AZURE_TIER_NAMES, ("Standard", "GlobalStandard", "developerTier"), strict=True)
)
#: the provider's spelling -> ours
TIER_NAMES: dict[str, str] = {v: k for k, v in TIERS.items()}
#: the default tier: Global, cheaper than regional and the only one open-weight models take
DEFAULT_TIER: Final = "global"
MAX_RUNNING = 1
MAX_QUEUED = 20
MAX_TOTAL = 100

#: a model Azure trains: a row of the model table
AzureModel = ModelFacts

#: the models Azure trains, by name (the table's rows with Azure tiers, in its order)
AZURE_MODELS: dict[str, ModelFacts] = {name: m for name, m in MODELS.items() if m.azure_tiers}


def azure_model(model: str) -> ModelFacts | None:
    """The family ``model`` belongs to (``gpt-4o-mini-2024-07-18`` -> gpt-4o-mini;
    ``Llama-3.3-70B`` -> Llama-3.3-70B-Instruct), or None."""
    name = model.strip()
    if name == "Llama-3.3-70B":
        name = "Llama-3.3-70B-Instruct"
    known = family(name, AZURE_MODELS)
    return AZURE_MODELS[known] if known is not None else None

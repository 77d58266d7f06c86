"""What Azure OpenAI fine-tunes (2026-12): its models (a view of the model table,
:mod:`orchestrator.catalog.models`, where their sources are), training tiers and quotas.

Sources: ``reference/field-2026-12.md`` §1.2, summarising the Microsoft docs
(``MicrosoftDocs/azure-ai-docs``: ``fine-tune-supported-models.md``, ``fine-tuning/overview.md``,
``how-to-fine-tuning-cost-management-content.md``, ``quotas-limits.md``, the SDK and REST
samples). What was checked, and how, is in ``docs/backends.md``. Each fact is marked:
*docs* or *guess*.

* Training tiers, sent as ``trainingType`` at the top level of the job-create body (docs):
  ``Standard`` (regional), ``GlobalStandard`` and ``developerTier`` -- spellings from
  Microsoft's samples, which also write ``globalstandard`` and ``Developer`` (docs). The
  Data-zone tier (US only, docs) has **no documented value**: ``DataZoneStandard`` is a
  guess by analogy with the deployment SKU, overridable with
  ``backend.options.datazone_wire_value`` and unverified until a live check.
  Developer training is pre-emptible: its jobs may pause and resume (docs).
* Models, their context per example, tiers, regions, methods, tokenizers and who may train
  them: the rows of :data:`~orchestrator.catalog.models.MODELS` with Azure tiers.
* Quotas per resource (docs, ``quotas-limits.md`` of 2026-02-17): 3 running training jobs on
  Standard and Global, 5 on Developer (Data zone: not stated; 3 here, a guess), 20 queued,
  100 in all; files 512 MB each and 1 GB in all; a job at most 2 billion tokens x epochs.
"""

from __future__ import annotations

from typing import Final

from orchestrator.catalog.models import AZURE_TIER_NAMES, MODELS, ModelFacts
from orchestrator.catalog.names import family

__all__ = [
    "AZURE_MODELS",
    "DATAZONE_WIRE_VALUE",
    "DEFAULT_TIER",
    "MAX_FILES_BYTES",
    "MAX_FILE_BYTES",
    "MAX_JOB_TOKENS",
    "MAX_QUEUED",
    "MAX_RUNNING",
    "MAX_TOTAL",
    "TIERS",
    "TIER_NAMES",
    "AzureModel",
    "azure_model",
    "max_running",
]

#: the Data-zone tier's ``trainingType``: undocumented, a guess (see the module docstring)
DATAZONE_WIRE_VALUE: Final = "DataZoneStandard"
#: ``backend.options.training_type`` -> the provider's ``trainingType`` spelling (docs;
#: Data zone a guess, see :data:`DATAZONE_WIRE_VALUE`)
TIERS: dict[str, str] = dict(
    zip(
        AZURE_TIER_NAMES,
        ("Standard", "GlobalStandard", DATAZONE_WIRE_VALUE, "developerTier"),
        strict=True,
    )
)
#: the provider's spelling -> ours (the samples' other spellings too)
TIER_NAMES: dict[str, str] = {
    **{v: k for k, v in TIERS.items()},
    "globalstandard": "global",
    "Developer": "developer",
}
#: the default tier: Global, cheaper than regional and one of the two open-weight models take
DEFAULT_TIER: Final = "global"
#: running training jobs per resource, per tier (docs; Data zone a guess)
MAX_RUNNING: dict[str, int] = {"standard": 3, "global": 3, "datazone": 3, "developer": 5}
MAX_QUEUED = 20
MAX_TOTAL = 100
#: one uploaded file at most (512 MB, docs), and all of a resource's files together (1 GB)
MAX_FILE_BYTES = 512 * 1024 * 1024
MAX_FILES_BYTES = 1024 * 1024 * 1024
#: a job's trained tokens at most: tokens in the training file x epochs (docs)
MAX_JOB_TOKENS = 2_000_000_000

#: a model Azure trains: a row of the model table
AzureModel = ModelFacts

#: the models Azure trains, by name (the table's rows with Azure tiers, in its order)
AZURE_MODELS: dict[str, ModelFacts] = {name: m for name, m in MODELS.items() if m.azure_tiers}


def max_running(tier: str) -> int:
    """Running training jobs per resource in ``tier`` (3, or 5 on Developer)."""
    return MAX_RUNNING.get(tier, 3)


def azure_model(model: str) -> ModelFacts | None:
    """The family ``model`` belongs to (``gpt-4o-mini-2024-07-18`` -> gpt-4o-mini;
    ``Llama-3.3-70B`` -> Llama-3.3-70B-Instruct), or None."""
    name = model.strip()
    if name == "Llama-3.3-70B":
        name = "Llama-3.3-70B-Instruct"
    known = family(name, AZURE_MODELS)
    return AZURE_MODELS[known] if known is not None else None

"""The base models ftsweep knows, one row each: who fine-tunes it, how its tokens are counted,
its context per training example, Azure's tiers, and its announced shutdown and successor.

Every other model fact is a view of this table: the token tables of
:mod:`orchestrator.catalog.tokens` (:func:`~orchestrator.catalog.tokens.model_info`), Azure's
models of :mod:`orchestrator.catalog.azure` (:func:`~orchestrator.catalog.azure.azure_model`),
and the shutdowns and successors of :mod:`orchestrator.catalog.names`
(``ANNOUNCED_SHUTDOWNS``, ``SUCCESSORS``). Rows are families (``gpt-4o-mini`` covers
``gpt-4o-mini-2024-07-18``, see :func:`~orchestrator.catalog.names.family`), except
``gpt-3.5-turbo-0613``, whose context differs from its family's. Prices are configuration
(:mod:`orchestrator.catalog.prices`), not model facts.

Sources:

* **Context per training example.** OpenAI's fine-tuning guide; gpt-3.5-turbo-0613's 4,096
  is what the OpenAI cookbook's data-prep notebook assumes, which makes it ``validate``'s
  default model. Azure (docs): 65,536 for gpt-4o, gpt-4o-mini, gpt-4.1, gpt-4.1-mini; 32,768
  for gpt-4.1-nano; for the open-weight models a guess (32,768).
* **Azure** (``reference/field-2026-12.md`` §1.2, from Microsoft's
  ``fine-tune-supported-models.md`` of 2026-03-05 and the retirement schedule of 2026-07-07):
  SFT on gpt-4o-mini, gpt-4o and the gpt-4.1 family in every tier (Standard in the regions
  listed, Data zone in the US), DPO too on gpt-4o and gpt-4.1; **for existing customers
  only**, until about April 2027 (new customers lost it with the base models, October 2026).
  The open-weight gpt-oss-20b, Llama-3.3-70B-Instruct, Qwen-32B and Ministral-3B: SFT in the
  Global and Data-zone (US) tiers only, open to new customers.
* **Tokenizers.** OpenAI models: tiktoken's ``o200k_base`` / ``cl100k_base``, exact.
  gpt-oss-20b's ``o200k_harmony`` extends ``o200k_base`` (close, but its chat template
  differs); Llama, Qwen and Ministral tokenizers are not available offline: all four are
  counted with ``o200k_base`` and labelled an estimate.
* **Shutdowns** OpenAI announced for fine-tuning (its deprecations page as summarised in
  ``reference/updates-2026-12.md``; secondary sources for the dates), by family; offline
  knowledge for ``ftsweep validate``, a provider's model list says more.
* **Successors**, the family to move to when no snapshot of a family remains:
  gpt-3.5-turbo (and its 0613 spelling) -> gpt-4o-mini: Microsoft's "Azure OpenAI legacy
  models" page (learn.microsoft.com/azure/ai-foundry/openai/concepts/legacy-models) names
  gpt-4o-mini as the replacement of gpt-35-turbo 0301/0613;
  gpt-4o-mini -> gpt-4.1-mini: Azure's model retirement schedule
  (concepts-model-retirement-schedule-content.md, as quoted by a secondary source);
  gpt-4.1-nano -> gpt-4.1-mini and gpt-4o -> gpt-4.1: ftsweep's choice (no provider names a
  fine-tunable successor), the nearest model of the gpt-4.1 generation that still trains.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass

__all__ = [
    "AZURE_TIER_LABELS",
    "AZURE_TIER_NAMES",
    "MODELS",
    "OPENAI_JOBS_END",
    "ModelFacts",
    "open_weight_models",
    "openai_trainable",
]

#: Azure's training tiers, as ``backend.options.training_type`` names them
AZURE_TIER_NAMES = ("standard", "global", "datazone", "developer")
#: the tiers as Microsoft's docs name them (for messages)
AZURE_TIER_LABELS = {
    "standard": "Standard",
    "global": "Global",
    "datazone": "Data zone",
    "developer": "Developer",
}

_ALL = AZURE_TIER_NAMES
_OPEN = ("global", "datazone")
#: OpenAI creates no new self-serve fine-tuning jobs from this day (its deprecations page,
#: "Update to OpenAI's self-serve fine-tuning"; ``reference/field-2026-12.md`` §1.1)
OPENAI_JOBS_END = datetime.date(2027, 1, 6)
#: the two days OpenAI announced it stops fine-tuning base models on
_JAN27 = datetime.date(2027, 1, 14)
_OCT26 = datetime.date(2026, 10, 23)
#: Azure trains the OpenAI models for existing customers until about then (retirement
#: schedule: "no earlier than"): gpt-4o and gpt-4o-mini; the gpt-4.1 family
_AZ_4O = datetime.date(2027, 4, 1)
_AZ_41 = datetime.date(2027, 4, 14)
_NCUS_SWC = ("northcentralus", "swedencentral")
_EUS2_NCUS_SWC = ("eastus2", *_NCUS_SWC)
_SFT = ("SFT",)
_SFT_DPO = ("SFT", "DPO")


@dataclass(frozen=True)
class ModelFacts:
    """One base model (family) and everything ftsweep knows about it offline."""

    name: str
    #: the tiktoken encoding its tokens are counted with
    encoding: str
    #: tokens per training example; None for a model not trained by supervised fine-tuning
    #: (o4-mini: reinforcement fine-tuning only), which the data checks do not count for
    context: int | None
    #: OpenAI fine-tunes it (a model of OpenAI's token tables when it has a context)
    openai: bool = False
    #: the Azure training tiers it is trained in (:data:`AZURE_TIER_NAMES`); () where Azure
    #: does not train it
    azure_tiers: tuple[str, ...] = ()
    #: the day OpenAI announced it stops fine-tuning the family, if it did
    shutdown: datetime.date | None = None
    #: the family to move to when no snapshot of this one remains
    successor: str | None = None
    #: an open-weight model (Azure trains those in Global only)
    open_weight: bool = False
    #: the counts are the model's own tokenizer's (else an estimate with :attr:`encoding`)
    exact_tokens: bool = True
    #: the Azure regions that train it in the Standard (regional) tier; Data zone is US only
    azure_regions: tuple[str, ...] = ()
    #: the training methods Azure offers for it (``SFT``, ``DPO``, ``RFT``)
    azure_methods: tuple[str, ...] = ()
    #: Azure trains it for existing customers only (who trained it before) ...
    azure_existing_only: bool = False
    #: ... until about this day
    azure_existing_until: datetime.date | None = None

    def __post_init__(self) -> None:
        if self.azure_tiers and self.context is None:
            raise ValueError(f"model table: {self.name}: Azure trains it, give its context")
        unknown = set(self.azure_tiers) - set(AZURE_TIER_NAMES)
        if unknown:
            raise ValueError(f"model table: {self.name}: unknown Azure tiers {sorted(unknown)}")
        if ("standard" in self.azure_tiers) != bool(self.azure_regions):
            raise ValueError(f"model table: {self.name}: Standard tier and regions go together")

    @property
    def providers(self) -> tuple[str, ...]:
        """The providers that fine-tune it: ``openai``, ``azure`` or both."""
        return tuple(p for p, yes in (("openai", self.openai), ("azure", self.azure_tiers)) if yes)

    @property
    def tokens_note(self) -> str:
        """How its tokens are counted, in words."""
        if self.exact_tokens:
            return f"exact ({self.encoding})"
        return f"an estimate ({self.encoding}; {self.name}'s own tokenizer is not used offline)"

    @property
    def tier_labels(self) -> str:
        """Its Azure tiers as the docs name them: ``Global and Data zone``."""
        labels = [AZURE_TIER_LABELS[t] for t in self.azure_tiers]
        return " and ".join(labels) if len(labels) <= 2 else ", ".join(labels)

    @property
    def azure_access(self) -> str:
        """Who may train it on Azure, in words."""
        if not self.azure_existing_only:
            return "open to new customers"
        until = self.azure_existing_until
        return "existing customers only" + (f", until about {until.isoformat()}" if until else "")


def _open_weight(name: str) -> ModelFacts:
    return ModelFacts(
        name,
        "o200k_base",
        32_768,
        azure_tiers=_OPEN,
        open_weight=True,
        exact_tokens=False,
        azure_methods=("SFT",),
    )


def _openai(
    name: str,
    context: int,
    shutdown: datetime.date,
    successor: str | None,
    regions: tuple[str, ...],
    methods: tuple[str, ...],
    until: datetime.date,
) -> ModelFacts:
    """An OpenAI model that Azure trains too: every tier, Standard in ``regions``, for
    existing customers only until ``until``."""
    return ModelFacts(
        name, "o200k_base", context, True, _ALL, shutdown, successor,
        azure_regions=regions, azure_methods=methods,
        azure_existing_only=True, azure_existing_until=until,
    )  # fmt: skip


# fmt: off
_ROWS = (
    #       name            context shutdown successor       Standard regions  methods  Azure until
    _openai("gpt-4o-mini",  65_536, _JAN27, "gpt-4.1-mini", _NCUS_SWC,       _SFT,    _AZ_4O),
    _openai("gpt-4o",       65_536, _JAN27, "gpt-4.1",      _EUS2_NCUS_SWC,  _SFT_DPO, _AZ_4O),
    _openai("gpt-4.1",      65_536, _JAN27, None,           _NCUS_SWC,       _SFT_DPO, _AZ_41),
    _openai("gpt-4.1-mini", 65_536, _JAN27, None,           _NCUS_SWC,       _SFT_DPO, _AZ_41),
    _openai("gpt-4.1-nano", 32_768, _OCT26, "gpt-4.1-mini", _NCUS_SWC,       _SFT_DPO, _AZ_41),
    #          name                  encoding       context OpenAI Azure shutdown successor
    ModelFacts("gpt-3.5-turbo",      "cl100k_base", 16_385, True, (),   _OCT26, "gpt-4o-mini"),
    # a snapshot of gpt-3.5-turbo (whose shutdown it shares) with a smaller context
    ModelFacts("gpt-3.5-turbo-0613", "cl100k_base", 4_096,  True, (),   None,   "gpt-4o-mini"),
    ModelFacts("babbage-002",        "cl100k_base", 16_384, True),
    ModelFacts("davinci-002",        "cl100k_base", 16_384, True),
    ModelFacts("o4-mini",            "o200k_base",  None,   True, (),   _OCT26),
    _open_weight("gpt-oss-20b"),
    _open_weight("Llama-3.3-70B-Instruct"),
    _open_weight("Qwen-32B"),
    _open_weight("Ministral-3B"),
)
# fmt: on

#: the table, by name, in the order errors list the models
MODELS: dict[str, ModelFacts] = {m.name: m for m in _ROWS}


def open_weight_models() -> tuple[str, ...]:
    """The open-weight models Azure trains (open to new customers), in the table's order."""
    return tuple(m.name for m in _ROWS if m.open_weight and m.azure_tiers)


def openai_trainable(today: datetime.date) -> tuple[str, ...]:
    """The OpenAI families one can still create fine-tuning jobs on (``today`` before
    OpenAI's jobs end and the family's shutdown), in the table's order; what the model lists
    offer (babbage-002, davinci-002 and gpt-3.5-turbo are no longer among them)."""
    return tuple(
        m.name
        for m in _ROWS
        if m.openai
        and m.context is not None
        and m.shutdown is not None
        and today < min(m.shutdown, OPENAI_JOBS_END)
    )

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
* **Azure** (``reference/updates-2026-12.md``, ``reference/finetuning-api.md`` §2.4/§2.6/§2.7,
  summarising Microsoft's ``fine-tune-supported-models.md``): SFT on gpt-4o-mini, gpt-4o and
  the gpt-4.1 family in every tier; on the open-weight gpt-oss-20b, Llama-3.3-70B, Qwen-32B
  and Ministral-3B in Global only (Developer for them: a guess, allowed here).
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

__all__ = ["AZURE_TIER_NAMES", "MODELS", "ModelFacts"]

#: Azure's training tiers, as ``backend.options.training_type`` names them
AZURE_TIER_NAMES = ("standard", "global", "developer")

_ALL = AZURE_TIER_NAMES
_GLOBAL = ("global", "developer")
#: the two days OpenAI announced it stops fine-tuning base models on
_JAN27 = datetime.date(2027, 1, 14)
_OCT26 = datetime.date(2026, 10, 23)


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

    def __post_init__(self) -> None:
        if self.azure_tiers and self.context is None:
            raise ValueError(f"model table: {self.name}: Azure trains it, give its context")
        unknown = set(self.azure_tiers) - set(AZURE_TIER_NAMES)
        if unknown:
            raise ValueError(f"model table: {self.name}: unknown Azure tiers {sorted(unknown)}")

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


def _open_weight(name: str) -> ModelFacts:
    return ModelFacts(
        name, "o200k_base", 32_768, azure_tiers=_GLOBAL, open_weight=True, exact_tokens=False
    )


# fmt: off
_ROWS = (
    #          name                  encoding       context OpenAI Azure shutdown successor
    ModelFacts("gpt-4o-mini",        "o200k_base",  65_536, True, _ALL, _JAN27, "gpt-4.1-mini"),
    ModelFacts("gpt-4o",             "o200k_base",  65_536, True, _ALL, _JAN27, "gpt-4.1"),
    ModelFacts("gpt-4.1",            "o200k_base",  65_536, True, _ALL, _JAN27),
    ModelFacts("gpt-4.1-mini",       "o200k_base",  65_536, True, _ALL, _JAN27),
    ModelFacts("gpt-4.1-nano",       "o200k_base",  32_768, True, _ALL, _OCT26, "gpt-4.1-mini"),
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

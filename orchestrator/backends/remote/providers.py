"""The two providers: OpenAI (``metadata`` carries the key) and Azure OpenAI (a ``suffix``
derived from the key, plus a local ledger; implemented in :mod:`.azure`), both on the
``openai`` SDK.

Credentials come from the environment only: ``OPENAI_API_KEY`` (and ``OPENAI_BASE_URL``,
``OPENAI_ORG_ID``, ``OPENAI_PROJECT_ID``) for OpenAI; ``AZURE_OPENAI_API_KEY``,
``AZURE_OPENAI_ENDPOINT`` and ``OPENAI_API_VERSION`` for Azure, or Microsoft Entra ID through
``azure-identity`` (``DefaultAzureCredential``) when no key is set. A missing one is a
:class:`~orchestrator.core.errors.ProviderAuthError` naming the variable to export.

OpenAI takes no new fine-tuning jobs from 2027-01-06 (``catalog.names.OPENAI_JOBS_END``):
until then a plan on it says how many days are left (:meth:`OpenAIBackend.notices`); from
then on the pre-flight check and every submit refuse (exit 1, one line naming the azure and
local backends) before anything is uploaded. "Today" is :func:`orchestrator.core.clock.today`
(``FTSWEEP_NOW`` sets it, for tests and rehearsals).
"""

from __future__ import annotations

import functools
import os
from dataclasses import replace
from typing import Any, ClassVar

from pydantic import Field

from orchestrator.backends.base import BackendOptions, Capabilities, TrainingRequest
from orchestrator.backends.remote.azure import (
    AZURE_API_VERSION,
    AzureOpenAIBackend,
    AzureOptions,
    azure_suffix,
)
from orchestrator.backends.remote.backend import REMOTE_CAPABILITIES, RemoteBackend, RemoteOptions
from orchestrator.backends.remote.retry import Provider
from orchestrator.catalog.names import openai_jobs_note, openai_jobs_refusal
from orchestrator.core.errors import (
    ProviderAuthError,
    ProviderRefusedError,
    UnsupportedParameterError,
)

__all__ = [
    "AZURE_API_VERSION",
    "KEY_METADATA",
    "AzureOpenAIBackend",
    "AzureOptions",
    "OpenAIBackend",
    "OpenAIOptions",
    "azure_suffix",
]

#: the job metadata entry that holds the request's idempotency key (OpenAI)
KEY_METADATA = "ftsweep_key"


def _hyperparameters(request: TrainingRequest) -> dict[str, Any]:
    hp = request.hyperparameters
    return {
        "n_epochs": hp.n_epochs,
        "batch_size": hp.batch_size,
        "learning_rate_multiplier": hp.learning_rate_multiplier,
    }


class OpenAIOptions(RemoteOptions):
    """``backend.options`` of ``openai``."""

    #: the API's address (default: ``OPENAI_BASE_URL``, else OpenAI's)
    base_url: str | None = None
    organization: str | None = None
    project: str | None = None
    #: names the fine-tuned models (``ft:MODEL:ORG:SUFFIX:ID``)
    suffix: str | None = Field(default=None, min_length=1, max_length=64)


class OpenAIBackend(RemoteBackend):
    """Fine-tuning jobs on the OpenAI API (``OPENAI_API_KEY``; ``base_url`` for a proxy or
    ``ftsweep apisim``). Option ``suffix`` names the fine-tuned models."""

    name: ClassVar[str] = "openai"
    capabilities: ClassVar[Capabilities] = replace(REMOTE_CAPABILITIES, max_concurrent_jobs=3)
    Options: ClassVar[type[BackendOptions]] = OpenAIOptions
    events_newest_first: ClassVar[bool] = True

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        assert isinstance(self.options, OpenAIOptions)
        self.base_url = self.options.base_url
        self.organization = self.options.organization
        self.project = self.options.project

    def _make_client(self) -> Any:
        import openai

        key = os.environ.get("OPENAI_API_KEY")
        if not key:
            raise ProviderAuthError(
                "OPENAI_API_KEY is not set: export it to use the openai backend"
            )
        return openai.OpenAI(
            api_key=key,
            base_url=self.base_url,
            organization=self.organization,
            project=self.project,
            max_retries=0,
            timeout=self.timeout,
        )

    def _secrets(self) -> list[str]:
        return [os.environ.get("OPENAI_API_KEY", "")]

    def _provider(self) -> Provider:
        return Provider(
            name=self.name,
            credentials="OPENAI_API_KEY",
            address_setting="OPENAI_BASE_URL / backend.options.base_url",
            access="the key's organization and project (OPENAI_ORG_ID / OPENAI_PROJECT_ID)",
            url=self._scope,
        )

    def _scope(self) -> str:
        return str(
            self.base_url or os.environ.get("OPENAI_BASE_URL") or "https://api.openai.com/v1"
        )

    @classmethod
    def notices(cls, model: str, options: BackendOptions) -> list[str]:
        """The days of job creation OpenAI has left, while it has some (one line)."""
        from orchestrator.core import clock

        note = openai_jobs_note(clock.today())
        return [note] if note is not None else []

    def _refuse_after_jobs_end(self) -> None:
        refusal = openai_jobs_refusal(self.today(), refused=True)
        if refusal is not None:
            raise ProviderRefusedError(refusal)

    def preflight(self) -> None:
        """From OpenAI's last day of job creation on, refuse before any call; else the
        remote pre-flight check."""
        self._refuse_after_jobs_end()
        super().preflight()

    def check(self, request: TrainingRequest) -> None:
        self._refuse_after_jobs_end()  # before anything is uploaded
        super().check(request)
        if len(request.key) > 512:
            raise UnsupportedParameterError("the request key is longer than 512 characters")
        extra = {k: v for k, v in request.metadata.items() if k != KEY_METADATA}
        if len(extra) > 15 or any(len(k) > 64 or len(str(v)) > 512 for k, v in extra.items()):
            raise UnsupportedParameterError(
                "metadata: at most 15 pairs (one is reserved), keys <= 64 and values <= 512 chars"
            )

    def _create_params(
        self, request: TrainingRequest, train_id: str, valid_id: str | None
    ) -> dict[str, Any]:
        metadata = {str(k): str(v) for k, v in request.metadata.items()}
        metadata[KEY_METADATA] = request.key
        params: dict[str, Any] = {
            "model": request.model,
            "training_file": train_id,
            "method": {
                "type": "supervised",
                "supervised": {"hyperparameters": _hyperparameters(request)},
            },
            "seed": request.seed,
            "metadata": metadata,
        }
        if valid_id is not None:
            params["validation_file"] = valid_id
        if request.options.get("suffix"):
            params["suffix"] = str(request.options["suffix"])
        return params

    def _find_job(self, key: str) -> Any | None:
        fetch = functools.partial(self.client.fine_tuning.jobs.list, metadata={KEY_METADATA: key})
        # the filter is checked here too: a server that ignored it must not attach us
        matches = [
            job
            for items in self._pages("list jobs", fetch)
            for job in items
            if (job.metadata or {}).get(KEY_METADATA) == key
        ]
        return min(matches, key=lambda j: j.created_at) if matches else None

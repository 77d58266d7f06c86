"""The two providers: OpenAI (``metadata`` carries the key) and Azure OpenAI (a ``suffix``
derived from the key, plus a local ledger), both on the ``openai`` SDK.

Credentials come from the environment only: ``OPENAI_API_KEY`` (and ``OPENAI_BASE_URL``,
``OPENAI_ORG_ID``, ``OPENAI_PROJECT_ID``) for OpenAI; ``AZURE_OPENAI_API_KEY``,
``AZURE_OPENAI_ENDPOINT`` and ``OPENAI_API_VERSION`` for Azure, or Microsoft Entra ID through
``azure-identity`` (``DefaultAzureCredential``) when no key is set. A missing one is a
:class:`~orchestrator.errors.ProviderAuthError` naming the variable to export.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import json
import os
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field

from orchestrator.backends.base import BackendOptions, Capabilities, TrainingRequest
from orchestrator.backends.remote.backend import REMOTE_CAPABILITIES, RemoteBackend, RemoteOptions
from orchestrator.backends.remote.retry import Provider
from orchestrator.errors import BackendError, ProviderAuthError, UnsupportedParameterError

__all__ = [
    "KEY_METADATA",
    "AzureOpenAIBackend",
    "AzureOptions",
    "OpenAIBackend",
    "OpenAIOptions",
    "azure_suffix",
]

#: the job metadata entry that holds the request's idempotency key (OpenAI)
KEY_METADATA = "ftsweep_key"
AZURE_API_VERSION = "2024-10-21"


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


class AzureOptions(RemoteOptions):
    """``backend.options`` of ``azure``."""

    #: ``https://RESOURCE.openai.azure.com`` (default: ``AZURE_OPENAI_ENDPOINT``)
    endpoint: str | None = None
    #: the dated API version (default: ``OPENAI_API_VERSION``, else 2024-10-21)
    api_version: str | None = None


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

    def check(self, request: TrainingRequest) -> None:
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


def azure_suffix(key: str) -> str:
    """The job suffix that identifies ``key`` on Azure (2024-10-21 jobs have no metadata)."""
    return "fts-" + hashlib.sha256(key.encode()).hexdigest()[:24]


class AzureOpenAIBackend(RemoteBackend):
    """Fine-tuning jobs on Azure OpenAI (``AZURE_OPENAI_ENDPOINT``, ``AZURE_OPENAI_API_KEY``
    or Entra ID, ``OPENAI_API_VERSION``, default 2024-10-21). One job runs at a time per
    resource; the others wait in ``pending``."""

    name: ClassVar[str] = "azure"
    capabilities: ClassVar[Capabilities] = replace(REMOTE_CAPABILITIES, max_concurrent_jobs=1)
    Options: ClassVar[type[BackendOptions]] = AzureOptions
    events_newest_first: ClassVar[bool] = False

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        assert isinstance(self.options, AzureOptions)
        self.endpoint = self.options.endpoint
        self.api_version = self.options.api_version
        self._ledger_lock = threading.Lock()

    def _make_client(self) -> Any:
        import openai

        endpoint = self.endpoint or os.environ.get("AZURE_OPENAI_ENDPOINT")
        if not endpoint:
            raise ProviderAuthError(
                "AZURE_OPENAI_ENDPOINT is not set: export it (or set backend.options.endpoint) "
                "to use the azure backend"
            )
        version = self.api_version or os.environ.get("OPENAI_API_VERSION") or AZURE_API_VERSION
        common: dict[str, Any] = {
            "azure_endpoint": endpoint,
            "api_version": version,
            "max_retries": 0,
            "timeout": self.timeout,
        }
        key = os.environ.get("AZURE_OPENAI_API_KEY")
        if key:
            return openai.AzureOpenAI(api_key=key, **common)
        try:
            identity = importlib.import_module("azure.identity")
        except ImportError as exc:
            raise ProviderAuthError(
                "AZURE_OPENAI_API_KEY is not set: export it to use the azure backend "
                "(or pip install azure-identity to sign in with Entra ID)"
            ) from exc
        provider = identity.get_bearer_token_provider(
            identity.DefaultAzureCredential(), "https://cognitiveservices.azure.com/.default"
        )

        def token() -> str:
            try:
                return str(provider())
            except Exception as exc:  # azure.identity's CredentialUnavailableError and kin
                first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                raise ProviderAuthError(
                    f"azure: Entra ID sign-in failed ({first[:200]}): sign in (az login) or "
                    "export AZURE_OPENAI_API_KEY"
                ) from exc

        return openai.AzureOpenAI(azure_ad_token_provider=token, **common)

    def _secrets(self) -> list[str]:
        return [os.environ.get("AZURE_OPENAI_API_KEY", "")]

    def _provider(self) -> Provider:
        keyed = bool(os.environ.get("AZURE_OPENAI_API_KEY"))
        signin = "AZURE_OPENAI_API_KEY" if keyed else "the Entra ID sign-in"
        return Provider(
            name=self.name,
            credentials=f"{signin} and AZURE_OPENAI_ENDPOINT",
            address_setting="AZURE_OPENAI_ENDPOINT / backend.options.endpoint",
            access="the resource's region and fine-tuning access (AZURE_OPENAI_ENDPOINT)",
            url=self._scope,
        )

    def _scope(self) -> str:
        return str(self.endpoint or os.environ.get("AZURE_OPENAI_ENDPOINT") or "").rstrip("/")

    def _create_params(
        self, request: TrainingRequest, train_id: str, valid_id: str | None
    ) -> dict[str, Any]:
        params: dict[str, Any] = {
            "model": request.model,
            "training_file": train_id,
            "hyperparameters": _hyperparameters(request),
            "seed": request.seed,
            "suffix": azure_suffix(request.key),
        }
        if valid_id is not None:
            params["validation_file"] = valid_id
        return params

    # -- the ledger: key -> job id, a shortcut before scanning the job list ------------------
    @property
    def _ledger_path(self) -> Path | None:
        return self.workdir / "azure-jobs.json" if self.workdir is not None else None

    def _ledger(self) -> dict[str, str]:
        path = self._ledger_path
        if path is None or not path.exists():
            return {}
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return {str(k): str(v) for k, v in data.get("jobs", {}).items()}

    def _created(self, key: str, job_id: str) -> None:
        path = self._ledger_path
        if path is None:
            return
        with self._ledger_lock:
            jobs = self._ledger()
            entry = f"{self._scope()}|{key}"
            if jobs.get(entry) == job_id:
                return
            jobs[entry] = job_id
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps({"version": 1, "jobs": jobs}, indent=1), encoding="utf-8")
            os.replace(tmp, path)

    def _find_job(self, key: str) -> Any | None:
        import openai

        jobs = self.client.fine_tuning.jobs
        suffix = azure_suffix(key)
        known = self._ledger().get(f"{self._scope()}|{key}")
        if known is not None:
            try:
                return self._call("retrieve job", lambda: jobs.retrieve(known))
            except BackendError as exc:
                if not isinstance(exc.__cause__, openai.NotFoundError):
                    raise
        matches = [
            job
            for items in self._pages("list jobs", jobs.list)
            for job in items
            if _suffix_of(job) == suffix
        ]
        return min(matches, key=lambda j: j.created_at) if matches else None


def _suffix_of(job: Any) -> str | None:
    suffix = getattr(job, "suffix", None) or getattr(job, "user_provided_suffix", None)
    if suffix:
        return str(suffix)
    model = str(getattr(job, "fine_tuned_model", None) or "")
    return "fts-" + model.rsplit("-fts-", 1)[1] if "-fts-" in model else None

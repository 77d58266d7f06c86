"""Backends for remote fine-tuning APIs on the ``openai`` SDK: OpenAI and Azure OpenAI.

See :mod:`.backend` for what they share (idempotent submit, event tailing, checkpoints,
retries) and :mod:`.providers` for how each finds a key's job again.
"""

from __future__ import annotations

from orchestrator.backends.remote.backend import RemoteBackend
from orchestrator.backends.remote.providers import (
    KEY_METADATA,
    AzureOpenAIBackend,
    OpenAIBackend,
    azure_suffix,
)
from orchestrator.backends.remote.retry import (
    ProviderAuthError,
    ProviderBusyError,
    ProviderUnreachableError,
    RetryPolicy,
)

__all__ = [
    "KEY_METADATA",
    "AzureOpenAIBackend",
    "OpenAIBackend",
    "ProviderAuthError",
    "ProviderBusyError",
    "ProviderUnreachableError",
    "RemoteBackend",
    "RetryPolicy",
    "azure_suffix",
]

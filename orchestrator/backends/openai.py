"""The ``openai`` and ``azure`` backends (entry points); implemented in
:mod:`orchestrator.backends.remote`."""

from __future__ import annotations

from orchestrator.backends.remote import AzureOpenAIBackend, OpenAIBackend, ProviderBusyError

__all__ = ["AzureOpenAIBackend", "OpenAIBackend", "ProviderBusyError"]

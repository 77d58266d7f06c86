"""Azure Resource Manager (the control plane): a deployment of a fine-tuned model, made,
waited for, used and deleted.

A real Azure OpenAI / Foundry resource serves chat completions of a fine-tuned model only
through a deployment, and creates deployments only through ARM:

``PUT {management_endpoint}/subscriptions/{sub}/resourceGroups/{rg}/providers/
Microsoft.CognitiveServices/accounts/{account}/deployments/{name}?api-version=2025-06-01``

with ``{"sku": {"name": "DeveloperTier", "capacity": N}, "properties": {"model": {"format":
F, "name": MODEL, "version": "1"}}}``; ``GET`` on the same URL until
``properties.provisioningState`` is ``Succeeded`` (``Failed`` / ``Canceled`` end it at once,
a bounded wait ends in one line), then ``DELETE``. The token is an Entra ID one for
``https://management.azure.com/.default``: ``AZURE_MANAGEMENT_TOKEN`` (e.g. ``az account
get-access-token --query accessToken -o tsv``), else ``azure-identity``'s
``DefaultAzureCredential`` (``pip install 'ftsweep[azure]'``). It is never logged and never
put in a message.

Verified against Microsoft's pages (search, December 2026): the URL, the ``sku`` /
``properties.model`` body and the 200/201 replies are those of "Deployments - Create Or
Update" (Microsoft.CognitiveServices account management; api-version 2025-06-01 is the
newest GA version listed there, 2024-10-01 and 2023-05-01 take the same body); the
``DeveloperTier`` SKU name and ``format: OpenAI`` / ``version: "1"`` for a fine-tuned OpenAI
model are those of Microsoft's fine-tuning "test / deploy" pages. The ``format`` of an
open-weight base model is the publisher's name (``Mistral AI``, ``Meta``, ``Alibaba``,
``Microsoft`` for gpt-oss) per a Microsoft Foundry skill reference, not the REST reference:
**unverified until a live check**, as is whether those models take a Developer deployment at
all (that reference deploys them as ``GlobalStandard``; Azure's refusal is then one line).
"""

from __future__ import annotations

import importlib
import json
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.error import HTTPError
from urllib.parse import quote, urlsplit
from urllib.request import HTTPRedirectHandler, Request, build_opener

from orchestrator.core.errors import (
    BackendError,
    ProviderAuthError,
    ProviderUnreachableError,
    UsageError,
)

__all__ = [
    "ARM_API_VERSION",
    "ARM_SCOPE",
    "MANAGEMENT_ENDPOINT",
    "TOKEN_ENV",
    "ArmDeployments",
    "ArmTarget",
    "account_of",
    "guarded_token",
    "model_format",
]

#: the newest GA api-version of Microsoft.CognitiveServices deployments (see the docstring)
ARM_API_VERSION = "2025-06-01"
ARM_SCOPE = "https://management.azure.com/.default"
MANAGEMENT_ENDPOINT = "https://management.azure.com"
TOKEN_ENV = "AZURE_MANAGEMENT_TOKEN"
SUBSCRIPTION_ENV = "AZURE_SUBSCRIPTION_ID"
RESOURCE_GROUP_ENV = "AZURE_RESOURCE_GROUP"
EXTRA = "pip install 'ftsweep[azure]'"
_FAILED = ("Failed", "Canceled")
#: base-model name prefix -> ARM's ``model.format`` (open weights: a guess, see the docstring)
_FORMATS = (
    ("gpt-oss", "Microsoft"),
    ("ministral", "Mistral AI"),
    ("mistral", "Mistral AI"),
    ("llama", "Meta"),
    ("qwen", "Alibaba"),
)


def model_format(base_model: str) -> str:
    """ARM's ``properties.model.format`` for a model fine-tuned from ``base_model``."""
    lowered = base_model.lower()
    return next((f for prefix, f in _FORMATS if lowered.startswith(prefix)), "OpenAI")


def account_of(endpoint: str) -> str:
    """The resource (account) name of a data-plane endpoint: the first label of its host
    (``https://NAME.openai.azure.com`` -> ``NAME``)."""
    host = urlsplit(endpoint).hostname or ""
    return host.split(".", 1)[0]


@dataclass(frozen=True)
class ArmTarget:
    """Which resource: the subscription, its resource group and the account (resource)."""

    subscription_id: str
    resource_group: str
    account: str
    management_endpoint: str = MANAGEMENT_ENDPOINT

    @classmethod
    def resolve(
        cls,
        *,
        subscription_id: str | None,
        resource_group: str | None,
        account: str | None,
        management_endpoint: str | None,
        endpoint: str,
    ) -> ArmTarget:
        """The options, else their environment variables, else the endpoint's host; one
        line naming the option and the variable when one is missing (exit 2)."""
        sub = subscription_id or os.environ.get(SUBSCRIPTION_ENV, "").strip()
        if not sub:
            raise UsageError(
                f"azure: ftsweep evaluate deploys through Azure Resource Manager and needs the "
                f"subscription: set backend.options.subscription_id or export {SUBSCRIPTION_ENV}"
            )
        group = resource_group or os.environ.get(RESOURCE_GROUP_ENV, "").strip()
        if not group:
            raise UsageError(
                f"azure: ftsweep evaluate deploys through Azure Resource Manager and needs the "
                f"resource group: set backend.options.resource_group or export "
                f"{RESOURCE_GROUP_ENV}"
            )
        name = account or account_of(endpoint)
        if not name:
            raise UsageError(
                "azure: no resource name: set backend.options.account (or AZURE_OPENAI_ENDPOINT)"
            )
        base = (management_endpoint or MANAGEMENT_ENDPOINT).rstrip("/")
        return cls(sub, group, name, base)

    def url(self, deployment: str) -> str:
        """The deployment's ARM URL, without the api-version."""
        parts = (self.subscription_id, self.resource_group, self.account, deployment)
        sub, group, account, name = (quote(p, safe="") for p in parts)
        return (
            f"{self.management_endpoint}/subscriptions/{sub}/resourceGroups/{group}/providers/"
            f"Microsoft.CognitiveServices/accounts/{account}/deployments/{name}"
        )


def management_token(provider: Callable[[], str] | None = None) -> Callable[[], str]:
    """A callable giving a bearer token for ARM: ``provider``, else ``AZURE_MANAGEMENT_TOKEN``,
    else ``DefaultAzureCredential``; asked once here, so a missing sign-in fails before any
    work (exit 1, one line naming both ways)."""
    source = provider
    if source is None and os.environ.get(TOKEN_ENV, "").strip():
        return lambda: os.environ.get(TOKEN_ENV, "").strip()
    if source is None:
        try:
            identity = importlib.import_module("azure.identity")
        except ImportError as exc:
            raise ProviderAuthError(
                f"azure: deployments go through Azure Resource Manager and need a token: export "
                f"{TOKEN_ENV} (az account get-access-token) or {EXTRA} and sign in (az login)"
            ) from exc
        source = identity.get_bearer_token_provider(identity.DefaultAzureCredential(), ARM_SCOPE)
    token = guarded_token(
        source,
        lambda why: (
            f"azure: no Azure Resource Manager token ({why}): sign in (az login) or "
            f"export {TOKEN_ENV}"
        ),
    )
    token()
    return token


def guarded_token(source: Callable[[], object], refusal: Callable[[str], str]) -> Callable[[], str]:
    """``source``'s bearer token as text; its failure (azure.identity's
    CredentialUnavailableError and kin) becomes one :class:`ProviderAuthError` line,
    ``refusal`` of the error's first line."""

    def token() -> str:
        try:
            return str(source())
        except Exception as exc:  # whatever the credential chain raises
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise ProviderAuthError(refusal(first[:200])) from exc

    return token


class _NoRedirect(HTTPRedirectHandler):
    """A redirect is an error (its 3xx), never followed: the bearer token stays with ARM."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_open_url = build_opener(_NoRedirect).open


class ArmDeployments:
    """Deployments of one resource through ARM (see the module docstring), over the
    standard library's HTTP (``opener``: by default one that follows no redirect, or a
    stand-in taking ``(request, timeout=)``). ``sleep`` and ``clock`` pace the wait for
    ``Succeeded``: at most ``wait`` seconds, polls ``poll[0]`` apart growing to
    ``poll[1]``."""

    def __init__(
        self,
        target: ArmTarget,
        token: Callable[[], str],
        *,
        timeout: float = 60.0,
        wait: float = 1800.0,
        poll: tuple[float, float] = (2.0, 15.0),
        opener: Callable[..., Any] = _open_url,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.target = target
        self.timeout = timeout
        self.wait = wait
        self.poll = poll
        self._token = token
        self._open = opener
        self._sleep = sleep
        self._clock = clock

    def _request(
        self, what: str, method: str, name: str, body: Any = None, *, missing_ok: bool = False
    ) -> Any:
        url = f"{self.target.url(name)}?api-version={ARM_API_VERSION}"
        headers = {"Authorization": f"Bearer {self._token()}", "Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        request = Request(url, data=data, method=method, headers=headers)
        try:
            with self._open(request, timeout=self.timeout) as reply:
                raw = reply.read()
            return json.loads(raw) if raw else None
        except HTTPError as err:
            status, raw = err.code, err.read()
            reason = str(err.reason)
        except (OSError, ValueError) as exc:  # URLError, timeouts, a reply that is not JSON
            raise ProviderUnreachableError(
                f"azure: {what}: no answer from {self.target.management_endpoint} "
                f"({type(exc).__name__}); check backend.options.management_endpoint",
                url=self.target.management_endpoint,
            ) from exc
        if missing_ok and status == 404:
            return None
        try:
            error = json.loads(raw).get("error") or {}
        except (ValueError, AttributeError):
            error = {}
        said = f"{error.get('code') or 'HTTP'} {error.get('message') or reason}"
        said = " ".join(said.split())[:300]
        if status in (401, 403):
            raise ProviderAuthError(
                f"azure: {what}: HTTP {status} {said}: the identity needs "
                f"Microsoft.CognitiveServices/accounts/deployments/write on {self.target.account} "
                "(e.g. the Cognitive Services Contributor role)"
            )
        raise BackendError(f"azure: {what} {name}: HTTP {status} {said}")

    def create(self, name: str, model: str, *, fmt: str = "OpenAI", capacity: int = 50) -> Any:
        """``PUT`` the Developer deployment ``name`` of ``model``; ARM's reply."""
        body = {
            "sku": {"name": "DeveloperTier", "capacity": capacity},
            "properties": {"model": {"format": fmt, "name": model, "version": "1"}},
        }
        return self._request("create deployment", "PUT", name, body)

    def state(self, name: str) -> str:
        """The deployment's ``properties.provisioningState``."""
        found = self._request("read deployment", "GET", name) or {}
        return str((found.get("properties") or {}).get("provisioningState") or "")

    def wait_ready(self, name: str) -> None:
        """Poll until ``Succeeded``; one line on ``Failed`` / ``Canceled`` or after ``wait``."""
        start, pause = self._clock(), self.poll[0]
        while True:
            state = self.state(name)
            if state == "Succeeded":
                return
            if state in _FAILED:
                raise BackendError(f"azure: deployment {name} ended {state} (Azure portal, "
                                   "Deployments, shows why)")  # fmt: skip
            if self._clock() - start >= self.wait:
                raise BackendError(
                    f"azure: deployment {name} not ready after {self.wait:g} s (state "
                    f"{state or 'unknown'}); raise backend.options.deployment_wait"
                )
            self._sleep(pause)
            pause = min(pause * 2, self.poll[1])

    def delete(self, name: str) -> None:
        """``DELETE`` the deployment ``name`` (one that does not exist is no error)."""
        self._request("delete deployment", "DELETE", name, missing_ok=True)

    @contextmanager
    def deployed(
        self, name: str, model: str, *, fmt: str = "OpenAI", warn: Callable[[str], None]
    ) -> Iterator[str]:
        """Create ``name``, wait until it serves, yield it; delete it always after (a
        failed delete is a warning to ``warn`` naming what to delete by hand)."""
        try:
            self.create(name, model, fmt=fmt)
            self.wait_ready(name)
            yield name
        finally:
            try:
                self.delete(name)
            except BackendError as exc:
                warn(
                    f"{exc}: delete deployment {name} of {self.target.account} by hand "
                    "(Azure portal, or az cognitiveservices account deployment delete)"
                )

"""Calling the provider: retries with back-off, and errors translated at the boundary.

The SDK clients are built with ``max_retries=0``: retrying a job create after a 5xx could
create a second job, so every retry happens here, where :meth:`Caller.call` can first ask
whether the previous attempt went through (``recover``). On an injected sleeper and clock:

* 429s (per-minute limits, the daily job cap, quota) and 5xx back off (``retry-after`` when
  the provider sends one); when the wait would exceed ``max_wait`` the call fails with
  :class:`ProviderBusyError`, so the engine can reschedule instead of blocking.
* Connection failures (refused, no such host, TLS, timeouts) are retried for
  ``connect_wait`` seconds, then :class:`ProviderUnreachableError` names the URL and where
  it is set. An address that does not answer is not a busy provider: nothing waits on it.
* 401/403, and an account that may not fine-tune, are :class:`ProviderAuthError` at once,
  naming what to check: no retry can fix them.
* Any other API error becomes a :class:`BackendError` with the provider's message.

Messages never contain a key.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from orchestrator.core.errors import (
    BackendError,
    ProviderAuthError,
    ProviderBusyError,
    ProviderUnreachableError,
)

__all__ = [
    "Caller",
    "Provider",
    "ProviderAuthError",
    "ProviderBusyError",
    "ProviderUnreachableError",
    "RetryPolicy",
    "connection_reason",
    "describe",
    "redact",
    "refuses_fine_tuning",
]

T = TypeVar("T")
_KEYLIKE = re.compile(r"\b(sk-|sess-)[A-Za-z0-9_*.\-]{6,}")
#: what providers say when the account (organization, project, resource) may not fine-tune
_NO_FINE_TUNING = re.compile(
    r"not (allowed|permitted|authori[sz]ed|enabled) to (create|use|run) fine.?tun"
    r"|(do|does) not have access to fine.?tun"
    r"|fine.?tuning is not (available|enabled|allowed|supported) (for|in|on) (your|this)"
    r"|(organi[sz]ation|project|account|subscription)\b[^.]{0,80}\bnot (allowed|permitted|"
    r"authori[sz]ed|enabled)\b[^.]{0,40}fine.?tun",
    re.IGNORECASE,
)
#: (words in a failed connection's exception chain, what to say), first match wins
_CONNECTION_REASONS = (
    (("connection refused", "errno 111", "errno 61"), "connection refused"),
    (
        (
            "name or service not known",
            "nodename nor servname",
            "getaddrinfo failed",
            "temporary failure in name resolution",
            "no address associated",
        ),
        "the host name does not resolve",
    ),
    (("certificate verify failed", "certificate_verify_failed"), "TLS certificate not trusted"),
    (("ssl", "tls"), "TLS handshake failed"),
    (("network is unreachable",), "network is unreachable"),
    (("no route to host",), "no route to host"),
    (("connection reset", "remote end closed", "server disconnected"), "connection dropped"),
    (("timed out", "timeout"), "timed out"),
)


@dataclass(frozen=True)
class RetryPolicy:
    """How long to keep trying one call."""

    max_attempts: int = 6
    max_wait: float = 300.0  # seconds of sleeping per call, in total
    base_delay: float = 1.0
    max_delay: float = 60.0
    #: seconds of failed connections before the provider counts as unreachable
    connect_wait: float = 30.0


def _nowhere() -> str:
    return "the provider"


@dataclass(frozen=True)
class Provider:
    """Whom a :class:`Caller` calls, for the messages of errors the user must fix."""

    name: str = "the provider"
    #: what to check when the credentials are refused, e.g. ``OPENAI_API_KEY``
    credentials: str = "the API key"
    #: where the address is set, e.g. ``OPENAI_BASE_URL / backend.options.base_url``
    address_setting: str = "the provider's address"
    #: what decides whether the account may fine-tune
    access: str = "the account's fine-tuning access"
    #: the address called (read when a message needs it)
    url: Callable[[], str] = field(default=_nowhere)


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` without the given secrets or anything that looks like an OpenAI key."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return _KEYLIKE.sub(r"\1***", text)


def _error_data(exc: Any) -> dict[str, Any]:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict):
            return inner
    return {}


def describe(exc: Exception) -> str:
    """The provider's own message: ``HTTP 429 daily_rate_limit_exceeded: ...``."""
    data = _error_data(exc)
    message = data.get("message") or getattr(exc, "message", None) or str(exc)
    code = data.get("code")
    status = getattr(exc, "status_code", None)
    head = " ".join(str(x) for x in (f"HTTP {status}" if status else None, code) if x)
    return f"{head}: {message}" if head else str(message)


def _status_head(exc: Exception) -> str:
    """``HTTP 401 invalid_api_key``: the status and code, without the message (a 401's
    message may quote part of the key)."""
    code = _error_data(exc).get("code")
    status = getattr(exc, "status_code", None)
    return " ".join(str(x) for x in (f"HTTP {status}" if status else None, code) if x)


def refuses_fine_tuning(message: str) -> bool:
    """Does this provider message say the account (organization, project, resource) may not
    fine-tune at all, rather than that one request is wrong?"""
    return bool(_NO_FINE_TUNING.search(message))


def connection_reason(exc: BaseException) -> str:
    """Why a connection failed, in a few words (``connection refused``), from the chain of
    exceptions under the SDK's ``APIConnectionError``."""
    import openai

    if isinstance(exc, openai.APITimeoutError):
        return "timed out"
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and len(chain) < 8:
        chain.append(current)
        current = current.__cause__ or current.__context__
    text = " ".join(f"{type(e).__name__} {e}" for e in chain).lower()
    for needles, reason in _CONNECTION_REASONS:
        if any(n in text for n in needles):
            return reason
    return "connection failed"


def _retry_after(exc: Any) -> float | None:
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None)
    if headers is None:
        return None
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        raw = headers.get(name)
        if raw:
            try:
                return max(0.0, float(raw) * scale)
            except ValueError:
                continue
    return None


class Caller:
    """Runs provider calls under a :class:`RetryPolicy` with an injected sleeper and clock."""

    def __init__(
        self,
        policy: RetryPolicy | None = None,
        *,
        sleeper: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        secrets: Callable[[], Iterable[str]] = lambda: (),
        provider: Provider | Callable[[], Provider] | None = None,
    ) -> None:
        self.policy = policy or RetryPolicy()
        self.sleeper = sleeper
        self.clock = clock
        self.secrets = secrets
        #: names for messages (a callable is asked each time: it may read the environment)
        self.provider = provider or Provider()

    def message(self, text: str) -> str:
        return redact(text, self.secrets())

    def call(
        self,
        what: str,
        fn: Callable[[], T],
        *,
        recover: Callable[[], T | None] | None = None,
        retry_if: Callable[[Exception], bool] | None = None,
    ) -> T:
        """``fn()``, retried on 429/5xx/connection errors. Before each retry ``recover()`` may
        return the result the failed attempt produced after all (e.g. the job it created).
        ``retry_if`` says which other API errors are worth retrying (a file not ready yet)."""
        import openai

        policy = self.policy
        started, slept = self.clock(), 0.0
        unreachable_since: float | None = None  # when connections began failing
        unreachable_slept = 0.0
        for attempt in range(1, policy.max_attempts + 1):
            if attempt > 1 and recover is not None:
                found = recover()
                if found is not None:
                    return found
            try:
                return fn()
            except openai.APIConnectionError as exc:  # refused, DNS, TLS, timeouts
                now = self.clock()
                if unreachable_since is None:
                    unreachable_since = now
                failing = max(now - unreachable_since, unreachable_slept)
                left = policy.connect_wait - failing
                if attempt == policy.max_attempts or left <= 0:
                    raise self._unreachable(exc) from exc
                delay = min(self._backoff(attempt), left)
                self.sleeper(delay)
                slept += delay
                unreachable_slept += delay
                continue
            except (openai.AuthenticationError, openai.PermissionDeniedError) as exc:
                raise self._refused(exc) from exc
            except openai.RateLimitError as exc:
                failure: Exception = exc
                hint = _retry_after(exc)
                delay = hint if hint is not None else self._backoff(attempt)
                busy = True
            except openai.InternalServerError as exc:
                failure, hint, busy = exc, _retry_after(exc), True
                delay = hint if hint is not None else self._backoff(attempt)
            except openai.APIStatusError as exc:
                if refuses_fine_tuning(describe(exc)):
                    raise self._refused(exc) from exc
                if retry_if is None or not retry_if(exc):
                    raise BackendError(self.message(f"{what} failed: {describe(exc)}")) from exc
                failure, hint, delay, busy = exc, None, self._backoff(attempt), False
            except openai.OpenAIError as exc:
                raise BackendError(self.message(f"{what} failed: {exc}")) from exc
            waited = max(slept, self.clock() - started)
            if attempt == policy.max_attempts or waited + delay > policy.max_wait:
                text = self.message(
                    f"{what} failed after {attempt} attempt(s): {describe(failure)}"
                )
                if busy:
                    raise ProviderBusyError(text, hint) from failure
                raise BackendError(text) from failure
            self.sleeper(delay)
            slept += delay
        raise AssertionError("unreachable")  # pragma: no cover

    def _who(self) -> Provider:
        return self.provider() if callable(self.provider) else self.provider

    def _unreachable(self, exc: Exception) -> ProviderUnreachableError:
        p = self._who()
        url = p.url()
        text = f"cannot reach {url}: {connection_reason(exc)} (set {p.address_setting})"
        return ProviderUnreachableError(self.message(text), url)

    def _refused(self, exc: Exception) -> ProviderAuthError:
        """401: the credentials; 403 or a refusal to fine-tune: the account's permissions."""
        p = self._who()
        if refuses_fine_tuning(describe(exc)):
            text = (
                f"{p.name} does not allow fine-tuning for this account ({describe(exc)}): "
                f"check {p.access}"
            )
        elif getattr(exc, "status_code", None) == 401:
            text = f"{p.name} rejected the credentials ({_status_head(exc)}): check {p.credentials}"
        else:
            text = (
                f"{p.name} refused access ({describe(exc)}): check {p.credentials} and {p.access}"
            )
        return ProviderAuthError(self.message(text))

    def _backoff(self, attempt: int) -> float:
        return float(min(self.policy.max_delay, self.policy.base_delay * 2 ** (attempt - 1)))

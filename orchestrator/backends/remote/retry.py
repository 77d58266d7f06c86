"""Calling the provider: retries with back-off, and errors translated at the boundary.

The SDK clients are built with ``max_retries=0``: retrying a job create after a 5xx could
create a second job, so every retry happens here, where :meth:`Caller.call` can first ask
whether the previous attempt went through (``recover``). 429s (per-minute limits and the
daily job cap) and 5xx/connection errors back off (``retry-after`` when the provider sends
one) on an injected sleeper and clock; when the wait would exceed the budget the call fails
with :class:`ProviderBusyError`, so the engine can reschedule instead of blocking. Any other
API error becomes a :class:`BackendError` with the provider's message. Messages never
contain a key.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from orchestrator.errors import BackendError, ProviderBusyError

__all__ = ["Caller", "ProviderBusyError", "RetryPolicy", "describe", "redact"]

T = TypeVar("T")
_KEYLIKE = re.compile(r"\b(sk-|sess-)[A-Za-z0-9_*.\-]{6,}")


@dataclass(frozen=True)
class RetryPolicy:
    """How long to keep trying one call."""

    max_attempts: int = 6
    max_wait: float = 300.0  # seconds of sleeping per call, in total
    base_delay: float = 1.0
    max_delay: float = 60.0


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
    ) -> None:
        self.policy = policy or RetryPolicy()
        self.sleeper = sleeper
        self.clock = clock
        self.secrets = secrets

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
        return the result the failed attempt produced after all (e.g. the job it created)."""
        import openai

        policy = self.policy
        started, slept = self.clock(), 0.0
        for attempt in range(1, policy.max_attempts + 1):
            if attempt > 1 and recover is not None:
                found = recover()
                if found is not None:
                    return found
            try:
                return fn()
            except openai.RateLimitError as exc:
                failure: Exception = exc
                hint = _retry_after(exc)
                delay = hint if hint is not None else self._backoff(attempt)
                busy = True
            except (openai.InternalServerError, openai.APIConnectionError) as exc:
                failure, hint, delay, busy = exc, _retry_after(exc), self._backoff(attempt), True
                delay = hint if hint is not None else delay
            except openai.APIStatusError as exc:
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

    def _backoff(self, attempt: int) -> float:
        return float(min(self.policy.max_delay, self.policy.base_delay * 2 ** (attempt - 1)))

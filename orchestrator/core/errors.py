"""The one exception tree of ftsweep.

Everything the package raises on purpose derives from :class:`OrchestratorError`;
third-party exceptions are translated where they are caught and chained (``from exc``)::

    OrchestratorError                 run-time failure, exit code 1
    ├── UsageError                    bad usage or an invalid input file, exit code 2
    │   ├── SpecError                 a sweep file: names the file and the field path
    │   ├── DataError                 a data file: names the file and the line
    │   └── UnsupportedParameterError a hyper-parameter the chosen backend cannot take
    ├── SweepNotStartedError          results asked for before the sweep ever ran (no study)
    ├── StoreUnreachableError         a tracking server or database cannot be reached
    ├── BackendError                  a backend failed (job submission, polling, cancel)
    │   ├── ProviderBusyError         the provider refuses new work for now: try again later
    │   ├── ProviderAuthError         credentials missing or refused, fine-tuning not allowed:
    │   │                             no call can succeed until the user fixes it (stop the sweep)
    │   ├── ProviderUnreachableError  no connection to the provider within the backend's wait
    │   ├── ProviderRefusedError      the provider refuses this sweep's jobs (model, tier, quota):
    │   │                             every further job would be refused too (stop the sweep)
    │   └── UnknownBackendError       no backend registered under that name (also a UsageError)
    ├── TokenizerError                token counting impossible (no tokenizer files)
    │   └── UnknownModelError         no model by that name, OpenAI or local (also a UsageError)
    └── Interrupted                   Ctrl-C (or SIGTERM, exit 143 at the CLI): exit 130
        └── SweepInterrupted          during a sweep: says which jobs still run

The CLI maps :attr:`OrchestratorError.exit_code` to the process exit status and prints
``str(error)`` as one line: messages never contain secrets or tracebacks.
"""

from __future__ import annotations

__all__ = [
    "BackendError",
    "DataError",
    "Interrupted",
    "OrchestratorError",
    "ProviderAuthError",
    "ProviderBusyError",
    "ProviderRefusedError",
    "ProviderUnreachableError",
    "SpecError",
    "StoreUnreachableError",
    "SweepInterrupted",
    "SweepNotStartedError",
    "TokenizerError",
    "UnknownBackendError",
    "UnknownModelError",
    "UnsupportedParameterError",
    "UsageError",
]


class OrchestratorError(Exception):
    """Root of every error ftsweep raises on purpose."""

    exit_code: int = 1


class UsageError(OrchestratorError):
    """Bad usage or an invalid input file: the user must change something (exit 2)."""

    exit_code = 2


class SpecError(UsageError):
    """An invalid sweep file. The message reads ``FILE: field.path: problem``."""

    def __init__(self, path: str, field: str, problem: str) -> None:
        self.path, self.field, self.problem = path, field, problem
        where = f"{path}: {field}: " if field else f"{path}: "
        super().__init__(where + problem)


class DataError(UsageError):
    """An unreadable or invalid data file. The message reads ``FILE[:LINE]: problem``."""

    def __init__(self, path: str, problem: str, line: int | None = None) -> None:
        self.path, self.problem, self.line = path, problem, line
        where = f"{path}:{line}: " if line is not None else f"{path}: "
        super().__init__(where + problem)


class UnsupportedParameterError(UsageError):
    """A hyper-parameter (or value) that the chosen backend does not accept."""


class SweepNotStartedError(OrchestratorError):
    """A sweep's results were asked for, but its study does not exist yet."""

    def __init__(self, name: str, store: str, spec: str) -> None:
        self.name, self.store, self.spec = name, store, spec
        super().__init__(
            f"sweep {name!r} has not run yet (no study in {store}): "
            f"start it with `ftsweep run {spec}`"
        )


class BackendError(OrchestratorError):
    """A backend failed to submit, poll or cancel a job."""


class ProviderBusyError(BackendError):
    """The provider refuses new work for now (rate limit, daily job cap, outage) for longer
    than a backend waits; ``retry_after`` is its hint in seconds, when it gave one. The engine
    keeps the trial and submits again later (submit is idempotent on the request's key)."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ProviderAuthError(BackendError):
    """The provider cannot be used with these credentials: none are set, they are refused
    (HTTP 401/403), or the account may not fine-tune. The message names the cause and what to
    set or check. Every further call would fail the same way, so the sweep stops at once
    (no trial is charged for it) instead of failing one trial after another."""


class ProviderRefusedError(BackendError):
    """The provider refuses the jobs this sweep asks for, for a reason no retry fixes: a
    model it does not train in this region or tier, a used-up job quota. The message names
    the cause and the fix; the sweep stops (no trial is charged for it)."""


class ProviderUnreachableError(BackendError):
    """No connection to the provider (refused, no such host, TLS, timeout) for longer than the
    backend waits. ``url`` is the address tried; the message names it and where it is set."""

    def __init__(self, message: str, url: str | None = None) -> None:
        super().__init__(message)
        self.url = url


class UnknownBackendError(BackendError, UsageError):
    """No backend is registered under the requested name."""

    exit_code = 2


class StoreUnreachableError(OrchestratorError):
    """A sweep's store (the MLflow tracking server, an Optuna or MLflow database) does not
    answer. Checked before the first trial; the message names the URL, never its password."""


class TokenizerError(OrchestratorError):
    """Tokens cannot be counted for the requested model."""


class UnknownModelError(TokenizerError, UsageError):
    """No OpenAI model and no local model by that name."""

    exit_code = 2


class Interrupted(OrchestratorError):
    """The user pressed Ctrl-C (exit 130), or SIGTERM came (the CLI raises Ctrl-C's
    :class:`KeyboardInterrupt` for it and exits 143)."""

    exit_code = 130


class SweepInterrupted(Interrupted):
    """The user interrupted a sweep; the message says which jobs are still running and that
    ``ftsweep run`` re-attaches to them."""

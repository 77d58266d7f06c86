"""Faults the simulator injects on request, from a JSON/YAML file or ``PUT /_sim/faults``.

::

    max_running: {openai: 3, azure: 3}   # running jobs per API (or one int for both); others wait
    azure_quota: {queued: 20, total: 100}  # Azure: pending jobs and jobs in all per resource
    # in_flight: 3                       #   and, when set, unfinished jobs at most (a strict
    #                                    #   Azure that queues nothing beyond its running cap)
    azure_new_customer: false            # Azure refuses OpenAI models (existing customers only)
    developer_pauses: [[0.3, 600], [0.7, 300]]  # developerTier: [fraction of steps, seconds]
    file_processing_seconds: 2           # simulated seconds before an upload is processed
    stuck_files: ["slow-*.jsonl"]        # uploads with these names never finish processing
    requests:                            # HTTP errors, matched in order
      - op: jobs.create                  # operation name glob (see OPERATIONS); default "*"
        api: "*"                         # openai | azure | *
        status: 429                      # 429 adds retry-after; 5xx a server error body
        code: daily_rate_limit_exceeded  # default: per status and API
        retry_after: 30
        times: 1                         # matching requests that fail (0: all of them)
        skip: 0                          # matching requests let through first
        when: before                     # after: the operation is done, then the error is sent
        sdk_retry: false                 # the x-should-retry header sent with the error
    jobs:                                # jobs that fail, matched at creation
      - nth: 2                           # the 2nd job created; or model / suffix globs
        code: invalid_training_file
        message: "..."
        param: training_file
        at_step: null                    # fail while validating files, or at this training step

A training file with fewer than 10 examples fails with ``invalid_n_examples`` without any
fault configured.

Every field is checked (types, ranges, known operation names): a bad configuration is a
:class:`~orchestrator.core.errors.UsageError` naming the field (``PUT /_sim/faults:
requests.0.status: input should be a valid integer``) and the previous one stays.
"""

from __future__ import annotations

import fnmatch
import os
from typing import Annotated, Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from orchestrator.core.errors import UsageError

__all__ = [
    "DEFAULT_MAX_RUNNING",
    "OPERATIONS",
    "Faults",
    "JobFault",
    "RequestFault",
    "load_faults",
]

#: Azure: 3 running training jobs per resource on Standard and Global (docs, 2026-02-17)
DEFAULT_MAX_RUNNING: dict[str, int | None] = {"openai": 3, "azure": 3}
#: the operation names of the API (``op`` in faults and in the request log)
OPERATIONS = (
    "files.create", "files.list", "files.retrieve", "files.delete", "files.content",
    "jobs.create", "jobs.list", "jobs.retrieve", "jobs.cancel", "jobs.pause",
    "jobs.resume", "jobs.delete", "jobs.events", "jobs.checkpoints", "models.list",
    "models.retrieve", "chat.create", "deployments.create", "deployments.retrieve",
    "deployments.delete",
)  # fmt: skip
_APIS = ("openai", "azure")
_BIG = 10**9

Glob = Annotated[str, Field(min_length=1, max_length=200)]
Count = Annotated[int, Field(ge=0, le=_BIG)]
Short = Annotated[str, Field(max_length=200)]
Message = Annotated[str, Field(max_length=10_000)]


class _Config(BaseModel):
    """Strict, closed, finite; mutable (the counters advance as faults fire)."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class RequestFault(_Config):
    """An HTTP error returned for matching requests."""

    status: int = Field(ge=400, le=599)
    op: Glob = "*"
    api: Literal["openai", "azure", "*"] = "*"
    code: Short | None = None
    message: Message | None = None
    retry_after: float | None = Field(default=None, ge=0, le=_BIG)
    times: Count = 1
    skip: Count = 0
    when: Literal["before", "after"] = "before"
    sdk_retry: bool = False  # x-should-retry header: false keeps the SDK from sleeping
    seen: Count = 0  # matching requests so far (state)

    @field_validator("op")
    @classmethod
    def _known(cls, v: str) -> str:
        if not fnmatch.filter(OPERATIONS, v):
            raise ValueError(f"{v!r} matches no operation; known: {', '.join(OPERATIONS)}")
        return v

    def claim(self, op: str, api: str) -> bool:
        """Count a matching request; True when this one must fail."""
        if not (fnmatch.fnmatchcase(op, self.op) and self.api in ("*", api)):
            return False
        self.seen += 1
        n = self.seen - self.skip
        return n >= 1 and (self.times == 0 or n <= self.times)


class JobFault(_Config):
    """A job that fails with the provider's error code, while validating or at a step."""

    code: Annotated[str, Field(min_length=1, max_length=200)] = "server_error"
    message: Message = "The job failed due to an internal error."
    param: Short | None = None
    nth: Annotated[int, Field(ge=1, le=_BIG)] | None = None
    model: Glob | None = None
    suffix: Glob | None = None
    at_step: Annotated[int, Field(ge=1, le=_BIG)] | None = None
    times: Count = 1
    used: Count = 0  # state

    def claim(self, nth: int, model: str, suffix: str | None) -> bool:
        """True (and counted) when the job created ``nth`` must fail."""
        if self.times and self.used >= self.times:
            return False
        if self.nth is not None and self.nth != nth:
            return False
        if self.model is not None and not fnmatch.fnmatchcase(model, self.model):
            return False
        if self.suffix is not None and not fnmatch.fnmatchcase(suffix or "", self.suffix):
            return False
        self.used += 1
        return True


class AzureQuota(_Config):
    """Azure's per-resource training-job quotas."""

    queued: Count = 20
    total: Count = 100
    #: unfinished jobs (validating, queued, running) at most, a create beyond refused with
    #: ``quotaExceeded``; None (default): Azure's own queue takes them. Set to the running
    #: quota, it makes a client that submits past that quota visible.
    in_flight: Count | None = None


#: [fraction of the steps (0-1), seconds]
Pause = Annotated[list[Annotated[float, Field(ge=0, le=_BIG)]], Field(min_length=2, max_length=2)]


class Faults(_Config):
    """The whole fault configuration (mutable: counters advance as faults fire)."""

    max_running: dict[str, Annotated[int, Field(ge=0, le=_BIG)] | None] = Field(
        default_factory=lambda: dict(DEFAULT_MAX_RUNNING)
    )
    file_processing_seconds: float = Field(default=2.0, ge=0, le=_BIG)
    #: Azure's per-resource job quotas (docs: 20 queued, 100 in all)
    azure_quota: AzureQuota = Field(default_factory=lambda: AzureQuota())
    #: the resource is a new customer: Azure refuses the OpenAI models it trains for existing
    #: customers only (gpt-4o, gpt-4o-mini, the gpt-4.1 family; the wording is a guess)
    azure_new_customer: bool = False
    #: Developer-tier pre-emptions (a guess at their shape): each [fraction of the job's
    #: steps, simulated seconds paused]
    developer_pauses: list[Pause] = Field(
        default_factory=lambda: [[0.3, 600.0], [0.7, 300.0]], max_length=100
    )
    stuck_files: list[Glob] = Field(default_factory=list, max_length=1000)
    requests: list[RequestFault] = Field(default_factory=list, max_length=1000)
    jobs: list[JobFault] = Field(default_factory=list, max_length=1000)

    @field_validator("developer_pauses")
    @classmethod
    def _fractions(cls, v: list[list[float]]) -> list[list[float]]:
        if any(pause[0] > 1 for pause in v):
            raise ValueError("each pause is [fraction of the steps (0 to 1), seconds]")
        return v

    @field_validator("max_running", mode="before")
    @classmethod
    def _per_api(cls, v: Any) -> Any:
        if v is None or (isinstance(v, int) and not isinstance(v, bool)):
            return dict.fromkeys(_APIS, v)
        if isinstance(v, dict):
            unknown = sorted(str(k) for k in v if k not in _APIS)
            if unknown:
                raise ValueError(f"unknown API {unknown[0]!r}; give openai, azure or one int")
            return {**DEFAULT_MAX_RUNNING, **v}
        return v

    @classmethod
    def from_dict(cls, raw: Any, source: str = "faults") -> Self:
        """Parse (and check) a mapping; errors name ``source`` and the field."""
        from orchestrator.config import describe_validation_error
        from orchestrator.config.fields import printable

        if raw is None:
            return cls()
        if not isinstance(raw, dict):
            raise UsageError(f"{source}: expected a mapping, got {type(raw).__name__}")
        try:
            return cls.model_validate(raw)
        except ValidationError as exc:
            loc, problem = describe_validation_error(exc, cls)
            where = f"{source}: {loc}: " if loc else f"{source}: "
            raise UsageError(where + printable(problem, limit=400)) from None

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump()

    def request_fault(self, op: str, api: str) -> RequestFault | None:
        """The first configured fault that fires for this request, if any."""
        for fault in self.requests:
            if fault.claim(op, api):
                return fault
        return None

    def job_fault(self, nth: int, model: str, suffix: str | None) -> JobFault | None:
        for fault in self.jobs:
            if fault.claim(nth, model, suffix):
                return fault
        return None

    def stuck(self, filename: str) -> bool:
        return any(fnmatch.fnmatchcase(filename, pattern) for pattern in self.stuck_files)


def load_faults(path: str | os.PathLike[str]) -> Faults:
    """Read a faults file (YAML or JSON), as safely as a sweep file (a regular file of at
    most 1 MiB, bounded nesting, no duplicate keys)."""
    from orchestrator.config.yamlfile import YamlFileError, read_yaml

    try:
        raw = read_yaml(path, what="fault files")
    except YamlFileError as exc:
        raise UsageError(f"{path}: {exc}") from None
    return Faults.from_dict(raw, str(path))

"""Faults the simulator injects on request, from a JSON/YAML file or ``PUT /_sim/faults``.

::

    max_running: {openai: 3, azure: 1}   # running jobs per API (or one int for both); others wait
    file_processing_seconds: 2           # simulated seconds before an upload is processed
    stuck_files: ["slow-*.jsonl"]        # uploads with these names never finish processing
    requests:                            # HTTP errors, matched in order
      - op: jobs.create                  # operation name glob (see Simulator.OPS); default "*"
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
"""

from __future__ import annotations

import fnmatch
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from orchestrator.errors import UsageError

__all__ = ["DEFAULT_MAX_RUNNING", "Faults", "JobFault", "RequestFault", "load_faults"]

DEFAULT_MAX_RUNNING = {"openai": 3, "azure": 1}


@dataclass
class RequestFault:
    """An HTTP error returned for matching requests."""

    status: int
    op: str = "*"
    api: str = "*"
    code: str | None = None
    message: str | None = None
    retry_after: float | None = None
    times: int = 1
    skip: int = 0
    when: str = "before"
    sdk_retry: bool = False  # x-should-retry header: false keeps the SDK from sleeping
    seen: int = 0  # matching requests so far (state)

    def claim(self, op: str, api: str) -> bool:
        """Count a matching request; True when this one must fail."""
        if not (fnmatch.fnmatchcase(op, self.op) and self.api in ("*", api)):
            return False
        self.seen += 1
        n = self.seen - self.skip
        return n >= 1 and (self.times == 0 or n <= self.times)


@dataclass
class JobFault:
    """A job that fails with the provider's error code, while validating or at a step."""

    code: str = "server_error"
    message: str = "The job failed due to an internal error."
    param: str | None = None
    nth: int | None = None
    model: str | None = None
    suffix: str | None = None
    at_step: int | None = None
    times: int = 1
    used: int = 0  # state

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


@dataclass
class Faults:
    """The whole fault configuration (mutable: counters advance as faults fire)."""

    max_running: dict[str, int | None] = field(default_factory=lambda: dict(DEFAULT_MAX_RUNNING))
    file_processing_seconds: float = 2.0
    stuck_files: list[str] = field(default_factory=list)
    requests: list[RequestFault] = field(default_factory=list)
    jobs: list[JobFault] = field(default_factory=list)

    @classmethod
    def from_dict(cls, raw: Any, source: str = "faults") -> Faults:
        """Parse (and check) a mapping; errors name ``source`` and the field."""
        if raw is None:
            return cls()
        if not isinstance(raw, dict):
            raise UsageError(f"{source}: expected a mapping, got {type(raw).__name__}")
        unknown = set(raw) - {f for f in cls.__dataclass_fields__}
        if unknown:
            raise UsageError(f"{source}: unknown field(s): {', '.join(sorted(unknown))}")
        faults = cls()
        running = raw.get("max_running", DEFAULT_MAX_RUNNING)
        if isinstance(running, int) or running is None:
            faults.max_running = {"openai": running, "azure": running}
        elif isinstance(running, dict):
            faults.max_running = {**DEFAULT_MAX_RUNNING, **running}
        else:
            raise UsageError(f"{source}: max_running: expected an int or a mapping")
        faults.file_processing_seconds = float(raw.get("file_processing_seconds", 2.0))
        faults.stuck_files = [str(x) for x in raw.get("stuck_files", [])]
        faults.requests = [
            _build(RequestFault, item, f"{source}: requests[{i}]")
            for i, item in enumerate(raw.get("requests", []))
        ]
        faults.jobs = [
            _build(JobFault, item, f"{source}: jobs[{i}]")
            for i, item in enumerate(raw.get("jobs", []))
        ]
        for i, rf in enumerate(faults.requests):
            if rf.when not in ("before", "after"):
                raise UsageError(f"{source}: requests[{i}].when: must be before or after")
        return faults

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

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


def _build(cls: type[Any], item: Any, where: str) -> Any:
    if not isinstance(item, dict):
        raise UsageError(f"{where}: expected a mapping")
    try:
        return cls(**item)
    except TypeError as exc:
        raise UsageError(f"{where}: {exc}") from exc


def load_faults(path: str | Path) -> Faults:
    """Read a faults file (YAML or JSON)."""
    p = Path(path)
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise UsageError(f"{p}: cannot read: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise UsageError(f"{p}: not valid YAML/JSON: {exc}") from exc
    return Faults.from_dict(raw, str(p))

"""The simulator's records and where they persist.

Under the state folder: ``state.json`` (files, jobs, counters, faults and the simulated time,
written atomically after every change), ``files/<id>`` (uploaded bytes and result files) and
``requests.jsonl`` (the request log: one line per request, never a header, so never a key).
Without a state folder everything lives in a temporary folder removed on close.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.core.errors import UsageError

__all__ = ["FileRecord", "JobRecord", "Store"]


@dataclass
class FileRecord:
    """One uploaded (or generated) file."""

    id: str
    api: str
    filename: str
    purpose: str
    bytes: int
    created_at: float
    ready_at: float | None  # when processing ends; None: never (a stuck file)
    deleted: bool = False
    #: per model: n_examples, billed_tokens, sha256 and the first format error, if any
    analysis: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass
class JobRecord:
    """One fine-tuning job: what was asked, what it resolved to, and its timeline."""

    id: str
    api: str
    nth: int
    model: str
    training_file: str
    validation_file: str | None
    seed: int
    suffix: str | None
    metadata: dict[str, str] | None
    requested: dict[str, Any]  # hyper-parameters as sent ("auto" kept)
    created_at: float
    fine_tuned_model: str
    # resolved at creation from the data (used once the files are validated)
    n_epochs: int = 0
    batch_size: int = 0
    learning_rate_multiplier: float = 0.0
    n_train: int = 0
    billed_tokens: int = 0
    data_key: str = ""
    step_seconds: float = 1.0
    # timeline (simulated unix seconds)
    status: str = "validating_files"
    validated_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    pauses: list[list[float | None]] = field(default_factory=list)
    # the failure waiting to happen, then the error reported
    fail_code: str | None = None
    fail_message: str | None = None
    fail_param: str | None = None
    fail_at_step: int | None = None
    error: dict[str, Any] | None = None
    result_file: str | None = None
    trained_tokens: int | None = None
    #: Azure: the ``trainingType`` sent (``Standard``, ``GlobalStandard``, ``developerTier``)
    training_type: str | None = None
    #: Azure: ``v1`` or the ``api-version`` the job was created with
    surface: str | None = None

    @property
    def terminal(self) -> bool:
        return self.status in ("succeeded", "failed", "cancelled")

    @property
    def steps_per_epoch(self) -> int:
        return max(1, -(-self.n_train // max(1, self.batch_size)))

    @property
    def total_steps(self) -> int:
        return self.steps_per_epoch * self.n_epochs

    @property
    def paused(self) -> bool:
        return bool(self.pauses) and self.pauses[-1][1] is None

    def paused_at(self, now: float) -> bool:
        """Paused at ``now``: by a pause request, or by a planned pre-emption."""
        return any(p is not None and p <= now and (r is None or now < r) for p, r in self.pauses)

    def step_time(self, step: int) -> float:
        """When training reaches ``step`` (pauses shift it; inf while paused before it)."""
        if self.started_at is None:
            return float("inf")
        t = self.started_at + step * self.step_seconds
        for paused_at, resumed_at in self.pauses:
            if paused_at is not None and paused_at < t:
                if resumed_at is None:
                    return float("inf")
                t += resumed_at - paused_at
        return t

    def steps_done(self, now: float) -> int:
        """Training steps completed by ``now`` (bounded by the end of the job)."""
        if self.started_at is None:
            return 0
        end = min(now, self.finished_at) if self.finished_at is not None else now
        lo, hi = 0, self.fail_at_step or self.total_steps
        while lo < hi:  # the last step whose time is <= end
            mid = (lo + hi + 1) // 2
            if self.step_time(mid) <= end:
                lo = mid
            else:
                hi = mid - 1
        return lo


class Store:
    """Persists records, blobs and the request log under one folder."""

    def __init__(self, folder: str | Path | None) -> None:
        self._temporary = folder is None
        self.folder = Path(tempfile.mkdtemp(prefix="apisim-")) if folder is None else Path(folder)
        self.blobs = self.folder / "files"
        try:
            self.blobs.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UsageError(
                f"{self.folder}: cannot keep the simulator's state here: {exc.strerror or exc}"
            ) from None
        self.state_path = self.folder / "state.json"
        self.log_path = self.folder / "requests.jsonl"
        self._lock = threading.Lock()

    def load(self) -> dict[str, Any] | None:
        """The saved state, or None for a fresh folder."""
        if not self.state_path.exists():
            return None
        try:
            data = json.loads(self.state_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise UsageError(f"{self.state_path}: not a readable simulator state: {exc}") from None
        if not isinstance(data, dict):
            raise UsageError(f"{self.state_path}: not a simulator state (not a JSON object)")
        return data

    def save(self, state: dict[str, Any]) -> None:
        """Write ``state`` atomically (a crash leaves the previous state intact)."""
        with self._lock:
            tmp = self.state_path.with_name(f".state.{os.getpid()}.{threading.get_ident()}.tmp")
            tmp.write_text(json.dumps(state, separators=(",", ":")), encoding="utf-8")
            os.replace(tmp, self.state_path)

    def put_blob(self, file_id: str, data: bytes) -> Path:
        path = self.blobs / file_id
        path.write_bytes(data)
        return path

    def blob_path(self, file_id: str) -> Path:
        return self.blobs / file_id

    def log(self, entry: dict[str, Any]) -> None:
        """Append one request-log line."""
        with self._lock, self.log_path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(entry) + "\n")

    def read_log(self) -> list[dict[str, Any]]:
        if not self.log_path.exists():
            return []
        with self.log_path.open(encoding="utf-8") as fh:
            return [json.loads(line) for line in fh if line.strip()]

    def clear_log(self) -> None:
        with self._lock:
            self.log_path.unlink(missing_ok=True)

    def close(self) -> None:
        if self._temporary:
            shutil.rmtree(self.folder, ignore_errors=True)


def record_dict(record: FileRecord | JobRecord) -> dict[str, Any]:
    """A record as JSON-ready data."""
    return asdict(record)

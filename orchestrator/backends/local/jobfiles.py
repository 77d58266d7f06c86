"""One local job's folder: the files the launcher, the worker and any poller share.

::

    jobs/<job_id>/
      request.json    what to train (written once, before the worker starts)
      status.json     {"status", "error", "total_steps", "trained_tokens", "fine_tuned_model"}
      pid             the worker's pid and start time (its process group has the same id)
      cancel          present once a cancel was requested
      devices.json    the GPUs the job leased: {"devices", "lease_root", "leased", "released"}
      epoch_end.json  the last epoch end the worker wrote: {"epoch", "offset"} (the byte
                      offset just after its line in metrics.jsonl)
      epoch_ack.json  {"epoch"}: the engine has read that far (see :mod:`.handshake`)
      metrics.jsonl   one JSON object per event: {"step": 3, "train_loss": 2.1, ...}
      worker.log      the worker's stdout and stderr
      model/          the final model, or the LoRA adapter
      checkpoints/    epoch-N/ models of earlier epochs (option ``checkpoints``; by default
                      every earlier epoch's LoRA adapter, or a full fine-tune's best earlier
                      epoch so far), each a ``save_pretrained`` folder like ``model/``,
                      listed in checkpoints.json (step, epoch, metrics, model_id: the folder)

Every whole-file write is atomic (write a temporary file, then rename), and every metrics line
is written with one ``write`` call, so a reader never sees half a file, and :meth:`read_metrics`
only returns complete lines. The worker writes its last metrics line *before* its terminal
status, so a poller that reads the status first and the metrics second never misses a point.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from orchestrator.backends.base import (
    GENERATION_METRICS,
    METRIC_NAMES,
    THROUGHPUT_METRICS,
    Checkpoint,
    JobStatus,
    MetricPoint,
)
from orchestrator.core.errors import BackendError

__all__ = ["JobFolder", "MetricsWriter", "ProcessRecord", "write_json_atomic"]


def write_json_atomic(path: Path, data: Mapping[str, Any]) -> None:
    """Write ``data`` as JSON to ``path`` so readers see the old file or the new one."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, sort_keys=True)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise BackendError(f"unreadable job file {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise BackendError(f"unreadable job file {path}: not a JSON object")
    return data


def _proc_start_time(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (Linux), which tells a reused pid apart."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def _proc_state(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[0]


@dataclass(frozen=True)
class ProcessRecord:
    """The worker's pid plus what tells it apart from a later process with the same pid."""

    pid: int
    start_time: str | None

    @classmethod
    def of(cls, pid: int) -> ProcessRecord:
        return cls(pid, _proc_start_time(pid))

    def alive(self) -> bool:
        """True while the recorded process runs (a zombie counts as dead)."""
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        if self.start_time is not None and _proc_start_time(self.pid) != self.start_time:
            return False
        return _proc_state(self.pid) not in ("Z", "X")


class MetricsWriter:
    """Appends metric events to ``metrics.jsonl``, one complete line per ``write`` call."""

    def __init__(self, path: Path) -> None:
        self._file: IO[str] = path.open("a", encoding="utf-8")

    def emit(self, step: int, values: Mapping[str, float]) -> None:
        """Record ``values`` (names from :data:`METRIC_NAMES`) at optimizer ``step``."""
        # NaN and inf stay in (as JSON's NaN/Infinity): a diverged run must show as one.
        line = json.dumps({"step": step, **{k: float(v) for k, v in values.items()}}) + "\n"
        self._file.write(line)
        self._file.flush()

    @property
    def offset(self) -> int:
        """The file's size in bytes: the offset just after the last line written."""
        return os.fstat(self._file.fileno()).st_size

    def close(self) -> None:
        self._file.close()


class JobFolder:
    """Paths and atomic reads/writes of one job's folder."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @property
    def job_id(self) -> str:
        return self.path.name

    @property
    def request_file(self) -> Path:
        return self.path / "request.json"

    @property
    def status_file(self) -> Path:
        return self.path / "status.json"

    @property
    def pid_file(self) -> Path:
        return self.path / "pid"

    @property
    def cancel_file(self) -> Path:
        return self.path / "cancel"

    @property
    def devices_file(self) -> Path:
        return self.path / "devices.json"

    @property
    def epoch_end_file(self) -> Path:
        return self.path / "epoch_end.json"

    @property
    def epoch_ack_file(self) -> Path:
        return self.path / "epoch_ack.json"

    @property
    def metrics_file(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def log_file(self) -> Path:
        return self.path / "worker.log"

    @property
    def model_dir(self) -> Path:
        return self.path / "model"

    @property
    def checkpoint_dir(self) -> Path:
        return self.path / "checkpoints"

    @property
    def checkpoints_file(self) -> Path:
        return self.path / "checkpoints.json"

    def write_checkpoints(self, kept: list[dict[str, Any]]) -> None:
        write_json_atomic(self.checkpoints_file, {"checkpoints": kept})

    def read_checkpoints(self) -> tuple[Checkpoint, ...]:
        data = _read_json(self.checkpoints_file) or {"checkpoints": []}
        return tuple(
            Checkpoint(
                step=int(c["step"]),
                epoch=int(c["epoch"]),
                metrics={k: float(v) for k, v in c["metrics"].items() if k in METRIC_NAMES},
                model_id=str(c["model_id"]),
            )
            for c in data["checkpoints"]
        )

    def read_request(self) -> dict[str, Any]:
        data = _read_json(self.request_file)
        if data is None:
            raise BackendError(f"job {self.job_id}: no request.json in {self.path}")
        return data

    def read_status(self) -> dict[str, Any]:
        """The last written status; ``queued`` before the worker wrote one."""
        data = _read_json(self.status_file) or {"status": JobStatus.QUEUED.value}
        try:
            JobStatus(str(data.get("status")))
        except ValueError as exc:
            raise BackendError(f"job {self.job_id}: bad status in {self.status_file}") from exc
        return data

    def write_status(self, status: JobStatus, **fields: Any) -> None:
        """Replace the status, keeping earlier fields that ``fields`` does not override."""
        data = _read_json(self.status_file) or {}
        data.update(fields)
        data["status"] = status.value
        data["updated"] = time.time()
        write_json_atomic(self.status_file, data)

    def write_pid(self, record: ProcessRecord) -> None:
        write_json_atomic(self.pid_file, {"pid": record.pid, "start_time": record.start_time})

    def read_pid(self) -> ProcessRecord | None:
        data = _read_json(self.pid_file)
        if data is None:
            return None
        return ProcessRecord(int(data["pid"]), data.get("start_time"))

    def read_devices(self) -> dict[str, Any] | None:
        """The job's GPU leases (None: it leased none)."""
        return _read_json(self.devices_file)

    def write_devices(self, data: Mapping[str, Any]) -> None:
        write_json_atomic(self.devices_file, data)

    def write_epoch_end(self, epoch: int, offset: int) -> None:
        """Epoch ``epoch`` ended; its line in ``metrics.jsonl`` ends at byte ``offset``."""
        write_json_atomic(self.epoch_end_file, {"epoch": epoch, "offset": offset})

    def read_epoch_end(self) -> tuple[int, int] | None:
        """The last epoch end the worker wrote, as (epoch, offset); None before the first."""
        data = _read_json(self.epoch_end_file)
        return None if data is None else (int(data["epoch"]), int(data["offset"]))

    def write_epoch_ack(self, epoch: int) -> None:
        write_json_atomic(self.epoch_ack_file, {"epoch": epoch})

    def read_epoch_ack(self) -> int:
        """The last epoch end the engine has read (0: none)."""
        data = _read_json(self.epoch_ack_file)
        return 0 if data is None else int(data["epoch"])

    def cancel_requested(self) -> bool:
        return self.cancel_file.exists()

    def request_cancel(self) -> None:
        self.cancel_file.touch(exist_ok=True)

    def read_metrics(self, offset: int) -> tuple[list[MetricPoint], int]:
        """The points on complete lines after byte ``offset``, and the offset after them."""
        try:
            with self.metrics_file.open("rb") as f:
                f.seek(offset)
                chunk = f.read()
        except FileNotFoundError:
            return [], offset
        end = chunk.rfind(b"\n") + 1
        points: list[MetricPoint] = []
        for raw in chunk[:end].splitlines():
            try:
                event = json.loads(raw)
                step = int(event.pop("step"))
            except (ValueError, KeyError, TypeError) as exc:
                raise BackendError(f"job {self.job_id}: corrupt line in metrics.jsonl") from exc
            points.extend(
                MetricPoint(step, name, float(value))
                for name, value in event.items()
                if name in METRIC_NAMES
                or name in GENERATION_METRICS
                or name in THROUGHPUT_METRICS
                or name.startswith("eval_")  # the evaluate: block's scores (.taskeval)
            )
        return points, offset + end

    def log_tail(self, n_lines: int = 3) -> str:
        """The last non-blank lines of the worker's log, joined with `` | ``."""
        try:
            with self.log_file.open("rb") as f:
                f.seek(max(0, f.seek(0, os.SEEK_END) - 4096))
                text = f.read().decode("utf-8", "replace")
        except OSError:
            return ""
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        return " | ".join(lines[-n_lines:])

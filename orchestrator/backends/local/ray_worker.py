"""The entrypoint of one Ray job: ``python -m orchestrator.backends.local.ray_worker``.

It runs on a Ray node, started by :class:`~.ray_executor.RayExecutor`'s ``submit`` with the
runtime env that carries everything: the request record (``FTSWEEP_RAY_REQUEST``; its data
paths relative to the job's working directory, where the data were unpacked), the job's id
(``FTSWEEP_RAY_JOB``) and where models go (``FTSWEEP_RAY_MODEL_DIR``).

1. It makes the job's folder (:mod:`.jobfiles`): ``MODEL_DIR/<job id>/`` when ``model_dir``
   is a shared path (so the driver's polls can acknowledge epoch ends, :mod:`.handshake`),
   else a temporary folder on this node.
2. It starts the local backend's worker (:mod:`.worker`; with several GPUs under
   ``torchrun``) on that folder, with the GPUs Ray gave the job.
3. While the worker runs, it relays to its stdout (the Ray job's logs) the worker's log lines
   as they are, and as ``@ftsweep {json}`` lines every metric line (``{"metric": {...}}``),
   each epoch end after its metric line (``{"epoch_end": N}``), each status change
   (``{"status": {...}}``) and the kept checkpoints (``{"checkpoints": {...}}``). One thread
   writes them all, so no two lines interleave.
4. When the worker has ended it relays what is left, uploads the model (and checkpoints) to
   ``model_dir`` when that is a URL, and prints the terminal status last: a reader that sees
   it has every point. SIGTERM (Ray's ``stop_job``) is passed on to the worker, which stops
   before its next forward pass and reports ``cancelled``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType
from typing import Any

from orchestrator.backends.base import JobStatus
from orchestrator.backends.local.devices import worker_command
from orchestrator.backends.local.jobfiles import JobFolder, write_json_atomic
from orchestrator.backends.local.ray_executor import EVENT_PREFIX, is_url

__all__ = ["Relay", "main", "upload_model"]

#: seconds between two looks at the job's folder
EVERY_S = 0.1


class Relay:
    """Copies what the worker writes into ``folder`` to ``out`` (see the module docstring)."""

    def __init__(self, folder: JobFolder, out: Any = None) -> None:
        self.folder = folder
        self.out = out if out is not None else sys.stdout
        self.log_offset = 0
        self.metrics_offset = 0
        self.epoch = 0
        self.status: dict[str, Any] | None = None
        self.checkpoints: Any = None

    def event(self, data: dict[str, Any]) -> None:
        """Print one ``@ftsweep`` line."""
        self.out.write(EVENT_PREFIX + json.dumps(data, sort_keys=True) + "\n")
        self.out.flush()

    def pump(self, *, final: bool = False) -> dict[str, Any]:
        """Relay what is new; the terminal status only when ``final``. The status read."""
        status = self.folder.read_status()  # before the metrics: as a poll of the folder
        self.log_offset = self._lines(self.folder.log_file, self.log_offset, self._log_line)
        self.metrics_offset = self._lines(
            self.folder.metrics_file, self.metrics_offset, self._metric_line
        )
        end = self.folder.read_epoch_end()
        if end is not None and end[0] > self.epoch and end[1] <= self.metrics_offset:
            self.epoch = end[0]
            self.event({"epoch_end": end[0]})
        try:
            kept = json.loads(self.folder.checkpoints_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            kept = None
        if kept is not None and kept != self.checkpoints:
            self.checkpoints = kept
            self.event({"checkpoints": kept})
        shown = {k: v for k, v in status.items() if k != "updated"}
        if shown != self.status and (final or not JobStatus(status["status"]).terminal):
            self.status = shown
            self.event({"status": shown})
        return status

    def _lines(self, path: Path, offset: int, each: Any) -> int:
        try:
            with path.open("rb") as f:
                f.seek(offset)
                chunk = f.read()
        except FileNotFoundError:
            return offset
        end = chunk.rfind(b"\n") + 1
        for raw in chunk[:end].splitlines():
            each(raw.decode("utf-8", "replace"))
        return offset + end

    def _log_line(self, line: str) -> None:
        if line.startswith(EVENT_PREFIX):  # never let the worker's log pass for an event
            line = " " + line
        self.out.write(line + "\n")

    def _metric_line(self, line: str) -> None:
        self.event({"metric": json.loads(line)})


def _folder(job: str, model_dir: str) -> JobFolder:
    if is_url(model_dir):
        root = Path(tempfile.mkdtemp(prefix="ftsweep-ray-"))
    else:
        root = Path(model_dir.removeprefix("file://")).expanduser()
    folder = JobFolder(root / job)
    if folder.path.exists():  # a job id runs once per cluster: this is an older cluster's
        shutil.rmtree(folder.path)
    folder.path.mkdir(parents=True)
    return folder


def upload_model(folder: JobFolder, url: str, job: str) -> str:
    """Copy the model and the checkpoints to ``url/job/``; that folder's URL."""
    import fsspec

    target = f"{url.rstrip('/')}/{job}"
    fs, root = fsspec.core.url_to_fs(target)
    for part in (folder.model_dir, folder.checkpoint_dir):
        if part.is_dir():
            fs.put(str(part), f"{root}/{part.name}", recursive=True)
    return target


def run(record: dict[str, Any], job: str, model_dir: str) -> int:
    """Run the job; the process exit code (1: the job failed)."""
    folder = _folder(job, model_dir)
    for name in ("train_file", "valid_file"):
        if record.get(name):
            record[name] = str(Path(record[name]).resolve())
    write_json_atomic(folder.request_file, record)
    folder.write_status(JobStatus.QUEUED)
    gpus = int(record.get("options", {}).get("gpus_per_trial") or 0)
    relay = Relay(folder)
    with folder.log_file.open("ab") as log:
        proc = subprocess.Popen(
            worker_command(sys.executable, folder.path, gpus),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=folder.path,
        )

    def stop(signum: int, frame: FrameType | None) -> None:
        folder.request_cancel()
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    while proc.poll() is None:
        relay.pump()
        time.sleep(EVERY_S)
    status = folder.read_status()
    if not JobStatus(status["status"]).terminal:
        how = f"exit code {proc.returncode}"
        if proc.returncode < 0:
            how = f"killed by {signal.Signals(-proc.returncode).name}"
        error = f"the worker ended ({how}) without reporting a result: {folder.log_tail()}"
        folder.write_status(JobStatus.FAILED, error=error)
    elif status["status"] == JobStatus.SUCCEEDED.value and is_url(model_dir):
        target = upload_model(folder, model_dir, job)
        model = status.get("fine_tuned_model")
        if model:
            folder.write_status(
                JobStatus.SUCCEEDED, fine_tuned_model=model.replace(str(folder.path), target)
            )
    final = relay.pump(final=True)
    return 1 if final["status"] == JobStatus.FAILED.value else 0


def main() -> int:
    """Entry point: everything comes from the runtime env's variables."""
    try:
        record = json.loads(os.environ["FTSWEEP_RAY_REQUEST"])
        job = os.environ["FTSWEEP_RAY_JOB"]
        model_dir = os.environ["FTSWEEP_RAY_MODEL_DIR"]
    except (KeyError, ValueError) as exc:
        sys.stderr.write(f"ray_worker: the job's runtime env lacks {exc}\n")
        return 2
    return run(record, job, model_dir)


if __name__ == "__main__":
    raise SystemExit(main())

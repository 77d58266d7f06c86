"""The ``ray`` executor: each local-trainer job is one Ray job, through Ray's Jobs API.

* **Address**: ``backend.options.ray_address``, else ``RAY_ADDRESS``: the Ray dashboard's
  HTTP address (``http://HOST:8265``; a bare ``HOST:PORT`` gets ``http://``).
* **Identity**: the job's ``submission_id`` is :func:`submission_id` of the request's key
  (``ftsweep-`` and 24 hex digits of its SHA-256), with the key in the job's metadata. So
  ``submit`` after a crash finds the first job (``GET /api/jobs/ID`` before submitting; a
  submit that loses a race to the same id gets "already exists" and returns that job), and
  ``find`` from a fresh process needs nothing on this machine.
* **Resources**: ``entrypoint_num_gpus = gpus_per_trial`` (0 when unset: CPU training),
  ``entrypoint_num_cpus = ray_num_cpus``, ``entrypoint_memory = ray_memory_gb``. Ray queues
  a job until a node has them, so ``parallel`` above what the cluster holds just queues.
* **What travels**: the runtime env carries the training data (``working_dir``: a folder of
  the train and validation files, uploaded once per content), this ftsweep package
  (``py_modules``, so the cluster runs the driver's code) and the request record
  (``FTSWEEP_RAY_REQUEST``). The cluster's ``python`` must have ftsweep's ``local`` extra
  (torch, transformers); the base model is a hub name or a path every node has.
* **The job** runs ``python -m orchestrator.backends.local.ray_worker`` (:mod:`.ray_worker`),
  which prints every metric line, epoch end and status change to its stdout as one
  ``@ftsweep {json}`` line. A poll reads the job's status first and its logs second, so a
  terminal status comes with every point; the cursor is the offset in the logs after the
  last complete line read.
* **Models** go to ``model_dir``: a path every node shares (the job's folder is then
  ``MODEL_DIR/<submission_id>/``, with the model in ``model/``), or an fsspec URL (the job
  trains in a local folder and uploads ``model/`` there when it succeeds).
* **Epoch handshake** (:mod:`.handshake`): with a shared path the job's folder is shared,
  so a poll past an epoch's end writes ``epoch_ack.json`` there as the ``here`` executor
  does, and a pruned job stops at its epoch. With a URL there is no shared folder: the
  handshake is off (``epoch_handshake_s: 0``) and a pruned job trains on until
  ``stop_job`` lands.
* **Cancel**: ``stop_job`` (Ray sends SIGTERM, then SIGKILL), plus the ``cancel`` file when
  the folder is shared. A node lost mid-job makes a ``FAILED`` Ray job: a failed trial, which
  the engine re-runs as it re-runs any failed trial.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import urllib.error
import urllib.request
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orchestrator
from orchestrator.backends.base import (
    GENERATION_METRICS,
    METRIC_NAMES,
    THROUGHPUT_METRICS,
    Checkpoint,
    JobStatus,
    JobUpdate,
    MetricPoint,
    TrainingRequest,
    epoch_ends_of,
)
from orchestrator.backends.local.jobfiles import JobFolder
from orchestrator.backends.local.options import LocalOptions
from orchestrator.core.errors import BackendError, ProviderUnreachableError, UsageError

__all__ = ["EVENT_PREFIX", "RayExecutor", "is_url", "parse_events", "submission_id"]

#: the prefix of the job's event lines in its logs
EVENT_PREFIX = "@ftsweep "
#: seconds an HTTP call to the Ray dashboard may take
HTTP_TIMEOUT_S = 10.0
#: seconds the pre-flight waits for the address to answer
CONNECT_TIMEOUT_S = 3.0
WORKER_MODULE = "orchestrator.backends.local.ray_worker"

_RAY_STATUS = {
    "PENDING": JobStatus.QUEUED,
    "RUNNING": JobStatus.RUNNING,
    "STOPPED": JobStatus.CANCELLED,
    "SUCCEEDED": JobStatus.SUCCEEDED,
    "FAILED": JobStatus.FAILED,
}


def submission_id(key: str) -> str:
    """The Ray ``submission_id`` of the job of ``key``."""
    return f"ftsweep-{hashlib.sha256(key.encode()).hexdigest()[:24]}"


def is_url(location: str) -> bool:
    """Whether ``model_dir`` is an fsspec URL (``s3://...``) rather than a path."""
    return "://" in location and not location.startswith("file://")


def _local_path(location: str) -> Path:
    return Path(location.removeprefix("file://")).expanduser()


def parse_events(logs: str, start: int = 0) -> tuple[list[dict[str, Any]], int]:
    """The ``@ftsweep`` events on complete lines of ``logs`` from offset ``start``, and the
    offset after the last complete line."""
    end = logs.rfind("\n") + 1
    if end <= start:
        return [], start
    events: list[dict[str, Any]] = []
    for line in logs[start:end].splitlines():
        if not line.startswith(EVENT_PREFIX):
            continue
        try:
            event = json.loads(line[len(EVENT_PREFIX) :])
        except ValueError as exc:
            raise BackendError(f"corrupt event line in a Ray job's logs: {line[:80]!r}") from exc
        if isinstance(event, dict):
            events.append(event)
    return events, end


def _points(events: list[dict[str, Any]]) -> list[MetricPoint]:
    points: list[MetricPoint] = []
    wanted = {*METRIC_NAMES, *GENERATION_METRICS, *THROUGHPUT_METRICS}
    for event in events:
        values = event.get("metric")
        if not isinstance(values, dict):
            continue
        step = int(values["step"])
        points.extend(
            MetricPoint(step, name, float(value))
            for name, value in values.items()
            if name != "step" and name in wanted
        )
    return points


class RayExecutor:
    """Local-trainer jobs as Ray jobs (see the module docstring)."""

    name = "ray"

    def __init__(self, options: LocalOptions, workdir: Path) -> None:
        raw = options.ray_address or os.environ.get("RAY_ADDRESS")
        if not raw:
            raise UsageError(
                "executor ray: set RAY_ADDRESS or backend.options.ray_address "
                "(the Ray dashboard, e.g. http://HOST:8265)"
            )
        self.address = (raw if "://" in raw else f"http://{raw}").rstrip("/")
        if not self.address.startswith(("http://", "https://")):
            raise UsageError(
                f"executor ray: address {raw!r} must be the dashboard's http://HOST:PORT"
            )
        assert options.model_dir is not None  # LocalOptions.parse checked it
        self.options = options
        self.model_dir = options.model_dir
        self.workdir = workdir
        self._client: Any = None

    # -- the executor ---------------------------------------------------------------------

    def preflight(self) -> None:
        """The address answers, some node fits one job, ``model_dir`` is writable."""
        self._get("/api/version", timeout=CONNECT_TIMEOUT_S)
        body = self._get("/api/v0/nodes?detail=1&limit=1000")
        nodes = body.get("data", {}).get("result", {}).get("result", [])
        alive = [n.get("resources_total", {}) for n in nodes if n.get("state") == "ALIVE"]
        gpus = self.options.gpus_per_trial or 0
        need = {"GPU": float(gpus), "CPU": self.options.ray_num_cpus}
        if self.options.ray_memory_gb is not None:
            need["memory"] = self.options.ray_memory_gb * 2**30
        if not any(all(r.get(k, 0.0) >= v for k, v in need.items() if v) for r in alive):
            most = {k: max((r.get(k, 0.0) for r in alive), default=0.0) for k in need}
            have = ", ".join(f"{_shown(k, most[k])}" for k in need)
            want = ", ".join(f"{_shown(k, v)}" for k, v in need.items())
            raise UsageError(
                f"executor ray: each trial needs {want} on one node (gpus_per_trial, "
                f"ray_num_cpus, ray_memory_gb) but no node of {self.address} has that "
                f"(the most on a node: {have})"
            )
        self._check_writable()

    def submit(self, request: TrainingRequest, record: Mapping[str, Any]) -> str:
        sid = submission_id(request.key)
        if self._info(sid) is not None:
            return sid
        shared = not is_url(self.model_dir)
        job_record = dict(record)
        data = self._stage_data(request)
        job_record["train_file"] = "train.jsonl"
        job_record["valid_file"] = "valid.jsonl" if request.valid_file else None
        if not shared:  # no folder both sides see: no epoch handshake
            job_record["options"] = {**record["options"], "epoch_handshake_s": 0.0}
        package = Path(orchestrator.__file__).resolve().parent
        env = {
            "FTSWEEP_RAY_REQUEST": json.dumps(job_record, sort_keys=True),
            "FTSWEEP_RAY_JOB": sid,
            "FTSWEEP_RAY_MODEL_DIR": self.model_dir,
            "OMP_WAIT_POLICY": "PASSIVE",
            "PYTHONUNBUFFERED": "1",
        }
        kwargs: dict[str, Any] = {
            "entrypoint": f"python -m {WORKER_MODULE}",
            "submission_id": sid,
            "metadata": {"ftsweep_key": request.key},
            "runtime_env": {
                "working_dir": str(data),
                "py_modules": [str(package)],
                "env_vars": env,
                "excludes": ["__pycache__", "*.pyc"],
            },
            "entrypoint_num_cpus": self.options.ray_num_cpus,
            "entrypoint_num_gpus": self.options.gpus_per_trial or 0,
        }
        if self.options.ray_memory_gb is not None:
            kwargs["entrypoint_memory"] = int(self.options.ray_memory_gb * 2**30)
        try:
            self._jobs_client().submit_job(**kwargs)
        except Exception as exc:
            if "already exists" in str(exc):
                return sid  # another process submitted this key a moment before
            if isinstance(exc, ConnectionError | OSError):
                raise self._unreachable(exc) from exc
            raise BackendError(f"Ray job {sid}: submit failed: {_first_line(exc)}") from exc
        return sid

    def find(self, key: str) -> str | None:
        sid = submission_id(key)
        info = self._info(sid)
        if info is None:
            return None
        found = (info.get("metadata") or {}).get("ftsweep_key")
        if found != key:
            raise BackendError(f"Ray job {sid} belongs to another key ({found!r}, not {key!r})")
        return sid

    def poll(self, job_id: str, cursor: str | None) -> JobUpdate:
        try:
            offset = int(cursor) if cursor else 0
        except ValueError as exc:
            raise BackendError(f"bad cursor {cursor!r} for Ray job {job_id}") from exc
        info = self._info(job_id)  # the status first, the logs second
        if info is None:
            return JobUpdate(
                status=JobStatus.FAILED,
                cursor=str(offset),
                error=f"the Ray cluster at {self.address} no longer knows job {job_id} "
                "(was its head restarted?)",
            )
        logs = str(self._get(f"/api/jobs/{job_id}/logs").get("logs", ""))
        everything, _ = parse_events(logs)
        self._acknowledge(job_id, logs, offset)
        new, end = parse_events(logs, offset)
        points = _points(new)
        worker = _last(everything, "status")
        status = _RAY_STATUS.get(str(info.get("status")), JobStatus.RUNNING)
        error: str | None = None
        said = JobStatus(worker["status"]) if worker is not None else None
        if (
            worker is not None
            and said is not None
            and said.terminal
            and status != JobStatus.CANCELLED
        ):
            status = said
            error = worker.get("error")
        elif status == JobStatus.SUCCEEDED:  # ended without its final status line
            status = JobStatus.FAILED
            error = f"Ray job {job_id} ended without reporting a result"
        elif status == JobStatus.FAILED:
            error = f"Ray job {job_id} failed: {info.get('message') or 'no message'}"
        elif status == JobStatus.RUNNING and said is None:
            status = JobStatus.QUEUED  # the worker has not started training yet
        worker = worker or {}
        return JobUpdate(
            status=status,
            points=tuple(points),
            cursor=str(end),
            total_steps=worker.get("total_steps"),
            trained_tokens=worker.get("trained_tokens"),
            fine_tuned_model=worker.get("fine_tuned_model"),
            error=error,
            checkpoints=_checkpoints(_last(everything, "checkpoints")),
            epoch_ends=epoch_ends_of(points),
        )

    def cancel(self, job_id: str) -> None:
        info = self._info(job_id)
        if info is None or str(info.get("status")) in ("STOPPED", "SUCCEEDED", "FAILED"):
            return
        folder = self._shared_folder(job_id)
        if folder is not None and folder.path.is_dir():
            folder.request_cancel()
        self._post(f"/api/jobs/{job_id}/stop")

    # -- internals ----------------------------------------------------------------------------

    def _shared_folder(self, job_id: str) -> JobFolder | None:
        if is_url(self.model_dir):
            return None
        return JobFolder(_local_path(self.model_dir) / job_id)

    def _acknowledge(self, job_id: str, logs: str, cursor: int) -> None:
        """The epoch handshake: the caller read past the last epoch end before ``cursor``."""
        folder = self._shared_folder(job_id)
        if folder is None or cursor <= 0:
            return
        before, _ = parse_events(logs[:cursor])
        ends = [int(e["epoch_end"]) for e in before if "epoch_end" in e]
        if ends and folder.path.is_dir() and folder.read_epoch_ack() < max(ends):
            folder.write_epoch_ack(max(ends))

    def _stage_data(self, request: TrainingRequest) -> Path:
        """A folder holding the request's data as ``train.jsonl``/``valid.jsonl``, named by
        their content (Ray uploads a ``working_dir`` once per content)."""
        files = {"train.jsonl": Path(request.train_file)}
        if request.valid_file is not None:
            files["valid.jsonl"] = Path(request.valid_file)
        digest = hashlib.sha256()
        for name, path in sorted(files.items()):
            digest.update(name.encode())
            digest.update(hashlib.sha256(path.read_bytes()).digest())
        folder = self.workdir / "ray-data" / digest.hexdigest()[:24]
        if not folder.is_dir():
            tmp = folder.with_name(f".{folder.name}.{uuid.uuid4().hex[:8]}")
            tmp.mkdir(parents=True)
            for name, path in files.items():
                shutil.copyfile(path, tmp / name)
            try:
                tmp.rename(folder)
            except OSError:  # another process staged it first
                shutil.rmtree(tmp, ignore_errors=True)
        return folder

    def _check_writable(self) -> None:
        probe = f".ftsweep-probe-{uuid.uuid4().hex[:12]}"
        where = "backend.options.model_dir"
        try:
            if is_url(self.model_dir):
                import fsspec

                fs, root = fsspec.core.url_to_fs(self.model_dir)
                path = f"{root.rstrip('/')}/{probe}"
                fs.makedirs(root, exist_ok=True)
                fs.pipe_file(path, b"ok")
                fs.rm_file(path)
            else:
                folder = _local_path(self.model_dir)
                folder.mkdir(parents=True, exist_ok=True)
                (folder / probe).write_bytes(b"ok")
                (folder / probe).unlink()
        except Exception as exc:
            raise UsageError(
                f"{where}: cannot write to {self.model_dir}: {_first_line(exc)}"
            ) from exc

    def _jobs_client(self) -> Any:
        if self._client is None:
            try:
                from ray.job_submission import JobSubmissionClient
            except ImportError as exc:
                raise UsageError(
                    f"executor ray needs Ray (pip install 'ftsweep[ray]'): {exc}"
                ) from exc
            # Ray logs each package upload at INFO on stderr: not the sweep's output
            logging.getLogger("ray").setLevel(logging.WARNING)
            try:
                self._client = JobSubmissionClient(self.address)
            except ConnectionError as exc:
                raise self._unreachable(exc) from exc
        return self._client

    def _info(self, job_id: str) -> dict[str, Any] | None:
        try:
            return self._get(f"/api/jobs/{job_id}")
        except _NotFound:
            return None

    def _get(self, path: str, *, timeout: float = HTTP_TIMEOUT_S) -> dict[str, Any]:
        return self._request("GET", path, timeout)

    def _post(self, path: str) -> dict[str, Any]:
        return self._request("POST", path, HTTP_TIMEOUT_S)

    def _request(self, method: str, path: str, timeout: float) -> dict[str, Any]:
        request = urllib.request.Request(self.address + path, method=method)
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                body = json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                raise _NotFound(path) from exc
            text = exc.read().decode("utf-8", "replace").strip().splitlines()
            raise BackendError(
                f"Ray dashboard {self.address}{path}: HTTP {exc.code}: "
                f"{text[-1] if text else exc.reason}"
            ) from exc
        except (OSError, ValueError) as exc:
            raise self._unreachable(exc) from exc
        return body if isinstance(body, dict) else {"value": body}

    def _unreachable(self, exc: BaseException) -> ProviderUnreachableError:
        reason = getattr(exc, "reason", None) or exc
        return ProviderUnreachableError(
            f"the Ray cluster at {self.address} (RAY_ADDRESS or backend.options.ray_address) "
            f"does not answer: {_first_line(reason)}",
            url=self.address,
        )


class _NotFound(Exception):
    """HTTP 404 from the dashboard."""


def _last(events: list[dict[str, Any]], kind: str) -> dict[str, Any] | None:
    for event in reversed(events):
        value = event.get(kind)
        if isinstance(value, dict):
            return value
    return None


def _checkpoints(event: dict[str, Any] | None) -> tuple[Checkpoint, ...]:
    if not event:
        return ()
    return tuple(
        Checkpoint(
            step=int(c["step"]),
            epoch=int(c["epoch"]),
            metrics={k: float(v) for k, v in c["metrics"].items() if k in METRIC_NAMES},
            model_id=str(c["model_id"]),
        )
        for c in event.get("checkpoints", [])
    )


def _shown(resource: str, amount: float) -> str:
    if resource == "memory":
        return f"{amount / 2**30:g} GiB memory"
    return f"{amount:g} {resource}"


def _first_line(exc: object) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__

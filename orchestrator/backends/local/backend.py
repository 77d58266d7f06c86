"""Local jobs: one worker subprocess and one folder per job, driven like a remote API.

Layout under the backend's working folder::

    keys/<sha256 of the key>.json   {"key", "job_id"}: created atomically, once per key
    jobs/<job_id>/                  the job folder (see :mod:`.jobfiles`)

* **submit** writes the job folder, leases the job's GPUs when there are any
  (:mod:`.devices`; none free: :class:`ProviderBusyError`, and the engine submits again
  later), then claims the key by hard-linking a complete index file into ``keys/`` (atomic,
  fails if the key is taken: the loser frees its GPUs, removes its folder and returns the
  winner's job), then starts ``python -m orchestrator.backends.local.worker JOB_DIR`` (with
  several GPUs, under ``torchrun``) in a new session with ``CUDA_VISIBLE_DEVICES`` set to
  its GPUs, so the job outlives the launching process and ignores its Ctrl-C.
* **poll** reads the status first and the metrics second (the worker writes them in the
  opposite order), so a terminal status always comes with every point. A worker that is gone
  without a terminal status is reported ``failed``, with the end of its log. A poll whose
  cursor is past an epoch's end acknowledges it (:mod:`.handshake`).
* **cancel** leaves a ``cancel`` file and sends SIGTERM to the worker's process group; the
  worker stops before its next forward pass and writes ``cancelled``. A worker that has not
  stopped ``cancel_grace_s`` seconds later is killed.

With ``executor`` other than ``here`` (:mod:`.executor`, e.g. ``ray``) the jobs run
elsewhere: submit, find, poll and cancel go to the executor, and nothing is leased here.

POSIX only (process groups, ``fcntl``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import orchestrator
from orchestrator.backends.base import (
    DEFAULT_CAPABILITIES,
    GENERATION_METRICS,
    THROUGHPUT_METRICS,
    Backend,
    BackendOptions,
    Capabilities,
    Hyperparameters,
    JobHandle,
    JobStatus,
    JobUpdate,
    Range,
    TrainingRequest,
    epoch_ends_of,
)
from orchestrator.backends.local.devices import (
    Gpu,
    Leases,
    Placement,
    discover_gpus,
    lease_job,
    lease_root,
    placement,
    worker_command,
)
from orchestrator.backends.local.executor import Executor, make_executor
from orchestrator.backends.local.handshake import acknowledge
from orchestrator.backends.local.jobfiles import JobFolder, write_json_atomic
from orchestrator.backends.local.options import LocalBackendOptions, LocalOptions
from orchestrator.core.errors import (
    BackendError,
    DataError,
    OrchestratorError,
    UnknownModelError,
    UsageError,
)

if TYPE_CHECKING:
    from orchestrator.catalog.tokens import ExampleCounter
    from orchestrator.data.findings import DatasetStats

__all__ = ["LocalBackend"]

#: how long ``submit`` waits for a GPU whose job has ended but whose worker is still exiting
LEASE_WAIT_S = 10.0


class LocalBackend(Backend):
    """Fine-tuning on this machine with transformers (see :mod:`orchestrator.backends.local`).

    ``options`` are the defaults of every job (the sweep file's ``backend.options``); a
    request's own ``options`` override them. ``python`` and ``env`` set the worker's
    interpreter and extra environment variables. ``discover`` finds the GPUs (default
    :func:`.devices.discover_gpus`) and ``leases`` is the folder of the GPU leases (default
    :func:`.devices.lease_root`). With a GPU pool, :attr:`capabilities` caps the jobs that
    run at once at ``GPUs // gpus_per_trial``.
    """

    name: ClassVar[str] = "local"
    capabilities: ClassVar[Capabilities] = Capabilities(
        parameters={**DEFAULT_CAPABILITIES.parameters, "prompt_loss_weight": Range(0, 1)},
    )
    Options: ClassVar[type[BackendOptions]] = LocalBackendOptions
    #: polling reads two small files, so poll often
    poll_interval: tuple[float, float] = (0.5, 5.0)

    def __init__(
        self,
        workdir: Path,
        options: LocalOptions | LocalBackendOptions | None = None,
        *,
        python: str | None = None,
        env: Mapping[str, str] | None = None,
        cancel_grace_s: float = 30.0,
        start_grace_s: float = 120.0,
        discover: Callable[[], Sequence[Gpu]] = discover_gpus,
        leases: Path | None = None,
    ) -> None:
        if isinstance(options, LocalOptions):
            options = LocalBackendOptions.model_validate(options.to_dict(), strict=False)
        super().__init__(workdir=workdir, options=options or LocalBackendOptions())
        self.workdir: Path = Path(workdir).absolute()  # workers run in their job folder
        self.local_options = LocalOptions.parse(self.options.model_dump(mode="json"))
        self.python = python or sys.executable
        self.env = dict(env or {})
        self.cancel_grace_s = cancel_grace_s
        self.start_grace_s = start_grace_s
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._exit_codes: dict[str, int] = {}
        #: where jobs run when not here (None: ``executor: here``)
        self.executor: Executor | None = make_executor(self.local_options, self.workdir)
        self.placement: Placement = (
            placement(self.local_options, discover) if self.executor is None else Placement()
        )
        self.leases = Leases(leases or lease_root(), start_grace_s=start_grace_s)
        if self.placement.max_jobs is not None:
            # per instance: the engine reads the job cap from the backend it was given
            capped = replace(self.capabilities, max_concurrent_jobs=self.placement.max_jobs)
            vars(self)["capabilities"] = capped

    @classmethod
    def metric_names(cls, options: BackendOptions) -> frozenset[str]:
        """OpenAI's metrics and the throughput ones (``tokens_per_second``, ``mfu``,
        ``peak_memory_mb``, at each epoch's end), plus generation metrics when
        ``eval_generations`` is set, and the ``evaluate`` option's ``eval_<scorer>`` scores."""
        names = super().metric_names(options) | frozenset(THROUGHPUT_METRICS)
        if getattr(options, "eval_generations", 0):
            names |= frozenset(GENERATION_METRICS)
        block = getattr(options, "evaluate", None)
        if isinstance(block, dict):  # the evaluate: block's scores (.taskeval)
            from orchestrator.evaluation import metric_name

            names |= frozenset(metric_name(str(s)) for s in block.get("scorers", ["exact_match"]))
        return names

    @classmethod
    def from_options(cls, options: BackendOptions, *, workdir: Path) -> LocalBackend:
        """Job folders go under ``workdir / "jobs"``; ``options`` as in :mod:`.options`."""
        assert isinstance(options, LocalBackendOptions)
        return cls(workdir, options)

    @classmethod
    def token_counter(cls, model: str, options: BackendOptions) -> ExampleCounter | None:
        """Counts as the trainer encodes (chat template, end-of-text tokens included)."""
        try:
            from orchestrator.backends.local.tokens import LocalTokenCounter
        except ImportError as exc:
            raise UnknownModelError(
                f"local models need the 'local' extra (pip install 'ftsweep[local]'): {exc}"
            ) from exc
        try:
            return LocalTokenCounter(model)
        except OrchestratorError as exc:
            raise UnknownModelError(str(exc).splitlines()[0]) from exc

    @classmethod
    def check_resources(
        cls, model: str, options: BackendOptions, dearest: Hyperparameters, train: DatasetStats
    ) -> tuple[tuple[str, str], ...]:
        """The GPU memory of the space's largest batch against each GPU's (declared with
        ``gpu_memory_gb``, or found): refused when it cannot fit (:mod:`.memory`)."""
        from orchestrator.backends.local.memory import plan_memory

        assert isinstance(options, LocalBackendOptions)
        return plan_memory(model, options.local(), dearest.batch_size, train, discover_gpus)

    def preflight(self) -> None:
        """A machine with fewer GPUs than ``gpus_per_trial`` can start no job (with an
        executor: its own checks, :meth:`.executor.Executor.preflight`)."""
        if self.executor is not None:
            self.executor.preflight()
        if self.placement.problem is not None:
            raise UsageError(self.placement.problem)

    @property
    def jobs_dir(self) -> Path:
        return self.workdir / "jobs"

    @property
    def keys_dir(self) -> Path:
        return self.workdir / "keys"

    def job_folder(self, handle: JobHandle) -> JobFolder:
        """The folder of ``handle``'s job (its request, status, metrics, log and model)."""
        if handle.backend != self.name:
            raise BackendError(f"not a local job: {handle.job_id} ({handle.backend})")
        folder = JobFolder(self.jobs_dir / handle.job_id)
        if not folder.path.is_dir():
            raise BackendError(f"no local job {handle.job_id} under {self.jobs_dir}")
        return folder

    def job_options(self, request: TrainingRequest) -> LocalOptions:
        """This backend's options with the request's laid over them."""
        return LocalOptions.parse(request.options, self.local_options)

    def check(self, request: TrainingRequest) -> None:
        super().check(request)
        self.job_options(request)
        for path in (request.train_file, request.valid_file):
            if path is not None and not Path(path).is_file():
                raise DataError(str(path), "no such file")

    def submit(self, request: TrainingRequest) -> JobHandle:
        existing = self.find(request.key)
        if existing is not None:
            return existing
        self.check(request)
        if self.executor is not None:
            job = self.executor.submit(request, self._request_record(request))
            return JobHandle(self.name, job, request.key)
        job_id = f"local-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(4)}"
        folder = JobFolder(self.jobs_dir / job_id)
        folder.path.mkdir(parents=True)
        write_json_atomic(folder.request_file, self._request_record(request))
        folder.write_status(JobStatus.QUEUED)
        try:
            devices = self._lease(folder)
        except BaseException:
            shutil.rmtree(folder.path, ignore_errors=True)
            raise
        try:
            if not self._claim(request.key, job_id):
                self.leases.release(devices, folder.path)
                shutil.rmtree(folder.path, ignore_errors=True)
                winner = self.find(request.key)
                if winner is None:
                    raise BackendError(f"could not claim key {request.key!r} for a local job")
                return winner
            self._start(folder, devices)
        except BaseException:
            self.leases.release(devices, folder.path)
            raise
        return JobHandle(self.name, job_id, request.key)

    def find(self, key: str) -> JobHandle | None:
        if self.executor is not None:
            job = self.executor.find(key)
            return None if job is None else JobHandle(self.name, job, key)
        try:
            data = json.loads(self._key_file(key).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise BackendError(f"unreadable key index for {key!r}: {exc}") from exc
        if data.get("key") != key:
            raise BackendError(f"key index collision for {key!r} ({self._key_file(key)})")
        return JobHandle(self.name, str(data["job_id"]), key)

    def poll(self, handle: JobHandle, cursor: str | None = None) -> JobUpdate:
        if self.executor is not None:
            return self.executor.poll(handle.job_id, cursor)
        folder = self.job_folder(handle)
        try:
            offset = int(cursor) if cursor else 0
        except ValueError as exc:
            raise BackendError(f"bad cursor {cursor!r} for job {handle.job_id}") from exc
        self._reap()
        acknowledge(folder, offset)  # the caller has dealt with what lies before its cursor
        status = folder.read_status()
        if not JobStatus(status["status"]).terminal:
            status = self._reconcile(folder, status)
        points, offset = folder.read_metrics(offset)
        return JobUpdate(
            status=JobStatus(status["status"]),
            points=tuple(points),
            cursor=str(offset),
            total_steps=status.get("total_steps"),
            trained_tokens=status.get("trained_tokens"),
            fine_tuned_model=status.get("fine_tuned_model"),
            error=status.get("error"),
            checkpoints=folder.read_checkpoints(),
            epoch_ends=epoch_ends_of(points),
        )

    def cancel(self, handle: JobHandle) -> None:
        if self.executor is not None:
            self.executor.cancel(handle.job_id)
            return
        folder = self.job_folder(handle)
        if JobStatus(folder.read_status()["status"]).terminal:
            return
        folder.request_cancel()
        record = folder.read_pid()
        if record is not None and record.alive():
            _signal_group(record.pid, signal.SIGTERM)

    # -- internals ---------------------------------------------------------------------------

    def _key_file(self, key: str) -> Path:
        return self.keys_dir / f"{hashlib.sha256(key.encode()).hexdigest()[:32]}.json"

    def _claim(self, key: str, job_id: str) -> bool:
        """Create the key's index file atomically; False when another job holds the key."""
        self.keys_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.keys_dir, prefix=".claim.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump({"key": key, "job_id": job_id}, f)
            os.link(tmp, self._key_file(key))
            return True
        except FileExistsError:
            return False
        finally:
            os.unlink(tmp)

    def _request_record(self, request: TrainingRequest) -> dict[str, Any]:
        model = request.model
        if Path(model).expanduser().exists():
            model = str(Path(model).expanduser().resolve())
        resolved = replace(
            request,
            model=model,
            train_file=Path(request.train_file).resolve(),
            valid_file=Path(request.valid_file).resolve() if request.valid_file else None,
            options=self.job_options(request).to_dict(),
        )
        return {**resolved.to_dict(), "submitted": time.time()}

    def _lease(self, folder: JobFolder) -> tuple[str, ...]:
        """Lease the job's GPUs (:func:`.devices.lease_job`); none without a pool."""
        if self.placement.problem is not None:
            raise UsageError(self.placement.problem)
        return lease_job(self.leases, self.placement, folder, wait_s=LEASE_WAIT_S)

    def _start(self, folder: JobFolder, devices: Sequence[str] = ()) -> None:
        from orchestrator.backends.local.jobfiles import ProcessRecord

        package_root = str(Path(orchestrator.__file__).resolve().parents[1])
        # Passive OpenMP threads: with busy-waiting ones, a CPU shared with other jobs made
        # steps up to 8x slower (see docs/local-trainer.md).
        env = {"OMP_WAIT_POLICY": "PASSIVE", **os.environ, **self.env, "PYTHONUNBUFFERED": "1"}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
        if devices:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(devices)
        with folder.log_file.open("ab") as log:
            try:
                proc = subprocess.Popen(
                    worker_command(self.python, folder.path, len(devices)),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=folder.path,
                    env=env,
                    start_new_session=True,
                    close_fds=True,
                )
            except OSError as exc:
                folder.write_status(JobStatus.FAILED, error=f"cannot start the worker: {exc}")
                raise BackendError(f"cannot start the local worker ({self.python}): {exc}") from exc
        self._procs[folder.job_id] = proc
        folder.write_pid(ProcessRecord.of(proc.pid))

    def _reconcile(self, folder: JobFolder, status: dict[str, Any]) -> dict[str, Any]:
        """Settle a non-terminal status against the worker process's fate."""
        record = folder.read_pid()
        cancelling = folder.cancel_requested()
        if record is not None and record.alive():
            if cancelling and _age(folder.cancel_file) > self.cancel_grace_s:
                _signal_group(record.pid, signal.SIGKILL)
                return self._settle(folder, JobStatus.CANCELLED, None)
            return status
        if record is None and not cancelling:
            if _age(folder.request_file) < self.start_grace_s:
                return status
            return self._settle(folder, JobStatus.FAILED, "the worker process never started")
        status = folder.read_status()
        if JobStatus(status["status"]).terminal:
            return status
        if cancelling:
            return self._settle(folder, JobStatus.CANCELLED, None)
        exit_code = self._exit_code(folder.job_id)
        how = f" with exit code {exit_code}" if exit_code is not None else ""
        if exit_code is not None and exit_code < 0:
            how = f" (killed by {signal.Signals(-exit_code).name})"
        tail = folder.log_tail()
        error = (
            f"the worker process (pid {record.pid if record else '?'}) ended{how} without "
            f"reporting a result; log {folder.log_file}" + (f": {tail}" if tail else "")
        )
        return self._settle(folder, JobStatus.FAILED, error)

    def _reap(self) -> None:
        """Collect the exit status of this process's finished workers (no zombies)."""
        for job_id, proc in list(self._procs.items()):
            code = proc.poll()
            if code is not None:
                self._exit_codes[job_id] = code
                del self._procs[job_id]

    def _exit_code(self, job_id: str) -> int | None:
        """The exit status of a worker this process started (it is gone or going)."""
        proc = self._procs.get(job_id)
        if proc is not None:
            try:
                self._exit_codes[job_id] = proc.wait(timeout=1.0)
                del self._procs[job_id]
            except subprocess.TimeoutExpired:
                return None
        return self._exit_codes.get(job_id)

    def _settle(self, folder: JobFolder, status: JobStatus, error: str | None) -> dict[str, Any]:
        fields: dict[str, Any] = {"error": error} if error else {}
        folder.write_status(status, **fields)
        return folder.read_status()


def _age(path: Path) -> float:
    try:
        return time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return 0.0


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def measured_seconds_per_example(
    jobs: Path, model: str, *, last: int = 20
) -> tuple[float, float, int] | None:
    """What this machine's earlier local jobs of ``model`` took (medians over the ``last``
    finished ones): seconds per training example and epoch, the seconds a job spends besides
    its optimizer steps (start-up, evaluation), and how many jobs that is; None when none
    finished. Read-only: a missing folder is no history."""
    import json
    import statistics

    if not jobs.is_dir():
        return None
    found: list[tuple[float, float, float]] = []  # (when, s per example, s besides steps)
    for folder in jobs.iterdir():
        try:
            status = json.loads((folder / "status.json").read_text())
            request = json.loads((folder / "request.json").read_text())
        except (OSError, ValueError):
            continue
        if request.get("model") != model or status.get("status") != "succeeded":
            continue
        sps = status.get("seconds_per_step")
        bs = (request.get("hyperparameters") or {}).get("batch_size")
        steps, started, updated = (status.get(k) for k in ("steps", "started", "updated"))
        numbers = (sps, steps, started, updated)
        if not all(isinstance(v, int | float) for v in numbers) or not isinstance(bs, int):
            continue
        if bs <= 0 or sps <= 0:
            continue
        besides = max(0.0, float(updated) - float(started) - float(steps) * float(sps))
        found.append((float(updated), float(sps) / bs, besides))
    if not found:
        return None
    recent = sorted(found)[-last:]
    return (
        statistics.median(v for _, v, _ in recent),
        statistics.median(b for _, _, b in recent),
        len(recent),
    )

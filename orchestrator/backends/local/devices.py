"""Which GPUs a local job gets: discovery, leases that hold across processes, the launch.

* **The pool.** Option ``devices: [0, 1]`` names the GPUs jobs may use (also on a machine
  without CUDA: a declared list, for tests or to keep GPUs for other work); without it the
  pool is every CUDA device :func:`discover_gpus` finds. ``device: cpu``, ``mps`` or
  ``cuda:N`` lease nothing, as before GPUs were scheduled.
* **Per job.** ``gpus_per_trial`` GPUs (default 1 where the pool has any), so at most
  ``len(pool) // gpus_per_trial`` jobs run at once (:attr:`Placement.max_jobs`, the
  backend's job cap).
* **Leases.** A job holds its GPUs through one file per GPU under :func:`lease_root` (one
  folder per user and machine, so two sweeps with different stores share it), taken under an
  exclusive ``flock`` of that folder, so two processes never lease the same GPU. A lease is
  freed by its worker when the job ends, and reclaimed by the next taker when the holder's
  worker is dead (or never started within ``start_grace_s``).
* **The launch.** The job sees its GPUs as ``CUDA_VISIBLE_DEVICES``; with more than one it
  is started by ``torchrun`` (:func:`worker_command`), one process per GPU, data parallel.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.backends.base import JobStatus
from orchestrator.backends.local.jobfiles import JobFolder, write_json_atomic
from orchestrator.backends.local.options import LocalOptions
from orchestrator.core.errors import BackendError, ProviderBusyError

__all__ = [
    "WORKER_MODULE",
    "Gpu",
    "Leases",
    "Placement",
    "discover_gpus",
    "lease_job",
    "lease_root",
    "placement",
    "release_job",
    "worker_command",
]

WORKER_MODULE = "orchestrator.backends.local.worker"
#: files whose presence says a GPU driver is installed (NVIDIA, AMD ROCm): without one, no
#: ``import torch`` just to learn there is no GPU
_DRIVER_FILES = ("/proc/driver/nvidia/version", "/dev/nvidiactl", "/dev/kfd")
_SAFE_ID = re.compile(r"^[A-Za-z0-9._-]+$")


@dataclass(frozen=True)
class Gpu:
    """One GPU: its name in ``CUDA_VISIBLE_DEVICES`` and its memory in GiB."""

    id: str
    memory_gib: float | None = None


def discover_gpus() -> tuple[Gpu, ...]:
    """The CUDA devices this process may use (``torch.cuda``), named as
    ``CUDA_VISIBLE_DEVICES`` names them when it is set; none without a GPU driver or torch."""
    if not any(Path(f).exists() for f in _DRIVER_FILES):
        return ()
    try:
        import torch
    except ImportError:
        return ()
    if not torch.cuda.is_available():
        return ()
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    names = [v.strip() for v in visible.split(",")] if visible else []
    found = []
    for i in range(torch.cuda.device_count()):
        memory = torch.cuda.get_device_properties(i).total_memory / 2**30
        found.append(Gpu(names[i] if i < len(names) else str(i), round(memory, 2)))
    return tuple(found)


@dataclass(frozen=True)
class Placement:
    """Where the jobs of one backend run: the GPUs they lease and how many each takes."""

    #: the GPUs jobs may lease (empty: no leasing, the job picks its device as before)
    pool: tuple[str, ...] = ()
    #: GPUs per job (0 without a pool)
    per_job: int = 0
    #: the memory of one GPU (the smallest of the pool), declared or discovered; None: unknown
    memory_gib: float | None = None
    #: why no job can start here (``gpus_per_trial`` more than the pool), or None
    problem: str | None = None

    @property
    def max_jobs(self) -> int | None:
        """Jobs that can run at once (None: no cap)."""
        return len(self.pool) // self.per_job if self.pool else None


def placement(
    opts: LocalOptions, discover: Callable[[], Sequence[Gpu]] = discover_gpus
) -> Placement:
    """The placement ``opts`` ask for on this machine (with :attr:`Placement.problem` when it
    has fewer GPUs than ``gpus_per_trial``: planning goes on, starting a job does not)."""
    if opts.device not in ("auto", "cuda"):
        return Placement(memory_gib=opts.gpu_memory_gb)
    need_discovery = opts.devices is None or opts.gpu_memory_gb is None
    found = tuple(discover()) if need_discovery else ()
    if opts.devices is not None:
        pool = tuple(str(d) for d in opts.devices)
    else:
        pool = tuple(g.id for g in found)
    memory = opts.gpu_memory_gb
    if memory is None:
        sizes = [g.memory_gib for g in found if g.id in pool and g.memory_gib is not None]
        memory = min(sizes) if sizes else None
    odd = [gpu for gpu in pool if not _SAFE_ID.match(gpu)]
    if odd:
        problem = f"local backend: cannot lease GPU {odd[0]!r} (from CUDA_VISIBLE_DEVICES)"
        return Placement((), 0, memory, problem)
    per_job = opts.gpus_per_trial or (1 if pool else 0)
    if per_job > len(pool):
        where = f"{len(pool)} GPU(s) ({', '.join(pool)})" if pool else "no GPU (no CUDA device)"
        problem = (
            f"local backend: gpus_per_trial {per_job} but this machine has {where}; "
            "lower gpus_per_trial or declare devices"
        )
        return Placement((), 0, memory, problem)
    return Placement(pool, per_job, memory)


def lease_root() -> Path:
    """The lease folder: ``$FTSWEEP_HOME/devices`` (default ``~/.cache/ftsweep/devices``)."""
    root = os.environ.get("FTSWEEP_HOME")
    base = Path(root).expanduser() if root else Path.home() / ".cache" / "ftsweep"
    return base / "devices"


def worker_command(python: str, job_dir: Path, gpus: int) -> list[str]:
    """The command that runs the job in ``job_dir``: the worker itself, or with ``gpus`` > 1
    ``torchrun`` starting one worker per GPU (standalone rendezvous on a free port, no
    restarts: a failed rank fails the job)."""
    worker = ["-m", WORKER_MODULE, str(job_dir)]
    if gpus <= 1:
        return [python, *worker]
    return [
        python,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nnodes=1",
        f"--nproc-per-node={gpus}",
        "--max-restarts=0",
        *worker,
    ]


class Leases:
    """The lease files of the GPUs under ``root``: ``gpu-<id>.json`` holding
    ``{"device", "job", "taken"}`` (``job``: the holder's job folder)."""

    def __init__(self, root: Path, *, start_grace_s: float = 120.0) -> None:
        self.root = root
        self.start_grace_s = start_grace_s

    def file(self, device: str) -> Path:
        return self.root / f"gpu-{device}.json"

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with (self.root / ".lock").open("a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def holders(self, pool: Sequence[str]) -> dict[str, Path]:
        """The live holder's job folder of each leased GPU of ``pool`` (reclaiming none)."""
        found = {}
        for device in pool:
            record = self._read(device)
            if record is not None and self._alive(record):
                found[device] = Path(record["job"])
        return found

    def take(
        self, pool: Sequence[str], n: int, job: Path, *, now: float | None = None
    ) -> tuple[str, ...] | None:
        """Lease ``n`` free GPUs of ``pool`` for the job in folder ``job`` at time ``now``,
        the first free ones in pool order; None (and nothing leased) when fewer are free.
        Leases whose holder is dead are reclaimed first."""
        with self._locked():
            free = []
            for device in pool:
                record = self._read(device)
                if record is not None and self._alive(record):
                    continue
                if record is not None:
                    _mark(Path(record["job"]), "reclaimed")
                free.append(device)
            if len(free) < n:
                return None
            chosen = tuple(free[:n])
            now = time.time() if now is None else now
            for device in chosen:
                record = {"device": device, "job": str(job), "taken": now}
                write_json_atomic(self.file(device), record)
            return chosen

    def release(self, devices: Sequence[str], job: Path) -> None:
        """Free ``job``'s leases of ``devices`` (those another job holds now stay)."""
        with self._locked():
            for device in devices:
                record = self._read(device)
                if record is not None and Path(record["job"]) == job:
                    self.file(device).unlink(missing_ok=True)

    def _read(self, device: str) -> dict[str, Any] | None:
        try:
            data = json.loads(self.file(device).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise BackendError(f"unreadable GPU lease {self.file(device)}: {exc}") from exc
        if not isinstance(data, dict) or "job" not in data:
            raise BackendError(f"unreadable GPU lease {self.file(device)}: no job")
        return data

    def _alive(self, record: dict[str, Any]) -> bool:
        """Whether the lease's holder still runs (or may still start)."""
        folder = JobFolder(Path(record["job"]))
        if not folder.path.is_dir():
            return False
        pid = folder.read_pid()
        if pid is None:
            return time.time() - float(record.get("taken", 0)) < self.start_grace_s
        return pid.alive()


def lease_job(
    leases: Leases,
    place: Placement,
    folder: JobFolder,
    *,
    wait_s: float = 10.0,
    sleep: Callable[[float], None] = time.sleep,
) -> tuple[str, ...]:
    """Lease ``place.per_job`` GPUs for the job in ``folder`` (none without a pool), recorded
    in its ``devices.json``; :class:`ProviderBusyError` when too few are free. A GPU whose
    job has ended but whose worker is still exiting is waited for, up to ``wait_s``."""
    if not place.per_job:
        return ()
    deadline = time.monotonic() + wait_s
    while True:
        now = time.time()
        got = leases.take(place.pool, place.per_job, folder.path, now=now)
        if got is not None:
            record = {"devices": list(got), "lease_root": str(leases.root), "leased": now}
            folder.write_devices(record)
            return got
        holders = leases.holders(place.pool)
        ending = any(
            JobStatus(JobFolder(job).read_status()["status"]).terminal
            for job in holders.values()
            if job.is_dir()
        )
        if not ending or time.monotonic() > deadline:
            held = ", ".join(f"GPU {d}: {job.name}" for d, job in sorted(holders.items()))
            raise ProviderBusyError(
                f"{len(place.pool) - len(holders)} of {len(place.pool)} GPUs free, "
                f"{place.per_job} needed ({held})",
                retry_after=2.0,
            )
        sleep(0.1)


def release_job(folder: JobFolder, how: str = "worker") -> None:
    """Free the GPUs the job in ``folder`` leased (recorded in its ``devices.json``), once:
    the time is recorded first, so a lease taken after it never looks like an overlap."""
    data = folder.read_devices()
    if data is None or "released" in data:
        return
    _mark(folder.path, how)
    Leases(Path(data["lease_root"])).release(data["devices"], folder.path)


def _mark(job: Path, what: str) -> None:
    """Record in a job's ``devices.json`` when its leases were freed (``released`` by its
    worker, ``reclaimed`` from a dead one)."""
    folder = JobFolder(job)
    data = folder.read_devices()
    if data is not None and "released" not in data:
        folder.write_devices({**data, "released": time.time(), "freed_by": what})

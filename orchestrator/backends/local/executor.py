"""Where a local-trainer job runs: the executor seam of the local backend.

The local backend keeps the job contract (idempotent submit by the request's key, ``find``
from a fresh process, polling by cursor, cancel, epoch ends); an *executor* decides where the
worker (:mod:`.worker`) runs. ``backend.options.executor`` names it:

* ``here`` (the default): a detached process on this machine, with the job folder, the key
  index and the GPU leases under the backend's working folder. It is the local backend's own
  code path (:class:`~orchestrator.backends.local.backend.LocalBackend`), not an
  :class:`Executor` object.
* ``ray``: one Ray job per trial through Ray's Jobs API (:mod:`.ray_executor`).
* any other name: a plugin registered in the entry-point group :data:`GROUP`
  (``ftsweep.local_executors``), whose object is a factory ``(options, workdir) ->
  Executor``; for example a Slurm executor through submitit, or a Kubernetes ``Job``
  per trial. ``docs/scaling.md`` ("Writing an executor") says what one must guarantee.

An executor is given the request record the worker reads (``request.json``'s content: the
request with its options resolved and its paths absolute) and answers with its own job id;
the backend wraps the id in a :class:`JobHandle`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from orchestrator.backends.base import JobUpdate, TrainingRequest
from orchestrator.backends.local.options import LocalOptions
from orchestrator.core.errors import UsageError

__all__ = ["GROUP", "Executor", "ExecutorFactory", "available_executors", "make_executor"]

#: the entry-point group of executor plugins
GROUP = "ftsweep.local_executors"


@runtime_checkable
class Executor(Protocol):
    """Runs local-trainer jobs somewhere else than a process on this machine.

    Every method raises only :class:`~orchestrator.core.errors.OrchestratorError`
    subclasses, as :class:`~orchestrator.backends.base.Backend`'s methods do:
    ``ProviderUnreachableError`` when the scheduler does not answer (the sweep stops, exit 1,
    and the next run re-attaches), ``UsageError`` for what no retry fixes, ``BackendError``
    for the rest."""

    #: the name ``backend.options.executor`` gives
    name: str

    def preflight(self) -> None:
        """Before the first trial: the scheduler answers, it has a place for one job of the
        size the options ask, and where models go is writable. One line per failure; starts
        nothing."""

    def submit(self, request: TrainingRequest, record: Mapping[str, Any]) -> str:
        """Start the job of ``request`` (``record``: what the worker reads) and return its id;
        idempotent on ``request.key``: a key that has a job already returns that job's id
        (also when another process submitted it a moment before)."""

    def find(self, key: str) -> str | None:
        """The id of the job submitted for ``key`` (from any process), or None."""

    def poll(self, job_id: str, cursor: str | None) -> JobUpdate:
        """What happened since ``cursor`` (None: from the start), as
        :meth:`~orchestrator.backends.base.Backend.poll` says; a poll whose cursor is past an
        epoch's end acknowledges it where the executor supports the epoch handshake."""

    def cancel(self, job_id: str) -> None:
        """Stop the job; metrics it reported stay readable; a finished job is a no-op."""


#: makes an executor from the backend's options and working folder
ExecutorFactory = Callable[[LocalOptions, Path], Executor]


def _ray(options: LocalOptions, workdir: Path) -> Executor:
    from orchestrator.backends.local.ray_executor import RayExecutor

    return RayExecutor(options, workdir)


_BUILTIN: dict[str, ExecutorFactory] = {"ray": _ray}


def available_executors() -> list[str]:
    """The executors' names: ``here``, the built-in ones and the installed plugins'."""
    return sorted({"here", *_BUILTIN, *(ep.name for ep in entry_points(group=GROUP))})


def make_executor(options: LocalOptions, workdir: Path) -> Executor | None:
    """The executor ``options.executor`` names (None: ``here``); an unknown name is a
    :class:`UsageError` listing the known ones."""
    name = options.executor
    if name == "here":
        return None
    factory = _BUILTIN.get(name)
    if factory is None:
        found = [ep for ep in entry_points(group=GROUP) if ep.name == name]
        if not found:
            known = ", ".join(available_executors())
            raise UsageError(f"backend.options.executor: unknown executor {name!r}; known: {known}")
        factory = found[0].load()
    executor = factory(options, workdir)
    if not isinstance(executor, Executor):
        raise UsageError(f"backend.options.executor: {name!r} did not make an Executor")
    return executor

"""What the backend contract suite is built from: a :class:`BackendCase`, polling, and a
re-attach from a fresh process. Nothing here imports pytest, so test code of any runner can
use it (``orchestrator.testing.contract`` holds the pytest tests themselves)."""

from __future__ import annotations

import contextlib
import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestrator.core.params import NAMES, parameter

if TYPE_CHECKING:
    from orchestrator.backends.base import (
        Backend,
        Capabilities,
        JobHandle,
        JobUpdate,
        MetricPoint,
        TrainingRequest,
    )
    from orchestrator.data.findings import DatasetStats

__all__ = [
    "BackendCase",
    "Polled",
    "build_backend",
    "out_of_range",
    "points_in_fresh_process",
    "poll_until",
    "train_stats",
]


def build_backend(name: str, options: Mapping[str, Any], workdir: Path) -> Backend:
    """The backend registered as ``name``, built the way a sweep file builds it:
    ``registry.load(name)`` -> ``cls.parse_options(options)`` -> ``cls.from_options``
    (through :func:`orchestrator.backends.registry.build`)."""
    from orchestrator.backends import registry

    cls = registry.load(name)
    return registry.build(cls, cls.parse_options(options), workdir=workdir)


@dataclass(frozen=True)
class BackendCase:
    """How the contract suite builds one backend and its requests.

    * ``name``, ``options``, ``workdir``: the backend is built from its registry name, its
      ``backend.options`` (JSON-ready: a fresh process rebuilds it from them) and its working
      folder, exactly as a sweep file does (:func:`build_backend`).
    * ``short_request(key)`` must finish in seconds; ``long_request(key)`` must run long enough
      to be cancelled after its first metric points (it is always cancelled).
    * ``env``: environment variables a fresh process needs to reach the same jobs (endpoint,
      credentials, ``PYTHONPATH``); they are laid over ``os.environ``.
    * ``busy``: a context manager factory; while inside it, the provider refuses new jobs
      (``submit`` must raise :class:`~orchestrator.core.errors.ProviderBusyError`). None skips that
      test (a backend whose provider is never busy).
    * ``timeout_s``: the most seconds a job of ``short_request`` takes to end (and a fresh
      process gets to re-attach to it).
    * ``train_stats``: the statistics of ``short_request``'s training file, for
      ``estimate_cost`` and ``job_cost``; None computes them with
      :func:`orchestrator.data.checks.check_file` (see :func:`train_stats`).
    * ``instant_jobs``: the backend's jobs have ended when ``submit`` returns (its first
      poll of a job says it ended). The cancel test then checks that cancelling an ended
      job is a no-op that keeps its metrics, instead of stopping a running one.
    """

    name: str
    options: Mapping[str, Any]
    workdir: Path
    short_request: Callable[[str], TrainingRequest]
    long_request: Callable[[str], TrainingRequest]
    env: Mapping[str, str] = field(default_factory=dict)
    timeout_s: float = 120.0
    busy: Callable[[], contextlib.AbstractContextManager[None]] | None = None
    train_stats: DatasetStats | None = None
    instant_jobs: bool = False

    def backend(self) -> Backend:
        """A new instance of the backend (each call builds another, as a new process would)."""
        return build_backend(self.name, self.options, self.workdir)


@dataclass
class Polled:
    """Every update of one job, polled with each returned cursor."""

    updates: list[JobUpdate] = field(default_factory=list)
    points: list[MetricPoint] = field(default_factory=list)
    cursor: str | None = None

    @property
    def last(self) -> JobUpdate:
        return self.updates[-1]

    def series(self, name: str) -> list[tuple[int, float]]:
        return [(p.step, p.value) for p in self.points if p.name == name]


def _terminal(polled: Polled) -> bool:
    return polled.last.status.terminal


def poll_until(
    backend: Backend,
    handle: JobHandle,
    done: Callable[[Polled], bool] = _terminal,
    *,
    timeout_s: float = 120.0,
    interval_s: float = 0.1,
    polled: Polled | None = None,
) -> Polled:
    """Poll ``handle`` with each returned cursor until ``done`` (by default: a terminal
    status); an AssertionError after ``timeout_s``."""
    polled = polled or Polled()
    deadline = time.monotonic() + timeout_s
    while True:
        update = backend.poll(handle, polled.cursor)
        polled.updates.append(update)
        polled.points.extend(update.points)
        polled.cursor = update.cursor
        if done(polled):
            return polled
        if time.monotonic() > deadline:
            raise AssertionError(f"job {handle.job_id} not done in {timeout_s} s: {update}")
        time.sleep(interval_s)


_FRESH_PROCESS = """
import json, sys, time
from pathlib import Path
from orchestrator.testing.helpers import build_backend
name, options, workdir, key, timeout = sys.argv[1:]
backend = build_backend(name, json.loads(options), Path(workdir))
handle = backend.find(key)
if handle is None:
    print(json.dumps({"job_id": None}))
    raise SystemExit(0)
cursor, points, deadline = None, [], time.monotonic() + float(timeout)
while True:
    update = backend.poll(handle, cursor)
    cursor = update.cursor
    points += [[p.step, p.name, p.value] for p in update.points]
    if update.status.terminal or time.monotonic() > deadline:
        break
    time.sleep(0.1)
print(json.dumps({"job_id": handle.job_id, "status": update.status.value, "points": points}))
"""


def points_in_fresh_process(case: BackendCase, key: str) -> dict[str, Any]:
    """In a new Python process: build the backend, ``find(key)``, poll to the end.

    Returns ``{"job_id", "status", "points": [[step, name, value], ...]}`` (job_id None when
    the key was not found).
    """
    args = [case.name, json.dumps(dict(case.options)), str(case.workdir), key, str(case.timeout_s)]
    proc = subprocess.run(
        [sys.executable, "-c", _FRESH_PROCESS, *args],
        capture_output=True,
        text=True,
        timeout=case.timeout_s + 30,
        env={**os.environ, **case.env},
        check=False,
    )
    assert proc.returncode == 0, f"the fresh process failed:\n{proc.stderr}"
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def train_stats(case: BackendCase, request: TrainingRequest, backend: Backend) -> DatasetStats:
    """``case.train_stats``, else the data checks' statistics of ``request.train_file``, with
    token counts when the backend is priced and can count ``request.model``'s tokens, without
    them otherwise."""
    if case.train_stats is not None:
        return case.train_stats
    import inspect

    from orchestrator.core.errors import TokenizerError
    from orchestrator.data import checks

    check_file: Callable[..., tuple[DatasetStats, Any, Any]] = checks.check_file
    priced = backend.capabilities.priced
    if "counter" in inspect.signature(check_file).parameters:  # counts by the backend's counter
        try:
            counter = backend.token_counter(request.model, backend.options) if priced else None
        except TokenizerError:  # a model only the backend's provider knows
            counter = None
        return check_file(request.train_file, counter, model=request.model)[0]
    # The data checks before they took a counter (delete once they all do): a model name.
    try:
        return check_file(request.train_file, request.model, count_tokens=priced)[0]
    except TokenizerError:
        return check_file(request.train_file, request.model, count_tokens=False)[0]


def out_of_range(capabilities: Capabilities) -> Iterator[tuple[str, float]]:
    """``(name, value)`` pairs the backend must refuse, built from its capabilities: a value
    above each finite ``high``, at an exclusive ``low`` or below an inclusive one, and the
    fixed value of each optional parameter it does not accept."""
    for name, r in capabilities.parameters.items():
        is_int = parameter(name).kind == "int"
        candidates: list[float] = []
        if r.high is not None and math.isfinite(r.high):
            candidates.append(math.floor(r.high) + 1 if is_int else r.high + max(1.0, abs(r.high)))
        if r.low is not None and math.isfinite(r.low):
            if r.low_exclusive:
                candidates.append(math.floor(r.low) if is_int else r.low)
            else:
                candidates.append(math.ceil(r.low) - 1 if is_int else r.low - max(1.0, abs(r.low)))
        yield from ((name, v) for v in candidates if r.violation(v) is not None)
    for name in NAMES:
        p = parameter(name)
        if p.optional and not capabilities.accepts(name):
            yield name, p.fixed if p.fixed is not None else p.low

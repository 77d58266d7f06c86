"""Helpers of the backend tests: a backend case, polling, and a fresh-process re-attach."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.backends import registry
from orchestrator.backends.base import Backend, JobHandle, JobUpdate, MetricPoint, TrainingRequest


@dataclass(frozen=True)
class BackendCase:
    """How the contract suite builds one backend and its requests.

    ``short_request(key)`` must finish in seconds; ``long_request(key)`` must run long enough
    to be cancelled after its first metric points. The backend is built from the registry
    name, options and working folder, exactly as a sweep file does, so a fresh process can
    build the same one.
    """

    name: str
    options: Mapping[str, Any]
    workdir: Path
    short_request: Callable[[str], TrainingRequest]
    long_request: Callable[[str], TrainingRequest]
    env: Mapping[str, str] = field(default_factory=dict)
    timeout_s: float = 120.0

    def backend(self) -> Backend:
        cls = registry.load(self.name)
        return cls.from_options(cls.parse_options(dict(self.options)), workdir=self.workdir)


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


def poll_until(
    backend: Backend,
    handle: JobHandle,
    done: Callable[[Polled], bool] = lambda p: p.last.status.terminal,
    *,
    timeout_s: float = 120.0,
    interval_s: float = 0.1,
    polled: Polled | None = None,
) -> Polled:
    """Poll ``handle`` until ``done`` (by default: a terminal status)."""
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


def points_in_fresh_process(case: BackendCase, key: str) -> dict[str, Any]:
    """In a new Python process: build the backend, ``find(key)``, poll to the end.

    Returns ``{"job_id", "status", "points": [[step, name, value], ...]}`` (job_id None when
    the key was not found).
    """
    script = """
import json, sys, time
from pathlib import Path
from orchestrator.backends import registry
name, options, workdir, key, timeout = sys.argv[1:]
cls = registry.load(name)
backend = cls.from_options(cls.parse_options(json.loads(options)), workdir=Path(workdir))
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
    args = [case.name, json.dumps(dict(case.options)), str(case.workdir), key, str(case.timeout_s)]
    proc = subprocess.run(
        [sys.executable, "-c", script, *args],
        capture_output=True,
        text=True,
        timeout=case.timeout_s + 30,
        env={**os.environ, **case.env},
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result

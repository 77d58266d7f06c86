"""Test support shipped with ftsweep: the backend contract suite.

A backend passes the contract of :mod:`orchestrator.backends.base` when it passes
:mod:`orchestrator.testing.contract` (pytest tests; see its docstring for the one import that
runs them). This package holds what those tests are built from and imports neither pytest nor
any heavy library, so other test code may use it too:

* :class:`BackendCase` — how to build the backend and its requests;
* :func:`poll_until` and :class:`Polled` — poll a job with each returned cursor;
* :func:`points_in_fresh_process` — re-attach to a job from a new Python process;
* :func:`build_backend` — build a backend the way a sweep file does.

:mod:`orchestrator.testing.instant` is an instant backend to test with (as httpx ships
``MockTransport``): each poll moves a job on by one epoch, faults are options, and it passes
the contract suite; ftsweep's engine tests and overhead benchmark run on it.
"""

from orchestrator.testing.helpers import (
    BackendCase,
    Polled,
    build_backend,
    points_in_fresh_process,
    poll_until,
)

__all__ = ["BackendCase", "Polled", "build_backend", "points_in_fresh_process", "poll_until"]

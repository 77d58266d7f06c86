"""A fine-tuning API simulator: OpenAI- and Azure-shaped HTTP server for rehearsals and tests.

It speaks the files and fine-tuning jobs API (events, checkpoints, cancel, pause/resume,
result files), runs jobs on a simulated clock with loss curves from a documented
response-surface model (:mod:`.surface`), keeps its state across restarts and injects faults
on request (:mod:`.faults`). See ``docs/apisim.md``.

In-process (tests)::

    with start(speed=0) as server:            # speed 0: the clock moves only when advanced
        client = OpenAI(base_url=server.url + "/v1", api_key="sk-test", max_retries=0)
        ...
        server.sim.advance(600)
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from pathlib import Path

from orchestrator.apisim.clock import SimClock
from orchestrator.apisim.faults import Faults, load_faults
from orchestrator.apisim.server import MAX_SPEED, SimServer
from orchestrator.apisim.simulator import Simulator
from orchestrator.core.errors import UsageError

__all__ = ["Faults", "SimClock", "SimServer", "Simulator", "load_faults", "serve", "start"]


def start(
    *,
    port: int = 0,
    host: str = "127.0.0.1",
    state: str | Path | None = None,
    speed: float = 60.0,
    faults: Faults | str | Path | None = None,
) -> SimServer:
    """A simulator serving in a background thread (``port=0``: a free port).

    A bad ``port``, ``speed``, state folder or faults file is a
    :class:`~orchestrator.core.errors.UsageError` naming it."""
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise UsageError(f"port: must be 0 to 65535, got {port}")
    ok = isinstance(speed, int | float) and not isinstance(speed, bool)
    if not ok or not math.isfinite(speed) or not 0 <= speed <= MAX_SPEED:
        raise UsageError(f"speed: must be a number from 0 to {MAX_SPEED:g}, got {speed}")
    if faults is not None and not isinstance(faults, Faults):
        faults = load_faults(faults)
    sim = Simulator(state, speed=speed, faults=faults)
    try:
        return SimServer(sim, host, port).start()
    except BaseException:
        sim.close()
        raise


def serve(
    *,
    port: int = 8765,
    host: str = "127.0.0.1",
    state: str | Path | None = None,
    speed: float = 60.0,
    faults: str | Path | None = None,
    on_ready: Callable[[SimServer], None] | None = None,
    stop: threading.Event | None = None,
) -> None:
    """Serve until ``stop`` is set or Ctrl-C (re-raised); the state is saved either way."""
    server = start(port=port, host=host, state=state, speed=speed, faults=faults)
    stop = stop or threading.Event()
    try:
        if on_ready is not None:
            on_ready(server)
        while not stop.wait(0.5):  # short waits, so Ctrl-C reaches the main thread promptly
            pass
    finally:
        server.close()

"""The simulated clock: real time times a speed factor, plus manual jumps.

``now()`` is in unix seconds, so API timestamps look real. The clock starts at a given
simulated instant (the wall clock the first time, the saved instant after a restart, so a
restarted simulator resumes where it stopped instead of jumping over the downtime).
A speed of ``0`` freezes the clock: only :meth:`SimClock.advance` moves it (for tests).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

__all__ = ["SimClock"]


class SimClock:
    """Simulated seconds = start + (real seconds since start) x speed + advanced seconds."""

    def __init__(
        self,
        speed: float = 1.0,
        start: float | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        _check_speed(speed)
        self.speed = speed
        self._monotonic = monotonic
        self._origin_real = monotonic()
        self._origin_sim = wall() if start is None else start
        self._lock = threading.Lock()

    def now(self) -> float:
        """The simulated time (unix seconds); never goes backwards."""
        with self._lock:
            return self._origin_sim + (self._monotonic() - self._origin_real) * self.speed

    def advance(self, seconds: float) -> float:
        """Jump ``seconds`` ahead; returns the new simulated time."""
        if not math.isfinite(seconds):
            raise ValueError(f"cannot advance by {seconds} s")
        if seconds < 0:
            raise ValueError(f"cannot go back in time ({seconds} s)")
        with self._lock:
            self._origin_sim += seconds
        return self.now()

    def set_speed(self, speed: float) -> None:
        """Change the speed from now on (the simulated time does not jump)."""
        _check_speed(speed)
        current = self.now()
        with self._lock:
            self._origin_real, self._origin_sim, self.speed = self._monotonic(), current, speed


def _check_speed(speed: float) -> None:
    if not math.isfinite(speed) or speed < 0:
        raise ValueError(f"speed must be a finite number >= 0, got {speed}")

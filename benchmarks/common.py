"""What every benchmark returns, so ``run_all.py`` can print one table.

A benchmark module ``benchmarks/bench_<name>.py`` defines ``run(quick: bool) -> list[Figure]``.
Each figure is measured against a baseline run *in the same script* (same machine, same moment),
and carries its target so the table says at a glance what is met.
"""

from __future__ import annotations

import resource
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Figure:
    """One measured figure: ``value`` against ``baseline``, with the target stated in words.

    ``ratio`` is ``value / baseline`` unless the benchmark gives its own (for example a saving);
    ``met`` is whether the target holds, ``None`` where no target applies.
    """

    name: str
    value: float
    baseline: float | None
    unit: str
    target: str
    met: bool | None
    ratio: float | None = None
    note: str = ""

    def ratio_or_computed(self) -> float | None:
        if self.ratio is not None:
            return self.ratio
        if self.baseline:
            return self.value / self.baseline
        return None

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["ratio"] = self.ratio_or_computed()
        return out


def cpu_seconds() -> float:
    """CPU seconds of this process and its waited-for children (user + system)."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


@dataclass
class Timing:
    wall: float = 0.0
    cpu: float = 0.0


@contextmanager
def timed() -> Iterator[Timing]:
    """``with timed() as t: ...`` then ``t.wall`` / ``t.cpu`` in seconds."""
    t = Timing()
    w0, c0 = time.perf_counter(), cpu_seconds()
    try:
        yield t
    finally:
        t.wall = time.perf_counter() - w0
        t.cpu = cpu_seconds() - c0


def median(values: list[float]) -> float:
    s = sorted(values)
    n = len(s)
    if not n:
        raise ValueError("median of nothing")
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2


def repeat(fn: Callable[[], float], times: int) -> float:
    """The median of ``times`` calls of ``fn`` (each returns its own measurement)."""
    return median([fn() for _ in range(times)])

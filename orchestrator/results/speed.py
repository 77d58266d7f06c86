"""Training throughput of a sweep's trials: tokens per second, MFU and peak memory as the
local trainer measured them (``THROUGHPUT_METRICS``), read from each trial's ledger record
(``ftsweep.throughput``: the values at its job's last epoch end), formatted for the report,
the live view and ``estimate``.

Trials of backends that measure nothing have no record; every helper then says so (None, or
``-``), so a remote sweep's report shows no throughput column at all.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from orchestrator.backends.base import THROUGHPUT_METRICS
from orchestrator.core.attrs import TrialAttrs

if TYPE_CHECKING:
    import optuna

__all__ = [
    "THROUGHPUT_COLUMNS",
    "THROUGHPUT_HEADINGS",
    "MeasuredThroughput",
    "format_memory",
    "format_mfu",
    "format_throughput",
    "format_tokens_per_second",
    "measured_throughput",
    "throughput_cells",
]

#: the trials frame's throughput columns (the metric names)
THROUGHPUT_COLUMNS: tuple[str, ...] = THROUGHPUT_METRICS
#: their headings in the report and the live panel
THROUGHPUT_HEADINGS = {"tokens_per_second": "tok/s", "mfu": "MFU", "peak_memory_mb": "peak memory"}


def _number(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        return None
    return float(v)


def throughput_cells(attrs: Mapping[str, Any]) -> dict[str, float | None]:
    """A trial's throughput by metric name (None where it has none), from its user attrs."""
    found = attrs.get(TrialAttrs.THROUGHPUT)
    record = found if isinstance(found, Mapping) else {}
    return {name: _number(record.get(name)) for name in THROUGHPUT_COLUMNS}


def format_tokens_per_second(v: float | None) -> str:
    """``'12.3k'``, ``'845'``; ``'-'`` for none."""
    if v is None:
        return "-"
    return f"{v / 1000:.1f}k" if v >= 10_000 else f"{v:,.0f}"


def format_mfu(v: float | None) -> str:
    """MFU (a fraction of the device's peak) as a percentage: ``'31.4%'``; ``'-'`` for none."""
    return "-" if v is None else f"{v * 100:.1f}%"


def format_memory(v: float | None) -> str:
    """Peak memory in MB as ``'1.2 GB'`` or ``'840 MB'``; ``'-'`` for none."""
    if v is None:
        return "-"
    return f"{v / 1024:.1f} GB" if v >= 1024 else f"{v:.0f} MB"


def format_throughput(name: str, v: float | None) -> str:
    """The value of the throughput column ``name`` in its unit (``'-'`` for none)."""
    formats = {
        "tokens_per_second": format_tokens_per_second,
        "mfu": format_mfu,
        "peak_memory_mb": format_memory,
    }
    return formats[name](v)


@dataclass(frozen=True)
class MeasuredThroughput:
    """The median tokens per second of a study's finished trials, and how many there were."""

    tokens_per_second: float
    trials: int

    def describe(self) -> str:
        """``'measured: 1,234 tok/s from 3 trials'``."""
        noun = "trial" if self.trials == 1 else "trials"
        rate = format_tokens_per_second(self.tokens_per_second)
        return f"measured: {rate} tok/s from {self.trials} {noun}"


def measured_throughput(trials: Iterable[optuna.trial.FrozenTrial]) -> MeasuredThroughput | None:
    """The throughput the finished trials (complete, pruned or failed; not the earlier epochs
    told as trials of their own) measured; None when none measured any."""
    rates = []
    for t in trials:
        if not t.state.is_finished() or TrialAttrs.DERIVED_FROM in t.user_attrs:
            continue
        rate = throughput_cells(t.user_attrs)["tokens_per_second"]
        if rate is not None and rate > 0:
            rates.append(rate)
    if not rates:
        return None
    return MeasuredThroughput(statistics.median(rates), len(rates))

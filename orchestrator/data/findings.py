"""What a data check finds: findings (with line numbers) and dataset statistics."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

from orchestrator.data.advice import Advice

__all__ = ["DataReport", "DatasetStats", "Distribution", "Finding", "FindingLog", "Severity"]

MAX_LINES_PER_FINDING = 20


class Severity(StrEnum):
    ERROR = "error"
    WARNING = "warning"
    INFO = "info"


#: line numbers a finding's one line shows
SHOWN_LINES = 6


@dataclass(frozen=True)
class Finding:
    """One kind of problem in one file, with the first lines where it occurs.

    ``count`` is how many examples (or lines) have it; ``lines`` holds at most 20 of them;
    ``noun`` names what is counted (``"duplicated examples"``), for the total in words.
    """

    code: str
    severity: Severity
    message: str
    file: str
    lines: tuple[int, ...] = ()
    count: int = 1
    noun: str = "lines"

    def total(self) -> str:
        """The count in words: ``"60 duplicated examples"``."""
        return f"{self.count:,} {self.noun}"

    def one_line(self) -> str:
        """``file:line: message``, for messages and errors; a finding of several lines ends
        with its total and its first lines: ``file:34: message (60 duplicated examples in
        all: lines 34, 35, ...)``."""
        where = f"{self.file}:{self.lines[0]}" if self.lines else self.file
        if self.count <= 1:
            return f"{where}: {self.message}"
        shown = ", ".join(str(n) for n in self.lines[:SHOWN_LINES])
        more = ", ..." if self.count > min(len(self.lines), SHOWN_LINES) else ""
        at = f": line{'s' if len(self.lines) > 1 else ''} {shown}{more}" if self.lines else ""
        return f"{where}: {self.message} ({self.total()} in all{at})"


@dataclass
class _Entry:
    severity: Severity
    message: str
    lines: list[int] = field(default_factory=list)
    count: int = 0
    noun: str = "lines"


class FindingLog:
    """Collects findings for one file in bounded memory: per code, the first message, the
    first 20 lines and a count."""

    def __init__(self, file: str) -> None:
        self.file = file
        self._entries: dict[str, _Entry] = {}

    def add(
        self,
        code: str,
        severity: Severity,
        message: str,
        line: int | None = None,
        *,
        noun: str = "lines",
    ) -> None:
        """Count one occurrence of ``code`` (at ``line``); the first ``message`` and ``noun``
        (what is counted, in the plural) of a code are kept."""
        entry = self._entries.get(code)
        if entry is None:
            entry = self._entries[code] = _Entry(severity, message, noun=noun)
        entry.count += 1
        if line is not None and len(entry.lines) < MAX_LINES_PER_FINDING:
            entry.lines.append(line)

    def error(
        self, code: str, message: str, line: int | None = None, *, noun: str = "lines"
    ) -> None:
        self.add(code, Severity.ERROR, message, line, noun=noun)

    def warning(
        self, code: str, message: str, line: int | None = None, *, noun: str = "lines"
    ) -> None:
        self.add(code, Severity.WARNING, message, line, noun=noun)

    def info(self, code: str, message: str) -> None:
        self.add(code, Severity.INFO, message)

    def merge(self, other: FindingLog, line_offset: int) -> None:
        """Append ``other``'s findings, those of the lines that follow this log's (its line
        numbers shifted by ``line_offset``): the result is what one log over both would
        hold."""
        for code, theirs in other._entries.items():
            entry = self._entries.get(code)
            if entry is None:
                entry = self._entries[code] = _Entry(
                    theirs.severity, theirs.message, noun=theirs.noun
                )
            entry.count += theirs.count
            room = MAX_LINES_PER_FINDING - len(entry.lines)
            entry.lines.extend(n + line_offset for n in theirs.lines[:room])

    def findings(self) -> list[Finding]:
        order = {Severity.ERROR: 0, Severity.WARNING: 1, Severity.INFO: 2}
        items = sorted(
            self._entries.items(),
            key=lambda kv: (order[kv[1].severity], kv[1].lines[0] if kv[1].lines else 0),
        )
        return [
            Finding(code, e.severity, e.message, self.file, tuple(e.lines), e.count, e.noun)
            for code, e in items
        ]


@dataclass(frozen=True)
class Distribution:
    """min / max / mean / median / p10 / p90 of a per-example quantity."""

    min: float
    max: float
    mean: float
    median: float
    p10: float
    p90: float

    @classmethod
    def of(cls, values: Iterable[float]) -> Distribution | None:
        import numpy as np

        arr = np.fromiter(values, dtype=np.float64)
        if arr.size == 0:
            return None
        p10, med, p90 = np.quantile(arr, [0.1, 0.5, 0.9])
        return cls(*(round(float(x), 2) for x in (arr.min(), arr.max(), arr.mean(), med, p10, p90)))


@dataclass(frozen=True)
class DatasetStats:
    """Facts about one JSONL file, computed in one streaming pass."""

    path: str
    format: str  # "chat" | "prompt_completion" | "unknown"
    n_examples: int
    n_lines: int
    n_bytes: int
    sha256: str
    tokens: Distribution | None = None
    trained_tokens: Distribution | None = None  # assistant or completion tokens
    messages: Distribution | None = None  # chat only
    total_tokens: int = 0
    billed_tokens: int = 0
    n_over_limit: int = 0
    task: str | None = None  # "classification" | "conditional generation" | "open-ended generation"
    labels: dict[str, int] | None = None
    separator: str | None = None
    stop_sequence: str | None = None
    #: what a sweep over this file should search or watch (training files only)
    advice: tuple[Advice, ...] = ()


@dataclass(frozen=True)
class DataReport:
    """The result of ``ftsweep validate``: stats per file, findings, and what they imply."""

    model: str
    encoding: str
    max_tokens_per_example: int
    train: DatasetStats
    valid: DatasetStats | None
    findings: tuple[Finding, ...]
    default_epochs: int
    cost_per_epochs: dict[int, float | None]
    price_per_million: float | None

    @property
    def ok(self) -> bool:
        return not self.errors

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity is Severity.ERROR]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.severity is Severity.WARNING]

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["ok"] = self.ok
        out["cost_per_epochs"] = {str(k): v for k, v in self.cost_per_epochs.items()}
        return out

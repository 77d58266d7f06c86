"""Prompt/completion conventions: a separator ending every prompt, a stop sequence ending
every completion, no shared prefix to learn, and the lines that break them.

The legacy ``prepare_data`` rules: the separator and stop sequence are what all (or most)
texts end with; the first pass of :mod:`.checks` gathers that evidence in a
:class:`TextColumn` per column, :func:`check_conventions` concludes.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from orchestrator.data.findings import DatasetStats, FindingLog
from orchestrator.data.reader import JsonlReader

__all__ = ["SEPARATORS", "STOPS", "ConventionScan", "TextColumn", "check_conventions", "scan_lines"]

SEPARATORS = (" ->", "\n\n###\n\n", "\n\n===\n\n", "\n\n---\n\n", "\n\n===>\n\n", "\n\n--->\n\n")
STOPS = ("\n", ".", " END", "***", "+++", "&&&", "$$$", "@@@", "%%%", "###")


def _shown(text: str) -> str:
    return repr(text)


def _common_prefix(a: str, b: str) -> str:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return a[:i]


def _common_suffix(a: str, b: str) -> str:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[-1 - i] == b[-1 - i]:
        i += 1
    return a[len(a) - i :]


@dataclass
class TextColumn:
    """Running evidence about one text column (prompts or completions)."""

    prefix: str | None = None
    suffix: str | None = None
    first: str | None = None
    all_same: bool = True
    all_empty: bool = True
    ending: Counter[str] = field(default_factory=Counter)

    def add(self, text: str, candidates: tuple[str, ...]) -> None:
        if self.first is None:
            self.first = self.prefix = self.suffix = text
        else:
            self.all_same = self.all_same and text == self.first
            assert self.prefix is not None and self.suffix is not None
            if self.prefix:
                self.prefix = _common_prefix(self.prefix, text)
            if self.suffix:
                self.suffix = _common_suffix(self.suffix, text)
        self.all_empty = self.all_empty and not text
        for c in candidates:
            if text.endswith(c):
                self.ending[c] += 1

    def merge(self, other: TextColumn) -> None:
        """Take in the evidence of the texts that follow (another range of the file)."""
        if other.first is None:
            return
        if self.first is None:
            self.first, self.prefix, self.suffix = other.first, other.prefix, other.suffix
            self.all_same, self.all_empty = other.all_same, other.all_empty
            self.ending.update(other.ending)
            return
        assert self.prefix is not None and self.suffix is not None
        assert other.prefix is not None and other.suffix is not None
        self.all_same = self.all_same and other.all_same and other.first == self.first
        if self.prefix:
            self.prefix = _common_prefix(self.prefix, other.prefix)
        if self.suffix:
            self.suffix = _common_suffix(self.suffix, other.suffix)
        self.all_empty = self.all_empty and other.all_empty
        self.ending.update(other.ending)

    def convention(self, n: int) -> str | None:
        """The ending shared by all texts, else by most of them, else None."""
        if self.suffix and self.suffix.strip(" "):
            return self.suffix
        if self.ending:
            best, count = max(self.ending.items(), key=lambda kv: (kv[1], len(kv[0])))
            if count * 2 >= n:
                return best
        return None


#: the second pass: (separator, stop sequence) -> the findings of the lines that break them
ConventionScan = Callable[[str | None, str | None], FindingLog]


def scan_lines(
    path: str,
    separator: str | None,
    stop: str | None,
    max_line_bytes: int,
    start: int = 0,
    end: int | None = None,
) -> FindingLog:
    """The lines of ``path`` (or of its byte range) that break the separator or stop-sequence
    convention, numbered from the range's start."""
    log = FindingLog(path)
    for line in JsonlReader(path, max_line_bytes, start=start, end=end, hash_bytes=False):
        v = line.value
        if not (isinstance(v, dict) and isinstance(v.get("prompt"), str)):
            continue
        if not isinstance(v.get("completion"), str):
            continue
        _convention_line(log, "separator", separator, v["prompt"], line.number, "prompt")
        _convention_line(log, "stop_sequence", stop, v["completion"], line.number, "completion")
    return log


def check_conventions(
    log: FindingLog,
    stats: DatasetStats,
    prompts: TextColumn,
    completions: TextColumn,
    max_line_bytes: int,
    scan: ConventionScan | None = None,
) -> None:
    """Separator, stop-sequence and prefix findings of a prompt/completion file; when a
    convention exists, a second pass over the file names the lines that break it (``scan``:
    default :func:`scan_lines` over the whole file, here)."""
    n = stats.n_examples
    if stats.task == "open-ended generation":
        return
    if n > 1 and prompts.all_same:
        log.error("identical_prompts", "all prompts are identical")
    if n > 1 and completions.all_same and stats.task != "classification":
        log.error("identical_completions", "all completions are identical")
    if prompts.prefix and len(prompts.prefix) > 12:
        log.warning(
            "common_prompt_prefix",
            f"every prompt starts with {_shown(prompts.prefix[:60])}: fine-tuning needs no "
            "repeated instruction; removing it saves tokens",
        )
    if completions.prefix and len(completions.prefix) >= 5:
        log.warning(
            "common_completion_prefix",
            f"every completion starts with {_shown(completions.prefix[:60])}: the model must "
            "learn nothing from it; consider removing it",
        )
    if stats.separator is None:
        log.warning(
            "no_separator",
            "prompts do not end with a common separator (such as '\\n\\n###\\n\\n'); "
            "`ftsweep prepare` adds one",
        )
    if stats.task == "conditional generation" and stats.stop_sequence is None:
        log.warning(
            "no_stop_sequence",
            "completions do not end with a common stop sequence (such as '\\n' or ' END'); "
            "`ftsweep prepare` adds one",
        )
    if stats.separator is None and stats.stop_sequence is None:
        return
    if scan is None:
        found = scan_lines(stats.path, stats.separator, stats.stop_sequence, max_line_bytes)
    else:
        found = scan(stats.separator, stats.stop_sequence)
    log.merge(found, 0)


def _convention_line(
    log: FindingLog, what: str, token: str | None, text: str, number: int, field_name: str
) -> None:
    if not token:
        return
    label = what.replace("_", " ")
    if not text.endswith(token):
        log.warning(
            f"{what}_missing",
            f"{field_name} does not end with the {label} {_shown(token)} that the others end with",
            number,
        )
        if token in text:
            log.warning(
                f"{what}_inside",
                f"the {label} {_shown(token)} occurs inside the {field_name}",
                number,
            )
    elif token in text[: -len(token)]:
        log.warning(
            f"{what}_inside", f"the {label} {_shown(token)} occurs inside the {field_name}", number
        )

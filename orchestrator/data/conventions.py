"""Prompt/completion conventions: a separator ending every prompt, a stop sequence ending
every completion, no shared prefix or suffix to pay for in every example (each noted with the
tokens it costs per epoch), and the lines that break them.

The legacy ``prepare_data`` rules: the separator and stop sequence are what all (or most)
texts end with; the first pass of :mod:`.checks` gathers that evidence in a
:class:`TextColumn` per column, :func:`check_conventions` concludes.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from orchestrator.catalog.tokens import ExampleCounter
from orchestrator.data.findings import DatasetStats, FindingLog
from orchestrator.data.reader import JsonlReader

__all__ = ["SEPARATORS", "STOPS", "ConventionScan", "TextColumn", "check_conventions", "scan_lines"]

SEPARATORS = (" ->", "\n\n###\n\n", "\n\n===\n\n", "\n\n---\n\n", "\n\n===>\n\n", "\n\n--->\n\n")
STOPS = ("\n", ".", " END", "***", "+++", "&&&", "$$$", "@@@", "%%%", "###")


def _shown(text: str) -> str:
    return repr(text)


#: the most characters of a shared prefix or suffix a finding quotes
_SHOWN_CHARS = 60


def _clipped(text: str, *, start: bool) -> str:
    """``text`` quoted, at most :data:`_SHOWN_CHARS` of it: a shared prefix's start
    (``'...'...``) or a suffix's end (``...'...'``), so a cut never reads as the whole."""
    if len(text) <= _SHOWN_CHARS:
        return _shown(text)
    if start:
        return f"{_shown(text[:_SHOWN_CHARS])}..."
    return f"...{_shown(text[-_SHOWN_CHARS:])}"


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


def _cost(text: str, field_name: str, n: int, counter: ExampleCounter | None) -> str:
    """What ``text`` in every ``field_name`` of ``n`` examples costs: tokens by ``counter``
    (the example with it, less the example without it), else characters."""
    if counter is None:
        each, unit = len(text), "characters"
    else:
        empty = {"prompt": "", "completion": ""}
        base = counter.example("prompt_completion", empty)[0]
        each = counter.example("prompt_completion", {**empty, field_name: text})[0] - base
        unit = "tokens"
    each = max(each, 0)
    return f"{each:,} {unit} each, {each * n:,} per epoch over {n:,} examples"


#: a separator or stop sequence of its own is needed; a shared ending longer than these is
#: noted as repeated text (the prompt prefix rule's length, and the longest stop sequence)
_LONG_SUFFIX = {"prompt": 12, "completion": max(len(s) for s in STOPS)}
_ENDING = {
    "prompt": "a separator needs only a few characters (such as ' ->' or '\\n\\n###\\n\\n')",
    "completion": "a stop sequence needs only a few characters (such as '\\n' or ' END')",
}


def _whole_words(text: str, *, start: bool) -> str:
    """A shared prefix (``start``) or suffix cut back to whole words: texts that share
    ``'Answer: a'`` because their answers start alike share ``'Answer: '``."""
    if not text or not text[-1 if start else 0].isalnum():
        return text
    cut = max(text.rfind(c) for c in " \n\t") if start else _first_space(text)
    if cut < 0:
        return text
    return text[: cut + 1] if start else text[cut:]


def _first_space(text: str) -> int:
    found = [i for i in (text.find(c) for c in " \n\t") if i >= 0]
    return min(found) if found else -1


def _affixes(
    log: FindingLog,
    n: int,
    prompts: TextColumn,
    completions: TextColumn,
    counter: ExampleCounter | None,
) -> None:
    # the lengths are the shared text's, as the legacy tool measured them; the message shows
    # it cut back to whole words
    prefix = _whole_words(prompts.prefix or "", start=True)
    if len(prompts.prefix or "") > 12:
        log.warning(
            "common_prompt_prefix",
            f"every prompt starts with {_clipped(prefix, start=True)} "
            f"({_cost(prefix, 'prompt', n, counter)}): fine-tuning needs no repeated "
            "instruction; removing it saves those tokens",
        )
    prefix = _whole_words(completions.prefix or "", start=True)
    if len(completions.prefix or "") >= 5:
        log.warning(
            "common_completion_prefix",
            f"every completion starts with {_clipped(prefix, start=True)} "
            f"({_cost(prefix, 'completion', n, counter)}, all trained on): the model "
            "must learn nothing from it; consider removing it",
        )
    for name, column in (("prompt", prompts), ("completion", completions)):
        suffix = _whole_words(column.suffix or "", start=False)
        if len(suffix) <= _LONG_SUFFIX[name] or suffix == column.first:
            continue
        log.info(
            f"common_{name}_suffix",
            f"every {name} ends with {_clipped(suffix, start=False)} "
            f"({_cost(suffix, name, n, counter)}): {_ENDING[name]}; the rest is repeated in "
            "every example",
        )


def check_conventions(
    log: FindingLog,
    stats: DatasetStats,
    prompts: TextColumn,
    completions: TextColumn,
    max_line_bytes: int,
    scan: ConventionScan | None = None,
    counter: ExampleCounter | None = None,
) -> None:
    """Separator, stop-sequence, prefix and suffix findings of a prompt/completion file; when
    a convention exists, a second pass over the file names the lines that break it (``scan``:
    default :func:`scan_lines` over the whole file, here). ``counter`` prices a shared prefix
    or suffix in tokens (None: in characters)."""
    n = stats.n_examples
    if stats.task == "open-ended generation":
        return
    if n > 1 and prompts.all_same:
        log.error("identical_prompts", "all prompts are identical")
    if n > 1 and completions.all_same and stats.task != "classification":
        log.error("identical_completions", "all completions are identical")
    if n > 1 and not prompts.all_same:  # identical texts are the errors above, not affixes
        _affixes(log, n, prompts, TextColumn() if completions.all_same else completions, counter)
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
    missing, inside = f"{field_name}s without the {label}", f"{field_name}s with it inside"
    if not text.endswith(token):
        log.warning(
            f"{what}_missing",
            f"{field_name} does not end with the {label} {_shown(token)} that the others end with",
            number,
            noun=missing,
        )
        if token in text:
            log.warning(
                f"{what}_inside",
                f"the {label} {_shown(token)} occurs inside the {field_name}",
                number,
                noun=inside,
            )
    elif token in text[: -len(token)]:
        log.warning(
            f"{what}_inside",
            f"the {label} {_shown(token)} occurs inside the {field_name}",
            number,
            noun=inside,
        )

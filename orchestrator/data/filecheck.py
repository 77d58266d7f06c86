"""One file's line-by-line check (:class:`FileCheck`): what :mod:`.checks` runs in one pass and
:mod:`.parallel` runs per byte range in each worker, merging the parts."""

from __future__ import annotations

import hashlib
import re
from array import array
from collections import Counter
from typing import Any

from orchestrator.catalog.tokens import ExampleCounter
from orchestrator.data import formats
from orchestrator.data.conventions import (
    SEPARATORS,
    STOPS,
    ConventionScan,
    TextColumn,
)
from orchestrator.data.findings import (
    DatasetStats,
    Distribution,
    FindingLog,
    Severity,
)
from orchestrator.data.reader import JsonlReader

__all__ = ["MAX_LABELS", "MAX_LABEL_CHARS", "FileCheck"]

MAX_LABELS = 1000
MAX_LABEL_CHARS = 100
_UPPER = re.compile(r"[A-Z]")
_LOWER = re.compile(r"[a-z]")


class FileCheck:
    """What one pass over one file found, line by line: findings, per-example token and
    character counts, content hashes, labels and the prompt/completion conventions. Checks of
    consecutive byte ranges :meth:`merge` into what one pass over the whole file finds."""

    def __init__(
        self,
        path: str,
        counter: ExampleCounter | None,
        model: str | None,
        max_line_bytes: int,
        format_hint: tuple[str, int] | None = None,
    ) -> None:
        self.path = path
        self.max_line_bytes = max_line_bytes
        JsonlReader(path, max_line_bytes)  # a missing file or a folder: a DataError now
        self.log = FindingLog(path)
        self.counter = counter
        if counter is not None:
            self.model = model or counter.name
            self.encoding, self.limit = counter.name, counter.max_tokens_per_example
            self.special = tuple(sorted(counter.special_tokens))
        else:
            self.model = model or "none"
            self.encoding, self.limit = "none", 2**31
            self.special = ()
        # the first example's format (and line) is the file's; a range of the file is told it
        self.format: str | None = format_hint[0] if format_hint else None
        self.format_line = format_hint[1] if format_hint else 0
        self.n_examples = 0
        # what the reader saw (JsonlReader's figures)
        self.n_lines = self.n_bytes = self.crlf_lines = self.blank_lines = 0
        self.had_bom = False
        self.sha256 = ""
        # the second pass over a prompt/completion file: set by the pool (see .parallel)
        self.scan: ConventionScan | None = None
        self.hashes: array[int] = array("Q")
        self.hash_lines: array[int] = array("L")
        self.tokens: array[int] = array("L")
        self.trained: array[int] = array("L")
        self.n_messages: array[int] = array("H")
        # lengths in characters, for the advice, where no counter counts tokens
        self.chars: array[int] = array("L")
        self.trained_chars: array[int] = array("L")
        self.over_limit = 0
        self.billed = 0
        self.labels: Counter[str] | None = Counter()
        self.prompts = TextColumn()
        self.completions = TextColumn()

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["counter"] = state["scan"] = None  # a range's result travels back without them
        return state

    # -- one pass -------------------------------------------------------------------------
    def run(self, reader: JsonlReader | None = None) -> None:
        """Check every line ``reader`` yields (default: the whole file)."""
        reader = reader or JsonlReader(self.path, self.max_line_bytes)
        try:
            self._run(reader)
        finally:
            self.n_lines, self.n_bytes = reader.n_lines, reader.n_bytes
            self.crlf_lines, self.blank_lines = reader.crlf_lines, reader.blank_lines
            self.had_bom = reader.had_bom
            self.sha256 = reader.sha256 if reader.hash_bytes else ""

    def _run(self, reader: JsonlReader) -> None:
        for line in reader:
            self.n_examples += 1
            if line.problem is not None:
                self.log.error(*line.problem, line=line.number)
                continue
            fmt = formats.detect_format(line.value)
            if isinstance(fmt, formats.Problem):
                self.log.error(fmt.code, fmt.message, line.number)
                continue
            if self.format is None:
                self.format, self.format_line = fmt, line.number
            elif fmt != self.format:
                where = f"format set by line {self.format_line}"
                self.log.error(
                    "mixed_formats", f"{fmt} example in a {self.format} file ({where})", line.number
                )
                continue
            ok = True
            for problem in formats.check_example(fmt, line.value, self.special):
                severity = Severity.ERROR if problem.error else Severity.WARNING
                self.log.add(problem.code, severity, problem.message, line.number)
                ok = ok and not problem.error
            if ok:
                self._add(fmt, line.number, line.value)

    def _add(self, fmt: str, number: int, value: dict[str, Any]) -> None:
        h = hashlib.blake2b(digest_size=8)
        if fmt == formats.CHAT:
            messages = value["messages"]
            roles = {m.get("role") for m in messages}
            if "system" not in roles and "developer" not in roles:
                self.log.warning("missing_system_message", "example has no system message", number)
            if "user" not in roles:
                self.log.warning("missing_user_message", "example has no user message", number)
            for m in messages:
                h.update(f"{m.get('role')}\x1f{m.get('content')}\x1e".encode())
            self.n_messages.append(min(len(messages), 65535))
            last = next(m for m in reversed(messages) if m.get("role") == "assistant")
            self._label(last.get("content"))
            if self.counter is None:
                total = trained = 0
                for m in messages:
                    content = m.get("content")
                    n = len(content) if isinstance(content, str) else 0
                    total += n
                    trained += n if m.get("role") == "assistant" else 0
                self.chars.append(total)
                self.trained_chars.append(trained)
        else:
            prompt, completion = value["prompt"], value["completion"]
            h.update(prompt.encode())
            h.update(b"\x00")
            h.update(completion.encode())
            self.prompts.add(prompt, SEPARATORS)
            self.completions.add(completion, STOPS)
            self._label(completion)
            if self.counter is None:
                self.chars.append(len(prompt) + len(completion))
                self.trained_chars.append(len(completion))
            if completion[:1] not in (" ", "\n", "\t"):
                self.log.warning(
                    "completion_no_leading_space",
                    "completion does not start with whitespace (the tokenizer expects ' word')",
                    number,
                )
            for name, text in (("prompt", prompt), ("completion", completion)):
                upper = len(_UPPER.findall(text))
                if upper and upper * 2 > len(_LOWER.findall(text)):
                    self.log.warning(
                        f"uppercase_{name}", f"{name} is mostly uppercase letters", number
                    )
        # one example at a time: batching texts through tiktoken was not faster than this
        # loop (see TiktokenCounter.count_many)
        if self.counter is not None:
            try:
                counted = self.counter.example(fmt, value)
            except ValueError as exc:  # e.g. a chat template that refuses a system message
                self.log.error("uncountable", f"cannot count the example's tokens: {exc}", number)
            else:
                self._record(number, *counted)
        self.hashes.append(int.from_bytes(h.digest(), "little"))
        self.hash_lines.append(number)

    def merge(self, part: FileCheck) -> None:
        """Append what ``part`` found in the lines that follow this check's (the next byte
        range of the file, checked with the same format hint): afterwards this check holds
        what one pass over both would, line numbers included."""
        import numpy as np

        offset = self.n_lines
        self.log.merge(part.log, offset)
        self.n_examples += part.n_examples
        self.hashes.extend(part.hashes)
        if len(part.hash_lines):
            shifted = np.frombuffer(part.hash_lines, dtype=f"u{part.hash_lines.itemsize}")
            self.hash_lines.frombytes((shifted + offset).astype(shifted.dtype).tobytes())
        self.tokens.extend(part.tokens)
        self.trained.extend(part.trained)
        self.n_messages.extend(part.n_messages)
        self.chars.extend(part.chars)
        self.trained_chars.extend(part.trained_chars)
        self.over_limit += part.over_limit
        self.billed += part.billed
        if self.labels is not None and part.labels is not None:
            self.labels.update(part.labels)
            if len(self.labels) > MAX_LABELS:
                self.labels = None
        else:
            self.labels = None
        self.prompts.merge(part.prompts)
        self.completions.merge(part.completions)
        self.had_bom = self.had_bom or (self.n_lines == 0 and part.had_bom)
        self.n_lines += part.n_lines
        self.n_bytes += part.n_bytes
        self.crlf_lines += part.crlf_lines
        self.blank_lines += part.blank_lines

    def _label(self, content: Any) -> None:
        if self.labels is None:
            return
        if not isinstance(content, str) or len(content) > MAX_LABEL_CHARS:
            self.labels = None
            return
        self.labels[content.strip()] += 1
        if len(self.labels) > MAX_LABELS:
            self.labels = None

    def _record(self, number: int, total: int, trained: int) -> None:
        self.tokens.append(total)
        self.trained.append(trained)
        self.billed += min(total, self.limit)
        if total > self.limit:
            self.over_limit += 1
            self.log.warning(
                "over_token_limit",
                f"example has {total:,} tokens, over the {self.limit:,}-token limit of "
                f"{self.model}; it will be truncated",
                number,
            )

    # -- conclusions ---------------------------------------------------------------------
    def stats(self) -> DatasetStats:
        task = self._task()
        sep = stop = None
        if self.format == formats.PROMPT_COMPLETION and task != "open-ended generation":
            sep = self.prompts.convention(len(self.hashes))
            if task == "conditional generation":
                stop = self.completions.convention(len(self.hashes))
        labels = None
        if task == "classification" and self.labels is not None:
            labels = dict(self.labels.most_common())
        return DatasetStats(
            path=self.path,
            format=self.format or "unknown",
            n_examples=self.n_examples,
            n_lines=self.n_lines,
            n_bytes=self.n_bytes,
            sha256=self.sha256,
            tokens=Distribution.of(self.tokens),
            trained_tokens=Distribution.of(self.trained),
            messages=Distribution.of(self.n_messages),
            total_tokens=sum(self.tokens),
            billed_tokens=self.billed,
            n_over_limit=self.over_limit,
            task=task,
            labels=labels,
            separator=sep,
            stop_sequence=stop,
        )

    def _task(self) -> str | None:
        n = len(self.hashes)
        if n == 0:
            return None
        if self.format == formats.PROMPT_COMPLETION and self.prompts.all_empty:
            return "open-ended generation"
        if self.labels is not None and len(self.labels) * 3 < n:
            return "classification"
        return "conditional generation"

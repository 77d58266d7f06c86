"""``check_dataset``: every data check, streaming, in bounded memory.

One pass per file collects structure problems (per line), token counts (from the
:class:`~orchestrator.data.tokens.ExampleCounter` given, if any), duplicates (8-byte hashes,
so about 12 bytes per example), label counts (capped) and the separator / stop-sequence
evidence of prompt/completion data; a second, cheap pass over prompt/completion files names
the lines that break the separator or stop-sequence convention. The checks are the union of
the legacy ``openai tools fine_tunes.prepare_data`` validators and the OpenAI cookbook's chat
data-prep checks, plus the API's own rules.

The checks take a counter, not a model name: which tokenizer a model has is the business of
the layer above (:mod:`orchestrator.tokenizers`, the backends), never of this package.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
from array import array
from collections import Counter
from dataclasses import replace
from typing import Any

from orchestrator.costs import training_cost, training_price
from orchestrator.data import formats
from orchestrator.data.advice import Advice, advise
from orchestrator.data.conventions import (
    SEPARATORS,
    STOPS,
    ConventionScan,
    TextColumn,
    check_conventions,
)
from orchestrator.data.findings import (
    DataReport,
    DatasetStats,
    Distribution,
    FindingLog,
    Severity,
)
from orchestrator.data.parallel import PARALLEL_MIN_BYTES, run_check
from orchestrator.data.reader import DEFAULT_MAX_LINE_BYTES, JsonlReader
from orchestrator.data.tokens import ExampleCounter

__all__ = ["MIN_EXAMPLES", "check_dataset", "check_file", "default_epochs"]

MIN_EXAMPLES = 10  # the API rejects fewer (invalid_n_examples)
RECOMMENDED_EXAMPLES = 200
MAX_LABELS = 1000
MAX_LABEL_CHARS = 100
_UPPER = re.compile(r"[A-Z]")
_LOWER = re.compile(r"[a-z]")


def default_epochs(n_examples: int) -> int:
    """The provider's default epoch count for ``n_examples`` (the cookbook's rule)."""
    if n_examples <= 0:
        return 0
    if n_examples * 3 < 100:
        return min(25, 100 // n_examples)
    if n_examples * 3 > 25_000:
        return max(1, 25_000 // n_examples)
    return 3


class _FileCheck:
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
            self._record(number, *self.counter.example(fmt, value))
        self.hashes.append(int.from_bytes(h.digest(), "little"))
        self.hash_lines.append(number)

    def merge(self, part: _FileCheck) -> None:
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


def check_file(
    path: str | os.PathLike[str],
    counter: ExampleCounter | None = None,
    *,
    model: str | None = None,
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
    workers: int | None = None,
    range_bytes: int | None = None,
    min_parallel_bytes: int = PARALLEL_MIN_BYTES,
) -> tuple[DatasetStats, FindingLog, _FileCheck]:
    """Check one file on its own (no train/valid comparison, no dataset-level rules).

    ``counter`` counts the tokens (None: no token figures); ``model`` names the model in
    messages. Files of ``min_parallel_bytes`` or more are checked in ``workers`` processes
    (default ``$FTSWEEP_DATA_WORKERS``, else every usable core), in byte ranges of about
    ``range_bytes`` (default: :func:`~.parallel.range_size`), with the same results as one
    pass (:mod:`.parallel`)."""
    check = _FileCheck(str(path), counter, model, max_line_bytes)
    run_check(
        check,
        counter,
        model,
        workers=workers,
        range_bytes=range_bytes,
        min_parallel_bytes=min_parallel_bytes,
    )
    stats = check.stats()
    _conclude(check, stats)
    return stats, check.log, check


def _conclude(check: _FileCheck, stats: DatasetStats) -> None:
    log, n = check.log, stats.n_examples
    if check.n_bytes == 0:
        log.error("empty_file", "file is empty")
    elif n == 0:
        log.error("no_examples", "no examples (only blank lines)")
    if check.had_bom:
        log.info("bom", "UTF-8 byte-order mark at the start (accepted and ignored)")
    if check.crlf_lines:
        log.info("crlf", f"{check.crlf_lines} lines end in CRLF (accepted)")
    if check.blank_lines:
        log.warning("blank_lines", f"{check.blank_lines} blank lines are skipped")
    _duplicates(check)
    if stats.n_over_limit:
        log.info(
            "billing",
            f"{stats.n_over_limit} examples over the limit are billed at {check.limit:,} tokens",
        )
    if stats.format == formats.PROMPT_COMPLETION and len(check.hashes):
        check_conventions(
            log, stats, check.prompts, check.completions, check.max_line_bytes, check.scan
        )
    if stats.labels:
        counts = sorted(stats.labels.values())
        shown = ", ".join(f"{k!r}: {v}" for k, v in list(stats.labels.items())[:10])
        log.info("classification", f"looks like classification with {len(counts)} labels ({shown})")
        if len(counts) > 1 and counts[-1] >= 10 * counts[0]:
            log.warning(
                "label_imbalance",
                f"labels are imbalanced: the most common has {counts[-1]} examples, "
                f"the rarest {counts[0]}",
            )


def _duplicates(check: _FileCheck) -> None:
    import numpy as np

    hashes = np.frombuffer(check.hashes, dtype=np.uint64) if len(check.hashes) else None
    if hashes is None:
        return
    lines = np.frombuffer(
        check.hash_lines, dtype=np.uint32 if check.hash_lines.itemsize == 4 else np.uint64
    )
    order = np.argsort(hashes, kind="stable")
    sorted_h = hashes[order]
    dup = np.nonzero(sorted_h[1:] == sorted_h[:-1])[0]
    if dup.size == 0:
        return
    first_of: dict[int, int] = {}
    pairs: list[tuple[int, int]] = []
    for i in dup:
        a, b = int(lines[order[i]]), int(lines[order[i + 1]])
        first = first_of.setdefault(int(sorted_h[i]), min(a, b))
        pairs.append((max(a, b), first))
    pairs.sort()
    first_line, of = pairs[0]
    message = f"exact duplicate of an earlier example (line {first_line} repeats line {of})"
    for line, _ in pairs:
        check.log.warning("duplicate", message, line)


def check_dataset(
    train: str | os.PathLike[str],
    valid: str | os.PathLike[str] | None = None,
    counter: ExampleCounter | None = None,
    *,
    model: str | None = None,
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
    price_overrides: dict[str, float] | None = None,
    epochs: tuple[int, ...] = (1, 2, 3, 4),
    workers: int | None = None,
    range_bytes: int | None = None,
    min_parallel_bytes: int = PARALLEL_MIN_BYTES,
) -> DataReport:
    """Run every check on a training file (and a validation file): each file's own, and the
    dataset's (at least :data:`MIN_EXAMPLES` training examples, one format for both files,
    no validation example in the training file).

    ``counter`` counts tokens as the model is trained (None: no token figures or costs);
    ``model`` names it in the report and finds its price (``price_overrides`` over the
    built-in table). ``workers``, ``range_bytes``, ``min_parallel_bytes``: as in
    :func:`check_file`."""
    check = functools.partial(
        check_file,
        counter=counter,
        model=model,
        max_line_bytes=max_line_bytes,
        workers=workers,
        range_bytes=range_bytes,
        min_parallel_bytes=min_parallel_bytes,
    )
    train_stats, train_log, train_check = check(train)
    train_stats = replace(train_stats, advice=_advice(train_check, train_stats))
    n = train_stats.n_examples
    if 0 < n < MIN_EXAMPLES:
        train_log.error(
            "too_few_examples",
            f"{n} examples; the fine-tuning API requires at least {MIN_EXAMPLES}",
        )
    elif MIN_EXAMPLES <= n < RECOMMENDED_EXAMPLES:
        train_log.warning(
            "few_examples",
            f"only {n} examples; results usually improve with every doubling, "
            "so a few hundred or more are recommended",
        )
    findings = train_log.findings()
    valid_stats = None
    if valid is not None:
        valid_stats, valid_log, valid_check = check(valid)
        if valid_stats.format not in ("unknown", train_stats.format):
            valid_log.error(
                "format_mismatch",
                f"validation data is {valid_stats.format}, training data is {train_stats.format}",
            )
        _overlap(train_check, valid_check, valid_log)
        findings += valid_log.findings()
    n_epochs = default_epochs(n)
    price = training_price(model, price_overrides) if model is not None else None
    costs: dict[int, float | None] = {}
    for e in sorted({*epochs, n_epochs} - {0}):
        costs[e] = None
        if price is not None and counter is not None:
            costs[e] = training_cost(train_stats.billed_tokens, e, price)
    return DataReport(
        model=model or (counter.name if counter is not None else "none"),
        encoding=train_check.encoding,
        max_tokens_per_example=train_check.limit,
        train=train_stats,
        valid=valid_stats,
        findings=tuple(findings),
        default_epochs=n_epochs,
        cost_per_epochs=costs,
        price_per_million=price,
    )


def _advice(check: _FileCheck, stats: DatasetStats) -> tuple[Advice, ...]:
    counted = check.counter is not None
    return advise(
        n_examples=stats.n_examples,
        task=stats.task,
        labels=stats.labels,
        lengths=check.tokens if counted else check.chars,
        trained=check.trained if counted else check.trained_chars,
        lines=check.hash_lines,
        unit="tokens" if counted else "characters",
    )


def _overlap(train: _FileCheck, valid: _FileCheck, log: FindingLog) -> None:
    import numpy as np

    if not len(train.hashes) or not len(valid.hashes):
        return
    th = np.frombuffer(train.hashes, dtype=np.uint64)
    vh = np.frombuffer(valid.hashes, dtype=np.uint64)
    hits = np.nonzero(np.isin(vh, th))[0]
    if hits.size == 0:
        return
    first = int(hits[0])
    train_line = train.hash_lines[int(np.nonzero(th == vh[first])[0][0])]
    valid_line = valid.hash_lines[first]
    message = (
        f"validation example also in the training file "
        f"(line {valid_line} = training line {train_line})"
    )
    for i in hits:
        log.warning("train_valid_overlap", message, valid.hash_lines[int(i)])

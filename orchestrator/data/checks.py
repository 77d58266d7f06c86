"""``check_dataset``: every data check, streaming, in bounded memory.

One pass per file collects structure problems (per line), token counts (from the
:class:`~orchestrator.catalog.tokens.ExampleCounter` given, if any), duplicates (8-byte hashes,
so about 12 bytes per example), label counts (capped) and the separator / stop-sequence
evidence of prompt/completion data; a second, cheap pass over prompt/completion files names
the lines that break the separator or stop-sequence convention. The checks are the union of
the legacy ``openai tools fine_tunes.prepare_data`` validators and the OpenAI cookbook's chat
data-prep checks, plus the API's own rules.

The checks take a counter, not a model name: which tokenizer a model has is the business of
the layer above (:mod:`orchestrator.backends.counters`, the backends), never of this package.
"""

from __future__ import annotations

import functools
import os
from dataclasses import replace

from orchestrator.catalog.prices import training_cost, training_price
from orchestrator.catalog.tokens import ExampleCounter
from orchestrator.data import formats
from orchestrator.data.advice import Advice, advise
from orchestrator.data.conventions import (
    check_conventions,
)
from orchestrator.data.filecheck import FileCheck
from orchestrator.data.findings import (
    DataReport,
    DatasetStats,
    FindingLog,
)
from orchestrator.data.parallel import PARALLEL_MIN_BYTES, run_check
from orchestrator.data.reader import DEFAULT_MAX_LINE_BYTES

__all__ = ["MIN_EXAMPLES", "check_dataset", "check_file", "default_epochs"]

MIN_EXAMPLES = 10  # the API rejects fewer (invalid_n_examples)
RECOMMENDED_EXAMPLES = 200


def default_epochs(n_examples: int) -> int:
    """The provider's default epoch count for ``n_examples`` (the cookbook's rule)."""
    if n_examples <= 0:
        return 0
    if n_examples * 3 < 100:
        return min(25, 100 // n_examples)
    if n_examples * 3 > 25_000:
        return max(1, 25_000 // n_examples)
    return 3


def check_file(
    path: str | os.PathLike[str],
    counter: ExampleCounter | None = None,
    *,
    model: str | None = None,
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
    workers: int | None = None,
    range_bytes: int | None = None,
    min_parallel_bytes: int = PARALLEL_MIN_BYTES,
) -> tuple[DatasetStats, FindingLog, FileCheck]:
    """Check one file on its own (no train/valid comparison, no dataset-level rules).

    ``counter`` counts the tokens (None: no token figures); ``model`` names the model in
    messages. Files of ``min_parallel_bytes`` or more are checked in ``workers`` processes
    (default ``$FTSWEEP_DATA_WORKERS``, else every usable core), in byte ranges of about
    ``range_bytes`` (default: :func:`~.parallel.range_size`), with the same results as one
    pass (:mod:`.parallel`)."""
    check = FileCheck(str(path), counter, model, max_line_bytes)
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


def _conclude(check: FileCheck, stats: DatasetStats) -> None:
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
            log,
            stats,
            check.prompts,
            check.completions,
            check.max_line_bytes,
            check.scan,
            check.counter,
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


def _duplicates(check: FileCheck) -> None:
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
    message = (
        f"exact duplicate of an earlier example (line {first_line} repeats line {of}): it "
        "counts twice in training; `ftsweep prepare` removes exact duplicates"
    )
    for line, _ in pairs:
        check.log.warning("duplicate", message, line, noun="duplicated examples")


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


def _advice(check: FileCheck, stats: DatasetStats) -> tuple[Advice, ...]:
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


def _overlap(train: FileCheck, valid: FileCheck, log: FindingLog) -> None:
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
        f"validation example also in the training file (line {valid_line} = training line "
        f"{train_line}): the validation loss looks better than it is; remove it from one file"
    )
    for i in hits:
        log.warning(
            "train_valid_overlap",
            message,
            valid.hash_lines[int(i)],
            noun="overlapping examples",
        )

"""The per-line checks of one file on every core: byte ranges checked in a process pool.

A file of at least :data:`PARALLEL_MIN_BYTES` is cut into ranges (four per worker, each
1–16 MiB: :func:`range_size`), every boundary at a line start (:func:`~.reader.line_ranges`). Each
worker checks its ranges as the serial pass would (the same :class:`~.filecheck.FileCheck`,
streaming, with line numbers counted from the range's start) and sends back what it found:
findings with their first lines, and compact per-example arrays (8-byte hashes, token counts),
never the examples. The parent merges the ranges in file order, shifting line numbers by the
lines before each, and hashes the file meanwhile (SHA-256 is sequential). Everything that
needs the whole file (duplicates, train/valid overlap, labels, conventions, conclusions) is
decided after the merge, on the merged arrays, exactly as the serial path decides it: the two
paths give the same report (``tests/data/test_parallel.py`` compares them).

The second pass of a prompt/completion file (the lines that break the separator or stop
sequence, known only once the whole file is seen) runs over the same ranges in a pool too.

One fact a range cannot know is the file's format (set by its first valid example): the parent
reads up to that example before the pool starts and tells every range.

The worker count is ``workers=``, else ``FTSWEEP_DATA_WORKERS``, else the usable cores.
Smaller files, one worker, or a token counter that cannot be sent to a worker process stay
serial. Workers fork where the process has no other thread (instant start, the counter
inherited), else spawn.
"""

from __future__ import annotations

import functools
import hashlib
import os
import pickle
import threading
import time
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import TYPE_CHECKING, Any

from orchestrator.core.errors import OrchestratorError, UsageError
from orchestrator.core.progress import report
from orchestrator.data import formats
from orchestrator.data.conventions import scan_lines
from orchestrator.data.findings import FindingLog
from orchestrator.data.reader import JsonlReader, line_ranges

if TYPE_CHECKING:
    from orchestrator.catalog.tokens import ExampleCounter
    from orchestrator.data.filecheck import FileCheck

__all__ = [
    "PARALLEL_MIN_BYTES",
    "RANGE_BYTES",
    "WORKERS_ENV",
    "data_workers",
    "range_size",
    "run_check",
]

WORKERS_ENV = "FTSWEEP_DATA_WORKERS"
#: smaller files are checked in this process: a pool costs more than it saves below this
PARALLEL_MIN_BYTES = 8 * 1024 * 1024
#: the largest and smallest byte range (one task of a worker); several per worker balance the
#: load, and a range's results (about 24 bytes per example) wait in memory until merged
RANGE_BYTES = 16 * 1024 * 1024
MIN_RANGE_BYTES = 1024 * 1024
RANGES_PER_WORKER = 4
_HASH_CHUNK = 1 << 20

_counter: ExampleCounter | None = None


#: files at least this large say how far their check has got (every 10 %)
PROGRESS_MIN_BYTES = 64 * 1024 * 1024


def data_workers(workers: int | None = None) -> int:
    """How many processes check a file: ``workers``, else ``$FTSWEEP_DATA_WORKERS``, else
    the cores this process may use. A bad value is a :class:`UsageError` naming it."""
    if workers is None:
        raw = os.environ.get(WORKERS_ENV, "").strip()
        if raw:
            try:
                workers = int(raw)
            except ValueError:
                raise UsageError(f"{WORKERS_ENV}={raw!r}: must be a whole number >= 1") from None
            if workers < 1:
                raise UsageError(f"{WORKERS_ENV}={raw!r}: must be a whole number >= 1")
        else:
            try:
                workers = len(os.sched_getaffinity(0))
            except AttributeError:  # not on Linux
                workers = os.cpu_count() or 1
    if workers < 1:
        raise UsageError(f"workers: must be >= 1, got {workers}")
    return workers


def range_size(size: int, workers: int) -> int:
    """The byte range for a file of ``size`` bytes on ``workers`` processes."""
    return max(MIN_RANGE_BYTES, min(RANGE_BYTES, size // (workers * RANGES_PER_WORKER)))


def _init(counter: ExampleCounter | None) -> None:
    global _counter
    _counter = counter


def _check_range(
    path: str,
    model: str | None,
    max_line_bytes: int,
    hint: tuple[str, int] | None,
    start: int,
    end: int,
) -> FileCheck:
    from orchestrator.data.filecheck import FileCheck

    part = FileCheck(path, _counter, model, max_line_bytes, format_hint=hint)
    part.run(JsonlReader(path, max_line_bytes, start=start, end=end, hash_bytes=False))
    return part


def _format_hint(path: str, max_line_bytes: int) -> tuple[str, int] | None:
    """The format of the file's first valid example, and its line (None: there is none)."""
    for line in JsonlReader(path, max_line_bytes, hash_bytes=False):
        if line.problem is None:
            fmt = formats.detect_format(line.value)
            if not isinstance(fmt, formats.Problem):
                return fmt, line.number
    return None


def _context(counter: ExampleCounter | None) -> Any:
    import multiprocessing as mp

    if threading.active_count() == 1 and "fork" in mp.get_all_start_methods():
        return mp.get_context("fork")
    try:
        pickle.dumps(counter)
    except Exception:  # a tokenizer that cannot travel: this file stays serial
        return None
    return mp.get_context("spawn")


def _sha256(path: str, size: int) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        left = size
        while left > 0:
            chunk = f.read(min(_HASH_CHUNK, left))
            if not chunk:
                break
            sha.update(chunk)
            left -= len(chunk)
    return sha.hexdigest()


def run_check(
    check: FileCheck,
    counter: ExampleCounter | None,
    model: str | None,
    *,
    workers: int | None = None,
    range_bytes: int | None = None,
    min_parallel_bytes: int = PARALLEL_MIN_BYTES,
) -> int:
    """Run ``check`` (fresh, over its whole file) on ``workers`` processes, or serially
    where that is as fast (small file, one worker) or the only way (see the module doc).
    Returns how many ranges the pool checked (0: serial)."""
    n_workers = data_workers(workers)
    size = os.path.getsize(check.path)
    if n_workers < 2 or size < max(min_parallel_bytes, 1):
        check.run()
        return 0
    ranges = line_ranges(check.path, size, range_bytes or range_size(size, n_workers))
    ctx = _context(counter) if len(ranges) > 1 else None
    if ctx is None:
        check.run()
        return 0
    parts: list[tuple[int, int, int]] = []  # (start, end, line offset) of each range
    hint = _format_hint(check.path, check.max_line_bytes)
    check.format, check.format_line = hint if hint else (None, 0)
    args = (check.path, model, check.max_line_bytes, hint)
    with ProcessPoolExecutor(
        max_workers=min(n_workers, len(ranges)),
        mp_context=ctx,
        initializer=_init,
        initargs=(counter,),
    ) as pool:
        futures: list[Future[FileCheck]] = [
            pool.submit(_check_range, *args, start, end) for start, end in ranges
        ]
        try:
            check.sha256 = _sha256(check.path, size)
            shown, started = 0, time.monotonic()
            for (start, end), future in zip(ranges, futures, strict=True):
                parts.append((start, end, check.n_lines))
                check.merge(future.result())
                done = 100 * end // max(size, 1)
                if size >= PROGRESS_MIN_BYTES and done >= shown + 10 and end < size:
                    shown = done - done % 10
                    report(
                        f"checked {shown} % of {os.path.basename(check.path)} "
                        f"({end / 1e6:,.0f} of {size / 1e6:,.0f} MB, "
                        f"{time.monotonic() - started:.0f} s)"
                    )
        except BrokenProcessPool as exc:
            raise OrchestratorError(
                f"{check.path}: a data-check worker process died ({exc}); "
                f"retry with {WORKERS_ENV}=1"
            ) from exc
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise
    if check.format == formats.PROMPT_COMPLETION:
        check.scan = functools.partial(
            _scan, check.path, parts, check.max_line_bytes, n_workers, ctx
        )
    return len(ranges)


def _scan(
    path: str,
    parts: list[tuple[int, int, int]],
    max_line_bytes: int,
    workers: int,
    ctx: Any,
    separator: str | None,
    stop: str | None,
) -> FindingLog:
    """The second pass of a prompt/completion file (:func:`~.conventions.scan_lines`) over
    the same ranges, merged in file order."""
    log = FindingLog(path)
    with ProcessPoolExecutor(max_workers=min(workers, len(parts)), mp_context=ctx) as pool:
        futures = [
            pool.submit(scan_lines, path, separator, stop, max_line_bytes, start, end)
            for start, end, _ in parts
        ]
        try:
            for (_, _, offset), future in zip(parts, futures, strict=True):
                log.merge(future.result(), offset)
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise
    return log

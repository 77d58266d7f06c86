"""The epoch handshake: a job waits at each epoch's end until the engine has read it.

The engine decides whether to prune a trial when a poll brings it an epoch's end, and cancels
the job if so. Without a handshake the worker trains on meanwhile, so a job pruned at epoch 1
could have trained to epoch 5 before the cancel landed. With it:

1. the worker writes the epoch's last metric line, then ``epoch_end.json`` ``{"epoch": N,
   "offset": O}`` (``O``: where that line ends in ``metrics.jsonl``), and waits
   (:class:`EpochGate`);
2. a poll whose cursor is at or past ``O`` comes from a caller that was given the epoch's
   end by an earlier poll and has dealt with it (a single-threaded engine reports it to the
   pruner and, if pruned, cancels before it polls that job again): that poll writes
   ``epoch_ack.json`` ``{"epoch": N}`` (:func:`acknowledge`);
3. the worker goes on when the acknowledgement comes, or stops when the cancel does (its
   SIGTERM or the ``cancel`` file), so a pruned job trains no step of the next epoch.

Everything is in the job folder, so a poll from a fresh process (re-attach) acknowledges too.
The wait is bounded (option ``epoch_handshake_s``, default 60 s; 0 turns it off): a job
nobody polls goes on after that long once, and does not wait again until an acknowledgement
shows that someone reads it. Nothing waits after the last epoch.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping

from orchestrator.backends.local.jobfiles import JobFolder, MetricsWriter

__all__ = ["EpochGate", "acknowledge"]


def acknowledge(folder: JobFolder, cursor: int) -> None:
    """Called by a poll with byte ``cursor``: acknowledge the last epoch end when the caller
    has read past it."""
    end = folder.read_epoch_end()
    if end is None:
        return
    epoch, offset = end
    if cursor >= offset and folder.read_epoch_ack() < epoch:
        folder.write_epoch_ack(epoch)


class EpochGate:
    """A metric sink that writes through ``sink`` and, after the line that ends an epoch
    before the last (the ``epoch`` metric a whole number below ``n_epochs``), waits for
    :func:`acknowledge`, a stop (``stopped()``, or the job's ``cancel`` file), or
    ``timeout_s``."""

    def __init__(
        self,
        sink: MetricsWriter,
        folder: JobFolder,
        *,
        n_epochs: int,
        timeout_s: float,
        stopped: Callable[[], bool],
        log: Callable[[str], None],
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        every_s: float = 0.05,
    ) -> None:
        self.sink, self.folder = sink, folder
        self.n_epochs, self.timeout_s = n_epochs, timeout_s
        self.stopped, self.log = stopped, log
        self.clock, self.sleep, self.every_s = clock, sleep, every_s
        #: the epoch whose wait timed out, while no acknowledgement of it has come since
        self.unheard_at: int | None = None
        #: seconds waited, in all
        self.waited_s = 0.0

    def emit(self, step: int, values: Mapping[str, float]) -> None:
        """Write the line; at an epoch's end, wait as the module docstring says."""
        self.sink.emit(step, values)
        epoch = values.get("epoch")
        if epoch is None or not math.isfinite(epoch) or self.timeout_s <= 0:
            return
        done = round(epoch)
        if abs(epoch - done) > 1e-9 or not 1 <= done < self.n_epochs:
            return
        self.folder.write_epoch_end(done, self.sink.offset)
        if self.unheard_at is not None:
            if self.folder.read_epoch_ack() < self.unheard_at:
                return  # nobody has read this job since the last wait timed out
            self.unheard_at = None
        self._wait(done)

    def _wait(self, epoch: int) -> None:
        started = self.clock()
        try:
            while self.folder.read_epoch_ack() < epoch:
                if self.stopped() or self.folder.cancel_requested():
                    return
                if self.clock() - started >= self.timeout_s:
                    self.unheard_at = epoch
                    self.log(
                        f"epoch {epoch}: no poll read it within {self.timeout_s:g} s; "
                        "training on without waiting until one does"
                    )
                    return
                self.sleep(self.every_s)
        finally:
            self.waited_s += self.clock() - started

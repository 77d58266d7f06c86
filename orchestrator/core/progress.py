"""Progress of long steps below the CLI (a model pull, a tokenizer load) as log records.

Library code never prints; it calls :func:`report`, and the CLI shows the records on stderr
(plain lines, or above the live panel) unless ``--quiet`` or ``--json-events`` silence them.
"""

from __future__ import annotations

import logging
import sys

__all__ = ["LOGGER", "report", "show_on_stderr"]

LOGGER = logging.getLogger("ftsweep.progress")


def report(message: str) -> None:
    LOGGER.info(message)


class _Stderr(logging.Handler):
    """Writes each record's message to the current ``sys.stderr`` (looked up at each record,
    so a live view that redirects stderr puts it above its panel)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(record.getMessage() + "\n")
            sys.stderr.flush()
        except Exception:  # a closed stream must not fail the step it reports on
            self.handleError(record)


def show_on_stderr(show: bool = True) -> None:
    """Show progress records on stderr (once), or stop showing them."""
    if not any(isinstance(h, _Stderr) for h in LOGGER.handlers):
        LOGGER.addHandler(_Stderr())
    LOGGER.propagate = False
    LOGGER.setLevel(logging.INFO if show else logging.WARNING)

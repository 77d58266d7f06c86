"""The one object that prints: data to stdout, messages and progress to stderr."""

from __future__ import annotations

import sys
from typing import NoReturn, TextIO

__all__ = ["Output", "out"]


class Output:
    def __init__(self, stdout: TextIO | None = None, stderr: TextIO | None = None) -> None:
        self._stdout = stdout
        self._stderr = stderr

    @property
    def stdout(self) -> TextIO:
        return self._stdout or sys.stdout

    @property
    def stderr(self) -> TextIO:
        return self._stderr or sys.stderr

    def data(self, text: str) -> None:
        """Results: what a script would pipe on."""
        self.stdout.write(text if text.endswith("\n") else text + "\n")
        self.stdout.flush()

    def info(self, text: str) -> None:
        self.stderr.write(text + "\n")
        self.stderr.flush()

    def warn(self, text: str) -> None:
        self.info(f"warning: {text}")

    def error(self, text: str) -> None:
        self.info(f"error: {text}")

    def abort(self, text: str, code: int = 1) -> NoReturn:
        """Print ``error: text`` on stderr and exit with ``code``."""
        self.error(text)
        raise SystemExit(code)


out = Output()

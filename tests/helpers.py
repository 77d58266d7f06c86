"""Small builders of test data, and a finalizer that signals."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any


def write_jsonl(path: Path, rows: Iterable[Any]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def chat_rows(n: int, start: int = 0) -> list[dict[str, Any]]:
    return [
        {
            "messages": [
                {"role": "system", "content": "You add numbers."},
                {"role": "user", "content": f"What is {i} + {i + 1}?"},
                {"role": "assistant", "content": f"{2 * i + 1}"},
            ]
        }
        for i in range(start, start + n)
    ]


def pc_rows(n: int, start: int = 0) -> list[dict[str, str]]:
    return [
        {"prompt": f"reverse: word{i}x\n\n###\n\n", "completion": f" x{str(i)[::-1]}drow\n"}
        for i in range(start, start + n)
    ]


class SignalledWhileCollected:
    """Sends SIGTERM from its finalizer and waits there: a handler's exception is raised
    inside ``__del__``, where Python prints it as "Exception ignored" and drops it (as when
    the signal lands in a weakref callback of SQLAlchemy's during a collection)."""

    def __del__(self) -> None:
        os.kill(os.getpid(), signal.SIGTERM)
        end = time.monotonic() + 1
        while time.monotonic() < end:
            pass

"""Small builders of test data."""

from __future__ import annotations

import json
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

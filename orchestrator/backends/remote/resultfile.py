"""Fine-tuning result files (CSV) as metric curves, and back.

Reads the three layouts a provider writes (see ``reference/finetuning-api.md`` §1.7):

* OpenAI: ``step,train_loss,train_accuracy,valid_loss,valid_mean_token_accuracy`` (plus
  ``full_valid_loss,full_valid_mean_token_accuracy`` where the job had full validation passes);
  the API serves it base64-encoded, which is decoded here when the bytes do not start with
  ``step``;
* Azure: the same with ``train_mean_token_accuracy`` / ``validation_mean_token_accuracy``;
* legacy ``/v1/fine-tunes``: ``step,elapsed_tokens,elapsed_examples,training_loss,
  training_sequence_accuracy,training_token_accuracy,validation_loss,...``.

Empty cells, ``N/A`` and ``-1`` are missing values; ``nan``/``inf`` are kept (a diverged run
shows so). The curves use the OpenAI metric names of :mod:`orchestrator.backends.base`.
:func:`write_result_csv` writes the OpenAI layout with the full-validation columns.
"""

from __future__ import annotations

import base64
import binascii
import csv
import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

from orchestrator.core.errors import DataError

__all__ = [
    "COLUMNS",
    "MISSING",
    "OPENAI_COLUMNS",
    "Curves",
    "parse_result_csv",
    "read_result_csv",
    "write_result_csv",
]

Curves = dict[str, list[tuple[int, float]]]

#: result-file columns (OpenAI's, Azure's and the legacy API's spellings) -> metric names:
#: the one definition, read by this module and by :func:`.events.parse_result_csv`
COLUMNS = {
    "train_loss": "train_loss",
    "train_accuracy": "train_mean_token_accuracy",
    "train_mean_token_accuracy": "train_mean_token_accuracy",
    "valid_loss": "valid_loss",
    "valid_mean_token_accuracy": "valid_mean_token_accuracy",
    "validation_mean_token_accuracy": "valid_mean_token_accuracy",
    "full_valid_loss": "full_valid_loss",
    "full_valid_mean_token_accuracy": "full_valid_mean_token_accuracy",
    # legacy /v1/fine-tunes
    "training_loss": "train_loss",
    "training_token_accuracy": "train_mean_token_accuracy",
    "validation_loss": "valid_loss",
    "validation_token_accuracy": "valid_mean_token_accuracy",
}

#: the layout :func:`write_result_csv` writes: OpenAI's, with its full-validation columns
OPENAI_COLUMNS = tuple(
    (column, COLUMNS[column])
    for column in (
        "train_loss",
        "train_accuracy",
        "valid_loss",
        "valid_mean_token_accuracy",
        "full_valid_loss",
        "full_valid_mean_token_accuracy",
    )
)

#: cells (lower-cased) that mean "no value"
MISSING = ("", "n/a", "na", "-1", "-1.0", "none", "null")


def read_result_csv(path: str | Path) -> Curves:
    """The curves of the result file at ``path``; a :class:`DataError` naming the file (and
    the line and column) when it is not one."""
    shown = str(path)
    try:
        content = Path(path).read_bytes()
    except IsADirectoryError:
        raise DataError(shown, "is a directory, not a result CSV") from None
    except OSError as exc:
        raise DataError(shown, f"cannot read: {exc.strerror or exc}") from exc
    return parse_result_csv(content, shown)


def parse_result_csv(content: bytes, shown: str = "<result file>") -> Curves:
    """The curves of a result file's bytes (raw or base64); ``shown`` names it in errors."""
    text = _decode(content, shown)
    reader = csv.reader(io.StringIO(text))
    try:
        header = [h.strip().lower() for h in next(reader)]
    except StopIteration:
        raise DataError(shown, "empty file: expected a header line starting with 'step'") from None
    if not header or header[0] != "step":
        raise DataError(
            shown, "not a fine-tuning result CSV: the header must start with 'step'", line=1
        )
    known = {i: COLUMNS[h] for i, h in enumerate(header) if h in COLUMNS}
    if "train_loss" not in known.values() and "valid_loss" not in known.values():
        raise DataError(
            shown,
            "no loss column: expected train_loss or valid_loss (OpenAI/Azure) or "
            f"training_loss (legacy); found {', '.join(header)}",
            line=1,
        )
    curves: Curves = {}
    last_step = 0
    for line_no, row in enumerate(reader, start=2):
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) > len(header):
            raise DataError(
                shown, f"{len(row)} cells, but the header names {len(header)}", line=line_no
            )
        step = _step(row[0], shown, line_no)
        if step <= last_step:
            raise DataError(shown, f"step: {step} does not follow step {last_step}", line=line_no)
        last_step = step
        for i, name in known.items():
            cell = row[i].strip() if i < len(row) else ""
            if cell.lower() in MISSING:
                continue
            try:
                value = float(cell)
            except ValueError:
                raise DataError(
                    shown, f"{header[i]}: not a number: {cell[:40]!r}", line=line_no
                ) from None
            curves.setdefault(name, []).append((step, value))
    if not curves:
        raise DataError(shown, "no metric values: the file has a header but no data rows")
    return curves


def _decode(content: bytes, shown: str) -> str:
    raw = content.lstrip()
    if raw[:3] == b"\xef\xbb\xbf":
        raw = raw[3:]
    if not raw.lower().startswith(b"step"):
        try:
            decoded = base64.b64decode(raw, validate=False)
        except (binascii.Error, ValueError):
            decoded = b""
        if decoded.lstrip().lower().startswith((b"step", b"\xef\xbb\xbfstep")):
            raw = decoded.lstrip()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise DataError(shown, "not a text file (neither UTF-8 CSV nor base64 of one)") from None


def _step(cell: str, shown: str, line_no: int) -> int:
    try:
        value = float(cell.strip())
    except ValueError:
        raise DataError(shown, f"step: not a number: {cell.strip()[:40]!r}", line=line_no) from None
    if not math.isfinite(value) or value < 1 or value != int(value):
        raise DataError(
            shown, f"step: must be a whole number >= 1, not {cell.strip()}", line=line_no
        )
    return int(value)


def write_result_csv(curves: Mapping[str, Sequence[tuple[int, float]]], path: str | Path) -> Path:
    """Write ``curves`` as an OpenAI-layout result CSV (missing values: empty cells)."""
    steps = sorted({s for c in curves.values() for s, _ in c})
    by_name = {name: dict(curve) for name, curve in curves.items()}
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["step", *(col for col, _ in OPENAI_COLUMNS)])
    for step in steps:
        cells = []
        for _, name in OPENAI_COLUMNS:
            value = by_name.get(name, {}).get(step)
            cells.append("" if value is None else f"{value:.6g}")
        if any(cells):
            writer.writerow([step, *cells])
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(out.getvalue(), encoding="utf-8")
    return target

"""``prepare``: from a table (CSV, TSV, JSONL, JSON, parquet) to fine-tuning JSONL.

It maps columns to prompt/completion (or chat messages), fixes what is safe to fix and reports
each change, removes exact duplicates, adds a separator and a stop sequence that occur in no
example (a JSONL file's own are kept when every example already ends with them), and splits
train/valid with a seed (stratified by label for classification data). Outputs are written to
temporary files and moved into place only when complete; the input is never written.
"""

from __future__ import annotations

import json
import os
import random
import tempfile
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.core.errors import DataError, UsageError
from orchestrator.data.conventions import SEPARATORS, STOPS

__all__ = ["PrepareOptions", "PrepareResult", "prepare_file"]

_READERS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".json": "json", ".parquet": "parquet"}


@dataclass(frozen=True)
class PrepareOptions:
    prompt: str | None = None
    completion: str | None = None
    chat: bool = False
    system: str | None = None
    valid_fraction: float = 0.1
    seed: int = 0
    force: bool = False


@dataclass
class PrepareResult:
    train: Path
    valid: Path | None
    n_input: int
    n_train: int
    n_valid: int
    format: str
    separator: str | None = None
    stop_sequence: str | None = None
    stratified: bool = False
    changes: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {
            "train": str(self.train),
            "valid": str(self.valid) if self.valid else None,
            "format": self.format,
            "examples_in": self.n_input,
            "train_examples": self.n_train,
            "valid_examples": self.n_valid,
            "separator": self.separator,
            "stop_sequence": self.stop_sequence,
            "stratified": self.stratified,
            "changes": self.changes,
        }


def _read_table(path: Path) -> Any:
    import pandas as pd

    kind = _READERS.get(path.suffix.lower())
    if kind is None:
        raise DataError(
            str(path), f"unsupported file type {path.suffix!r}; use one of {sorted(_READERS)}"
        )
    if not path.is_file():
        raise DataError(str(path), "no such file")
    try:
        if kind in ("csv", "tsv"):
            return pd.read_csv(
                path,
                sep="," if kind == "csv" else "\t",
                dtype=str,
                keep_default_na=False,
                encoding="utf-8-sig",
            )
        if kind == "parquet":
            return pd.read_parquet(path)
        try:
            return pd.read_json(path, lines=True, dtype=False, encoding="utf-8-sig")
        except ValueError:
            if kind == "jsonl":
                raise
            return pd.read_json(path, dtype=False, encoding="utf-8-sig")
    except (ValueError, UnicodeDecodeError, OSError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(str(path), f"cannot read as {kind}: {first}") from exc
    except Exception as exc:  # pandas/pyarrow raise their own parser errors
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(str(path), f"cannot read as {kind}: {first}") from exc


def _column(df: Any, wanted: str | None, default: str, path: Path) -> str:
    columns = [str(c) for c in df.columns]
    if wanted is not None:
        if wanted not in columns:
            raise UsageError(f"{path}: no column {wanted!r} (columns: {', '.join(columns)})")
        return wanted
    for c in columns:
        if c.lower() == default:
            return c
    raise UsageError(
        f"{path}: no {default!r} column; name it with --{default} (columns: {', '.join(columns)})"
    )


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value != value:  # NaN
        return ""
    return value if isinstance(value, str) else str(value)


def _pick(candidates: Iterable[str], texts: list[str], fallback: str) -> str:
    for c in candidates:
        if not any(c in t for t in texts):
            return c
    k = 0
    while any(f"{fallback}{k or ''}" in t for t in texts):
        k += 1
    return f"{fallback}{k or ''}"


def _examples(
    df: Any, path: Path, opts: PrepareOptions, changes: list[str]
) -> list[dict[str, Any]]:
    if "messages" in df.columns and opts.prompt is None:
        rows: list[dict[str, Any]] = []
        for i, m in enumerate(df["messages"], 1):
            if not isinstance(m, list) or not m:
                changes.append(f"row {i}: dropped (no messages)")
                continue
            rows.append({"messages": list(m)})
        return rows
    pc, cc = (
        _column(df, opts.prompt, "prompt", path),
        _column(df, opts.completion, "completion", path),
    )
    rows, dropped = [], []
    for i, (p, c) in enumerate(zip(df[pc], df[cc], strict=True), 1):
        prompt, completion = _text(p), _text(c)
        if not completion.strip():
            dropped.append(i)
            continue
        rows.append({"prompt": prompt, "completion": completion})
    if dropped:
        shown = ", ".join(map(str, dropped[:10])) + (", ..." if len(dropped) > 10 else "")
        changes.append(f"dropped {len(dropped)} rows with an empty completion (rows {shown})")
    return rows


def _dedupe(rows: list[dict[str, Any]], changes: list[str]) -> list[dict[str, Any]]:
    seen: set[str] = set()
    kept = []
    for row in rows:
        key = json.dumps(row, sort_keys=True, ensure_ascii=False)
        if key not in seen:
            seen.add(key)
            kept.append(row)
    if len(kept) < len(rows):
        changes.append(f"removed {len(rows) - len(kept)} exact duplicates")
    return kept


def _kept(candidates: Iterable[str], texts: list[str]) -> str | None:
    """The one of ``candidates`` that every text of ``texts`` already ends with and holds
    nowhere else, if any: a convention the data has already (as ``validate`` reads it)."""
    for c in candidates:
        if all(t.endswith(c) and t.count(c) == 1 for t in texts):
            return c
    return None


def _conventions(
    rows: list[dict[str, Any]], changes: list[str], *, keep: bool = False
) -> tuple[str, str]:
    """A separator and a stop sequence of its own, appended to every prompt and completion;
    with ``keep`` (fine-tuning JSONL), the ones the data already ends with are kept."""
    prompts = [r["prompt"] for r in rows]
    completions = [r["completion"] for r in rows]
    everything = prompts + completions
    kept_separator = _kept(SEPARATORS, prompts) if keep else None
    kept_stop = _kept(STOPS, completions) if keep else None
    separator = kept_separator or _pick(
        SEPARATORS if not any("\n" in p for p in prompts) else SEPARATORS[1:],
        everything,
        "\n\n### =>\n\n",
    )
    stop = kept_stop or _pick(STOPS, everything, " [END]")
    spaced = 0
    for r in rows:
        c = r["completion"] if kept_stop else r["completion"].rstrip()
        if c[:1] not in (" ", "\n", "\t"):
            c = " " + c.lstrip()
            spaced += 1
        if not kept_separator:
            r["prompt"] = r["prompt"].rstrip() + separator
        r["completion"] = c if kept_stop else c + stop
    for what, value, kept, where in (
        ("separator", separator, kept_separator, "prompt"),
        ("stop sequence", stop, kept_stop, "completion"),
    ):
        if kept:
            changes.append(f"kept the {what} {value!r} that every {where} already ends with")
        else:
            changes.append(f"appended the {what} {value!r} to every {where}")
    if spaced:
        changes.append(f"prefixed {spaced} completions with a space")
    return separator, stop


def _split(rows: list[dict[str, Any]], opts: PrepareOptions) -> tuple[list[Any], list[Any], bool]:
    rng = random.Random(opts.seed)
    if opts.valid_fraction <= 0 or len(rows) < 2:
        return rows, [], False
    labels = [_label(r) for r in rows]
    stratify = len(set(labels)) * 3 < len(rows)
    groups: dict[str, list[int]] = defaultdict(list)
    for i, label in enumerate(labels):
        groups[label if stratify else ""].append(i)
    valid_idx: set[int] = set()
    for members in groups.values():
        rng.shuffle(members)
        k = round(len(members) * opts.valid_fraction)
        if stratify and len(members) >= 2:
            k = max(1, k)
        valid_idx.update(members[: min(k, len(members) - 1)])
    train = [r for i, r in enumerate(rows) if i not in valid_idx]
    valid = [r for i, r in enumerate(rows) if i in valid_idx]
    return train, valid, stratify


def _label(row: dict[str, Any]) -> str:
    if "completion" in row:
        return str(row["completion"]).strip()
    last = [m for m in row["messages"] if isinstance(m, dict) and m.get("role") == "assistant"]
    return str(last[-1].get("content", "")).strip() if last else ""


def _write_all(files: dict[Path, list[dict[str, Any]]]) -> None:
    temps: list[tuple[str, Path]] = []
    try:
        for target, rows in files.items():
            fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
            temps.append((tmp, target))
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                for row in rows:
                    f.write(json.dumps(row, ensure_ascii=False) + "\n")
        for tmp, target in temps:
            os.replace(tmp, target)
    finally:
        for tmp, _ in temps:
            if os.path.exists(tmp):
                os.unlink(tmp)


def prepare_file(
    source: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    opts: PrepareOptions = PrepareOptions(),
) -> PrepareResult:
    """Prepare ``source`` into ``out_dir/train.jsonl`` (and ``valid.jsonl``)."""
    src, out = Path(source), Path(out_dir)
    for name in ("train.jsonl", "valid.jsonl"):
        target = out / name
        if target.resolve() == src.resolve():
            raise UsageError(f"{target}: refusing to overwrite the input")
        if target.exists() and not opts.force:
            raise UsageError(f"{target}: exists; use --force to replace it")
    df = _read_table(src)
    changes: list[str] = []
    rows = _dedupe(_examples(df, src, opts, changes), changes)
    if not rows:
        raise DataError(str(src), "no usable rows")
    n_input = len(df)
    separator = stop = None
    fmt = "chat" if "messages" in rows[0] else "prompt_completion"
    if fmt == "prompt_completion":
        if opts.chat:
            for r in rows:
                msgs = [{"role": "system", "content": opts.system}] if opts.system else []
                msgs += [
                    {"role": "user", "content": r["prompt"]},
                    {"role": "assistant", "content": r["completion"]},
                ]
                r.clear()
                r["messages"] = msgs
            fmt = "chat"
            changes.append("wrote chat messages (user = prompt, assistant = completion)")
        else:
            # fine-tuning JSONL may have its conventions already: appending others would
            # leave two separators on every prompt
            keep = src.suffix.lower() == ".jsonl"
            separator, stop = _conventions(rows, changes, keep=keep)
    train, valid, stratified = _split(rows, opts)
    out.mkdir(parents=True, exist_ok=True)
    targets = {out / "train.jsonl": train}
    if valid:
        targets[out / "valid.jsonl"] = valid
    _write_all(targets)
    return PrepareResult(
        train=out / "train.jsonl",
        valid=out / "valid.jsonl" if valid else None,
        n_input=n_input,
        n_train=len(train),
        n_valid=len(valid),
        format=fmt,
        separator=separator,
        stop_sequence=stop,
        stratified=stratified,
        changes=changes,
    )

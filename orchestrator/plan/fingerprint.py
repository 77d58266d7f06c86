"""Fingerprints: what a sweep's result depends on, so ``ftsweep retune`` knows when to redo it.

A :class:`Fingerprint` has three parts:

- the **data**: each file's SHA-256, example count, token count, format, task and label
  distribution (from the checks' :class:`~orchestrator.data.findings.DatasetStats`, so
  nothing is read twice);
- the **base model**: the name in the sweep file, the id actually trained (an alias such as
  ``gpt-4o-mini@latest`` resolved against the provider's list), and for a local model folder
  or file a digest of its files (names, sizes, the first and last MiB of each), so retrained
  weights count as a new model without hashing gigabytes;
- the **settings** that make values incomparable: backend, its options, the objective.

It is stored as JSON on the study (``ftsweep.fingerprint``) and the MLflow parent run.
:func:`changes` says in words what differs between two.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from orchestrator.data.findings import DatasetStats
    from orchestrator.plan.sweep import SweepPlan

__all__ = [
    "DataPrint",
    "Fingerprint",
    "ModelPrint",
    "changes",
    "file_sha256",
    "fingerprint",
    "model_digest",
]

#: labels kept per file (the most frequent), enough to see a new class appear
_MAX_LABELS = 50
_EDGE = 1 << 20  # bytes hashed at each end of a model file


@dataclass(frozen=True)
class DataPrint:
    """One data file."""

    sha256: str
    n_examples: int
    tokens: int | None
    format: str
    task: str | None = None
    labels: dict[str, int] | None = None

    @classmethod
    def of(cls, stats: DatasetStats) -> DataPrint:
        labels = None
        if stats.labels:
            top = sorted(stats.labels.items(), key=lambda kv: (-kv[1], kv[0]))[:_MAX_LABELS]
            labels = dict(top)
        tokens = stats.total_tokens if stats.tokens is not None else None
        return cls(stats.sha256, stats.n_examples, tokens, stats.format, stats.task, labels)


@dataclass(frozen=True)
class ModelPrint:
    """The base model: as named, as resolved, and a digest of local files."""

    requested: str
    id: str
    digest: str | None = None


@dataclass(frozen=True)
class Fingerprint:
    train: DataPrint
    valid: DataPrint | None
    model: ModelPrint
    #: digest of the backend, its options and the objective
    settings: str
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Fingerprint:
        raw = json.loads(text)
        valid = raw.get("valid")
        return cls(
            train=DataPrint(**raw["train"]),
            valid=DataPrint(**valid) if valid else None,
            model=ModelPrint(**raw["model"]),
            settings=str(raw["settings"]),
            extra=dict(raw.get("extra") or {}),
        )

    def digest(self) -> str:
        """One short hash of everything (for tags and the history table)."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()[:16]

    def summary(self) -> dict[str, Any]:
        """Flat values for MLflow parameters."""
        values: dict[str, Any] = {
            "fingerprint": self.digest(),
            "data.train_sha256": self.train.sha256,
            "data.n_examples": self.train.n_examples,
            "data.format": self.train.format,
            "model.requested": self.model.requested,
            "model.id": self.model.id,
        }
        if self.train.tokens is not None:
            values["data.tokens"] = self.train.tokens
        if self.valid is not None:
            values["data.valid_sha256"] = self.valid.sha256
            values["data.n_valid_examples"] = self.valid.n_examples
        if self.train.labels:
            values["data.n_labels"] = len(self.train.labels)
        if self.model.digest:
            values["model.digest"] = self.model.digest
        return values


def file_sha256(path: str | Path) -> str:
    """The SHA-256 of a data file's bytes, as :class:`DataPrint` records it: what a
    finished sweep run again compares before any tokenizer is loaded. Raises ``OSError``."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def model_digest(model: str) -> str | None:
    """A digest of a local model folder or file (None for names: built-ins, provider ids)."""
    path = Path(model).expanduser()
    try:
        if path.is_file():
            files = [path]
            root = path.parent
        elif path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file() and ".cache" not in p.parts)
            root = path
        else:
            return None
    except OSError:
        return None
    h = hashlib.sha256()
    for f in files:
        try:
            size = f.stat().st_size
            h.update(f"{f.relative_to(root)}\0{size}\0".encode())
            with f.open("rb") as fh:
                h.update(fh.read(_EDGE))
                if size > 2 * _EDGE:
                    fh.seek(size - _EDGE)
                    h.update(fh.read(_EDGE))
        except OSError:
            continue
    return h.hexdigest()[:32]


def _settings(plan: SweepPlan) -> str:
    spec = plan.spec
    raw: dict[str, Any] = {
        "backend": spec.backend.name,
        "options": plan.options.model_dump(mode="json", exclude_defaults=True),
        "objective": [spec.objective.metric, spec.objective.direction],
    }
    if spec.objectives is not None or spec.constraints:  # absent before: older prints hold
        raw["objectives"] = [[o.metric, o.direction] for o in spec.objective_list]
        raw["constraints"] = {m: c.model_dump() for m, c in spec.constraints.items()}
    return hashlib.sha256(json.dumps(raw, sort_keys=True, default=str).encode()).hexdigest()[:16]


def fingerprint(plan: SweepPlan, model_id: str | None = None) -> Fingerprint:
    """The fingerprint of a planned sweep; ``model_id`` is the resolved base model (default:
    the sweep file's)."""
    requested = plan.requested_model or plan.spec.backend.model
    resolved = model_id or plan.spec.backend.model
    return Fingerprint(
        train=DataPrint.of(plan.train),
        valid=DataPrint.of(plan.valid) if plan.valid is not None else None,
        model=ModelPrint(requested, resolved, model_digest(resolved)),
        settings=_settings(plan),
    )


def _data_changes(what: str, old: DataPrint | None, new: DataPrint | None) -> list[str]:
    if old is None and new is None:
        return []
    if old is None or new is None:
        return [f"{what}: {'added' if old is None else 'removed'}"]
    if old.sha256 == new.sha256:
        return []
    diff = new.n_examples - old.n_examples
    if diff:
        text = f"{what}: {old.n_examples} -> {new.n_examples} examples ({diff:+d})"
    else:
        text = f"{what}: content changed ({new.n_examples} examples)"
    if old.tokens is not None and new.tokens is not None and old.tokens != new.tokens:
        text += f", {old.tokens} -> {new.tokens} tokens"
    found = [text]
    if old.format != new.format:
        found.append(f"{what}: format {old.format} -> {new.format}")
    if old.labels is not None and new.labels is not None:
        added = sorted(set(new.labels) - set(old.labels))
        gone = sorted(set(old.labels) - set(new.labels))
        if added:
            found.append(f"{what}: new labels {_few(added)}")
        if gone:
            found.append(f"{what}: labels gone {_few(gone)}")
    return found


def _few(names: list[str]) -> str:
    return ", ".join(names[:5]) + (f" (+{len(names) - 5} more)" if len(names) > 5 else "")


def changes(old: Fingerprint | None, new: Fingerprint) -> list[str]:
    """What differs from ``old`` to ``new``, one phrase each; empty when nothing did."""
    if old is None:
        return ["no fingerprint recorded for the previous sweep"]
    found = _data_changes("training data", old.train, new.train)
    found += _data_changes("validation data", old.valid, new.valid)
    if old.model.id != new.model.id:
        via = f" ({new.model.requested})" if new.model.requested != new.model.id else ""
        found.append(f"base model: {old.model.id} -> {new.model.id}{via}")
    elif old.model.digest != new.model.digest:
        found.append(f"base model: the files of {new.model.id} changed")
    if old.settings != new.settings:
        found.append("settings: the backend, its options or the objective changed")
    return found

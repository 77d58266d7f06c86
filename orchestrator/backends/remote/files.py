"""Data files uploaded once per content: a small JSON index of sha256 -> remote file id.

The index lives in the backend's working folder (``<workdir>/remote-files.json``), keyed by
the provider's address (never by the key) and the file's sha256. A remembered id is used
again only after the provider confirms the file still exists and did not fail processing.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

from orchestrator.backends.remote.retry import Caller
from orchestrator.core.errors import DataError
from orchestrator.core.progress import report

__all__ = ["FileCache", "normalise_file_status", "sha256_of"]

_DEAD = {"error", "deleted", "deleting", "failed"}
_digests: dict[tuple[str, int, int], str] = {}


def sha256_of(path: Path) -> str:
    """The file's sha256 (cached per path, size and modification time)."""
    try:
        st = path.stat()
    except OSError as exc:
        raise DataError(str(path), f"cannot read: {exc.strerror}") from exc
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _digests:
        h = hashlib.sha256()
        with path.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        _digests[key] = h.hexdigest()
    return _digests[key]


def normalise_file_status(status: str | None) -> str:
    """``processed``, ``error`` or ``pending``, whatever the API version says (Azure's
    ``succeeded``/``failed``/``notRunning``/``running`` included)."""
    if status in ("processed", "succeeded"):
        return "processed"
    if status in _DEAD:
        return "error"
    return "pending"


class FileCache:
    """Finds or uploads the remote copy of a local data file."""

    def __init__(self, index: Path | None, scope: str) -> None:
        self.index = index
        self.scope = scope
        self._memory: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()

    def _load(self) -> dict[str, dict[str, Any]]:
        if self.index is None or not self.index.exists():
            return self._memory
        try:
            data = json.loads(self.index.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return self._memory  # a damaged index only costs a re-upload
        files = data.get("files", {})
        return files if isinstance(files, dict) else {}

    def _save(self, files: dict[str, dict[str, Any]]) -> None:
        self._memory = files
        if self.index is None:
            return
        self.index.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.index.with_name(f".{self.index.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"version": 1, "files": files}, indent=1), encoding="utf-8")
        os.replace(tmp, self.index)

    def file_id(self, client: Any, path: Path, call: Caller) -> str:
        """The remote id of ``path``'s content, uploading it if the provider lacks it."""
        import openai

        digest = sha256_of(path)
        entry_key = f"{self.scope}|{digest}"
        with self._lock:
            known = self._load().get(entry_key)
        if known is not None:
            try:
                remote = call.call(
                    "check uploaded file", lambda: client.files.retrieve(known["id"])
                )
                if normalise_file_status(getattr(remote, "status", None)) != "error":
                    return str(known["id"])
            except Exception as exc:
                if not isinstance(exc.__cause__, openai.NotFoundError):
                    raise
        data = path.read_bytes()
        started = time.monotonic()
        report(f"uploading {path.name} ({len(data) / 1e6:,.1f} MB) ...")
        uploaded = call.call(
            f"upload {path.name}",
            lambda: client.files.create(file=(path.name, data), purpose="fine-tune"),
        )
        report(f"uploaded {path.name} as {uploaded.id} ({time.monotonic() - started:.1f} s)")
        with self._lock:
            files = self._load()
            files[entry_key] = {"id": uploaded.id, "filename": path.name, "bytes": uploaded.bytes}
            self._save(files)
        return str(uploaded.id)

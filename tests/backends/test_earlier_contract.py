"""A backend written for the earlier contract (``from_options`` took the sweep file's options
as a mapping) stops with one line naming the backend and the fix, not an internal error; a
backend's own mistakes in ``from_options`` pass through as they are."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
import yaml

from orchestrator.backends import registry
from orchestrator.backends.base import (
    Backend,
    BackendOptions,
    JobHandle,
    JobUpdate,
    TrainingRequest,
)
from orchestrator.core.errors import BackendError
from tests.conftest import Result
from tests.helpers import chat_rows, write_jsonl

NEVER = "never reached: the backend is refused when it is built"


class EarlierBackend(Backend):
    """As written for the earlier contract: ``from_options`` reads a mapping."""

    name: ClassVar[str] = "earlier"

    def __init__(self, endpoint: str, workdir: Path) -> None:
        super().__init__(workdir=workdir)
        self.endpoint = endpoint

    @classmethod
    def from_options(cls, options: Any, *, workdir: Path) -> Backend:
        return cls(endpoint=options.get("endpoint", "http://127.0.0.1:8080"), workdir=workdir)

    def submit(self, request: TrainingRequest) -> JobHandle:
        raise BackendError(NEVER)

    def find(self, key: str) -> JobHandle | None:
        raise BackendError(NEVER)

    def poll(self, handle: JobHandle, cursor: str | None = None) -> JobUpdate:
        raise BackendError(NEVER)

    def cancel(self, handle: JobHandle) -> None:
        raise BackendError(NEVER)


class SplattedBackend(EarlierBackend):
    """The earlier contract's default ``from_options``: ``cls(**options)``."""

    name: ClassVar[str] = "splatted"

    @classmethod
    def from_options(cls, options: Any, *, workdir: Path) -> Backend:
        return cls(**options, workdir=workdir)


class ColourOptions(BackendOptions):
    colour: str = "blue"


class TypoBackend(EarlierBackend):
    """On the current contract, with a typo of its own in ``from_options``."""

    name: ClassVar[str] = "typo"
    Options: ClassVar[type[BackendOptions]] = ColourOptions

    @classmethod
    def from_options(cls, options: Any, *, workdir: Path) -> Backend:
        return cls(endpoint=options.color, workdir=workdir)


def _message(cls: type[Backend], error: str) -> str:
    return (
        f"backend '{cls.name}' ({__name__}:{cls.__qualname__}) was written for an earlier "
        "ftsweep: from_options now receives a validated options model (BackendOptions), not a "
        f"mapping ({error}); declare its options as fields of a BackendOptions subclass set as "
        "the backend's Options and read them as attributes (options.name), see "
        "docs/backends.md"
    )


def test_reading_the_options_as_a_mapping_names_the_backend_and_the_fix(tmp_path: Path) -> None:
    with pytest.raises(BackendError) as caught:
        registry.build(EarlierBackend, EarlierBackend.parse_options({}), workdir=tmp_path)
    error = "AttributeError: 'BackendOptions' object has no attribute 'get'"
    assert str(caught.value) == _message(EarlierBackend, error)
    assert isinstance(caught.value.__cause__, AttributeError)


def test_splatting_the_options_names_the_backend_and_the_fix(tmp_path: Path) -> None:
    with pytest.raises(BackendError, match="was written for an earlier ftsweep") as caught:
        registry.build(SplattedBackend, SplattedBackend.parse_options({}), workdir=tmp_path)
    assert "must be a mapping, not BackendOptions" in str(caught.value)


def test_a_backends_own_mistake_passes_through(tmp_path: Path) -> None:
    with pytest.raises(AttributeError, match="color"):
        registry.build(TypoBackend, TypoBackend.parse_options({}), workdir=tmp_path)


@pytest.fixture
def earlier(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """``earlier`` registered by an installed distribution's entry point; a sweep file."""
    site = tmp_path / "site"
    dist = site / "earlier_backend-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: earlier-backend\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(
        f"[ftsweep.backends]\nearlier = {__name__}:EarlierBackend\n"
    )
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("FTSWEEP_RUNS_DIR", str(tmp_path / "mlruns"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("FTSWEEP_OPTUNA_STORAGE", raising=False)
    spec = {
        "name": "earlier",
        "data": {"train": str(write_jsonl(tmp_path / "train.jsonl", chat_rows(20)))},
        "backend": {"name": "earlier", "model": "m"},
        "space": {"n_epochs": 2, "batch_size": 2, "learning_rate_multiplier": 0.1},
        "trials": 1,
    }
    path = tmp_path / "earlier.yaml"
    path.write_text(yaml.safe_dump(spec))
    yield path


def test_the_cli_says_it_in_one_line(cli: Any, earlier: Path, tmp_path: Path) -> None:
    r: Result = cli("estimate", earlier)
    error = "AttributeError: 'BackendOptions' object has no attribute 'get'"
    assert (r.code, r.out) == (1, "")
    assert r.err == f"error: {_message(EarlierBackend, error)}\n"
    assert not (tmp_path / "mlruns").exists()

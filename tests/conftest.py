"""Shared fixtures: data files on disk and an in-process CLI runner."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

# the shipped contract suite's asserts get pytest's detailed messages
pytest.register_assert_rewrite("orchestrator.testing.contract")

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]
#: third-party data and specifications the tests read, in the repository (their READMEs say
#: where each came from and under which licence)
VENDOR = ROOT / "tests" / "vendor"
PUBLIC = VENDOR / "public-data"


@dataclass
class Result:
    code: int
    out: str
    err: str


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Callable[..., Result]:
    """Run ``ftsweep ARGS`` in-process; returns exit code, stdout and stderr."""
    from orchestrator.cli import run

    def invoke(*args: str | os.PathLike[str]) -> Result:
        capsys.readouterr()
        code = run([str(a) for a in args])
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return invoke


@pytest.fixture(scope="session")
def ftsweep_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A temporary ``FTSWEEP_HOME`` (model cache) for the session; workers inherit it."""
    home = tmp_path_factory.mktemp("ftsweep-home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FTSWEEP_HOME", str(home))
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setenv("TOKENIZERS_PARALLELISM", "false")
        yield home


@pytest.fixture(scope="session")
def tiny_model(ftsweep_home: Path) -> Path:
    """The built-in tiny model, built once into the session's cache."""
    from orchestrator.backends.local import models

    return models.pull("tiny")


@pytest.fixture
def public() -> Path:
    """The small public datasets (``tests/vendor/public-data/``)."""
    return PUBLIC

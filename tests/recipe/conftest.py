"""A finished tiny sweep (one trial of the built-in ``tiny`` model, trained for real on the
reverse task), shared by the module's tests; and an in-process CLI for module fixtures."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from orchestrator.backends.local.tasks import write_task
from tests.reliability.stores import seed_mlflow

#: settings that teach the tiny model to end its completions with EOS in ~10 s
TINY_SPEC = """name: {name}
data: {{train: data/reverse.train.jsonl, valid: data/reverse.valid.jsonl}}
backend: {{name: local, model: tiny, options: {{torch_threads: 1{options}}}}}
space:
  n_epochs: {{value: 3}}
  batch_size: {{value: 4}}
  learning_rate_multiplier: {{value: 3.7}}
trials: 1
parallel: 1
"""


@dataclass(frozen=True)
class Finished:
    spec: Path
    runs: Path
    folder: Path


def run_cli(*args: str | os.PathLike[str]) -> int:
    from orchestrator.cli import run

    return run([str(a) for a in args])


def _finished(
    tmp_path_factory: pytest.TempPathFactory, name: str, options: str = ""
) -> Iterator[Finished]:
    folder = tmp_path_factory.mktemp(name)
    write_task("reverse", folder / "data", n_train=160, n_valid=40)
    spec = folder / "tiny.yaml"
    spec.write_text(TINY_SPEC.format(name=name, options=options))
    yield from finished_sweep(spec)


def finished_sweep(spec: Path) -> Iterator[Finished]:
    """``ftsweep run spec`` to its end in the spec's folder, with stores of that folder's own
    (the environment pointed at them while the caller holds it)."""
    folder = spec.parent
    runs = folder / "mlruns"
    seed_mlflow(runs)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FTSWEEP_RUNS_DIR", str(runs))
        mp.setenv("FTSWEEP_HOME", str(folder / "home"))
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.delenv("FTSWEEP_OPTUNA_STORAGE", raising=False)
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        mp.chdir(folder)
        assert run_cli("run", spec) == 0
        yield Finished(spec, runs, folder)


@pytest.fixture(scope="module")
def tiny_sweep(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Finished]:
    """``ftsweep run`` of a one-trial tiny sweep, in a folder of its own."""
    yield from _finished(tmp_path_factory, "tiny-recipe")


@pytest.fixture(scope="module")
def tiny_lora_sweep(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Finished]:
    """The same with a LoRA adapter (peft) instead of a full fine-tune."""
    yield from _finished(tmp_path_factory, "tiny-lora", ", lora: {r: 4, alpha: 8}")

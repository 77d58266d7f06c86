"""The generated tasks' held-out test file (``--n-test``), which the shipped ``sweeps/tiny.yaml``
scores with ``ftsweep evaluate``: disjoint from the training data, and the train and valid files
the same with or without it."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from orchestrator.backends.local.tasks import write_task

ROOT = Path(__file__).resolve().parents[2]


def _prompts(path: Path) -> list[str]:
    return [json.loads(line)["prompt"] for line in path.read_text().splitlines()]


def test_the_test_file_is_held_out_and_changes_nothing_else(tmp_path: Path) -> None:
    train, valid = write_task("reverse", tmp_path / "a", n_train=160, n_valid=40)
    train2, valid2, test = write_task("reverse", tmp_path / "b", n_train=160, n_valid=40, n_test=40)
    assert train.read_bytes() == train2.read_bytes() and valid.read_bytes() == valid2.read_bytes()
    held = _prompts(test)
    assert len(held) == len(set(held)) == 40
    assert not set(held) & set(_prompts(train) + _prompts(valid))


def test_the_shipped_tiny_sweep_scores_its_own_held_out_file(tmp_path: Path) -> None:
    spec = yaml.safe_load((ROOT / "sweeps" / "tiny.yaml").read_text())
    data = ROOT / "data" / "tiny"
    assert (ROOT / "sweeps" / spec["evaluate"]["file"]).resolve() == data / "reverse.test.jsonl"
    # the files in the repository are what the sweep file's comment regenerates
    made = write_task("reverse", tmp_path, n_train=160, n_valid=40, n_test=40)
    for path in made:
        assert path.read_bytes() == (data / path.name).read_bytes(), path.name

"""Sweep files: defaults from the recommended ranges, errors with field paths."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.config import load_spec
from orchestrator.core.errors import SpecError

MINIMAL = "name: demo\ndata: {train: train.jsonl}\nbackend: {name: local, model: tiny}\n"


def _spec(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "sweep.yaml"
    p.write_text(text)
    return p


def test_defaults_are_the_recommended_ranges(tmp_path: Path) -> None:
    spec = load_spec(_spec(tmp_path, MINIMAL))
    s = spec.space
    assert (s.n_epochs.low, s.n_epochs.high) == (2, 4)
    assert (s.batch_size.low_pct, s.batch_size.high_pct, s.batch_size.log) == (0.01, 4.0, True)
    lrm = s.learning_rate_multiplier
    assert (lrm.low, lrm.high, lrm.log) == (0.02, 0.2, True)
    assert s.prompt_loss_weight is None
    assert spec.data.train == tmp_path / "train.jsonl"  # relative to the sweep file
    assert spec.objective.metric == "full_valid_loss"


def test_name_defaults_to_the_file_stem(tmp_path: Path) -> None:
    p = _spec(tmp_path, MINIMAL.replace("name: demo\n", ""))
    assert load_spec(p).name == "sweep"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("space: {n_epochs: {low: 3, high: 2}}", "space.n_epochs.high: must be >= low (3)"),
        ("space: {batch_size: {low_pct: 1}}", "space.batch_size: give both low_pct and high_pct"),
        (
            "space: {learning_rate_multiplier: {low: 0, high: 1, log: true}}",
            "space.learning_rate_multiplier.low: must be > 0 on a log scale",
        ),
        (
            "space: {learning_rate_multiplier: fast}",
            "space.learning_rate_multiplier: expected a number, a list of choices",
        ),
        ("trials: 0", "trials: input should be greater than or equal to 1"),
        ("tirals: 3", "tirals: unknown field (did you mean 'trials'?)"),
        (
            "space: {n_epoch: {low: 2, high: 3}}",
            "space.n_epoch: unknown field (did you mean 'n_epochs'?)",
        ),
        ("pruner: {name: best}", "pruner.name: input should be 'none'"),
    ],
)
def test_errors_name_file_and_field(tmp_path: Path, extra: str, message: str) -> None:
    p = _spec(tmp_path, MINIMAL + extra + "\n")
    with pytest.raises(SpecError) as info:
        load_spec(p)
    assert str(info.value).startswith(f"{p}: {message}")


def test_an_unknown_field_far_from_any_gets_no_guess(tmp_path: Path) -> None:
    p = _spec(tmp_path, MINIMAL + "colour: blue\n")
    with pytest.raises(SpecError) as info:
        load_spec(p)
    assert str(info.value) == f"{p}: colour: unknown field"


def test_missing_field_and_bad_yaml(tmp_path: Path) -> None:
    p = _spec(tmp_path, "name: demo\ndata: {train: t.jsonl}\nbackend: {name: local}\n")
    with pytest.raises(SpecError, match=r"backend\.model: required field is missing"):
        load_spec(p)
    p = _spec(tmp_path, "name: demo\ndata: [unclosed\n")
    with pytest.raises(SpecError, match=r"sweep\.yaml: line \d+: invalid YAML"):
        load_spec(p)
    with pytest.raises(SpecError, match="no such file"):
        load_spec(tmp_path / "missing.yaml")


def test_cli_reports_spec_errors_in_one_line(cli, tmp_path: Path) -> None:
    p = _spec(tmp_path, MINIMAL + "space: {n_epochs: {low: 3, high: 2}}\n")
    r = cli("space", p)
    assert r.code == 2
    assert r.err.strip() == f"error: {p}: space.n_epochs.high: must be >= low (3)"

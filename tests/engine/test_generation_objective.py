"""Objectives from generations: exact match and label accuracy of greedy completions."""

from __future__ import annotations

from pathlib import Path

import optuna
import yaml

from orchestrator.backends.local.tasks import write_jsonl
from tests.engine.conftest import SweepFactory


def test_label_accuracy_objective_on_a_learnable_label(
    cli, make_sweep: SweepFactory, runs_dir: Path, tmp_path: Path
) -> None:
    # every completion is " yes": a model that learned anything generates it exactly
    rows = [
        {"prompt": f"is {w} a word? ->", "completion": " yes"}
        for w in (
            "apple",
            "river",
            "stone",
            "cloud",
            "tiger",
            "lemon",
            "piano",
            "honey",
            "candle",
            "forest",
            "marble",
            "rocket",
            "velvet",
            "garden",
            "silver",
            "window",
        )
    ]
    spec = make_sweep(
        name="gen",
        trials=2,
        space={
            "n_epochs": 8,
            "batch_size": 4,
            "learning_rate_multiplier": [3.0, 4.0],
            "prompt_loss_weight": 0.1,
        },
        objective={"metric": "full_valid_label_accuracy", "direction": "maximize"},
        backend={
            "name": "local",
            "model": "tiny",
            "options": {"torch_threads": 1, "eval_generations": 8},
        },
    )
    data = yaml.safe_load(spec.read_text())
    write_jsonl(Path(data["data"]["train"]), rows * 4)
    write_jsonl(Path(data["data"]["valid"]), rows[:8])
    r = cli("run", spec)
    assert r.code == 0, r.err
    study = optuna.load_study(study_name="gen", storage=f"sqlite:///{runs_dir / 'optuna.db'}")
    assert study.direction.name == "MAXIMIZE"
    assert study.best_value == 1.0
    for t in study.trials:
        assert 0.0 <= t.value <= 1.0


def test_generation_metric_needs_a_backend_that_reports_it(cli, make_sweep: SweepFactory) -> None:
    spec = make_sweep(
        name="gen2", objective={"metric": "full_valid_exact_match", "direction": "maximize"}
    )
    r = cli("space", spec)
    assert r.code == 2
    assert "objective.metric: 'full_valid_exact_match' is not reported by backend 'local'" in r.err
    assert "eval_generations" in r.err

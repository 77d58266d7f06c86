"""The local trainer's side: ``ftsweep evaluate`` on a tiny sweep logs exact-match scores to
three child runs; on a tiny sweep whose last epoch over-fits, the winner is an earlier epoch
whose model the trainer kept (``checkpoints: auto``), and ``best`` prints a recipe whose
sample call runs and answers."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest
from mlflow import MlflowClient

from orchestrator.backends.local.tasks import write_task
from tests.recipe.conftest import Finished, finished_sweep
from tests.recipe.test_best_recipe import _python

EVAL_SPEC = """name: tiny-eval
data: {train: data/reverse.train.jsonl, valid: data/reverse.valid.jsonl}
backend: {name: local, model: tiny, options: {torch_threads: 1}}
space:
  n_epochs: 2
  batch_size: 8
  learning_rate_multiplier: {low: 2.0, high: 6.0}
trials: 3
parallel: 3
sampler: {name: random, seed: 0}
evaluate: {file: held/reverse.valid.jsonl, scorers: [exact_match, contains], limit: 8,
           max_tokens: 12}
"""

#: random labels memorised for 6 epochs: the validation loss is lowest at epoch 3 (every
#: setting fixed, so the curve is the same each run)
OVERFIT_SPEC = """name: tiny-overfit
data: {train: data/random_labels.train.jsonl, valid: data/random_labels.valid.jsonl}
backend: {name: local, model: tiny, options: {torch_threads: 1}}
space:
  n_epochs: {low: 1, high: 6}
  batch_size: 2
  learning_rate_multiplier: 12.0
  prompt_loss_weight: 0.01
trials: 1
"""


#: the held-out score as the objective: every epoch end reports it
OBJECTIVE_SPEC = """name: tiny-objective
data: {train: data/reverse.train.jsonl, valid: data/reverse.valid.jsonl}
backend: {name: local, model: tiny, options: {torch_threads: 1}}
space:
  n_epochs: 2
  batch_size: 8
  learning_rate_multiplier: 4.0
trials: 1
objective: {metric: eval_exact_match, direction: maximize}
evaluate: {file: held/reverse.valid.jsonl, scorers: [exact_match, contains], max_tokens: 12}
"""


def _finished(
    tmp_path_factory: pytest.TempPathFactory, name: str, text: str, task: str
) -> Iterator[Finished]:
    folder = tmp_path_factory.mktemp(name)
    write_task(task, folder / "data", n_train=40, n_valid=20)
    write_task(task, folder / "held", n_train=1, n_valid=8, seed=7)
    spec = folder / f"{name}.yaml"
    spec.write_text(text)
    yield from finished_sweep(spec)


@pytest.fixture(scope="module")
def tiny_eval(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Finished]:
    yield from _finished(tmp_path_factory, "tiny-eval", EVAL_SPEC, "reverse")


@pytest.fixture(scope="module")
def tiny_overfit(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Finished]:
    yield from _finished(tmp_path_factory, "tiny-overfit", OVERFIT_SPEC, "random_labels")


@pytest.fixture(scope="module")
def tiny_objective(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Finished]:
    yield from _finished(tmp_path_factory, "tiny-objective", OBJECTIVE_SPEC, "reverse")


def test_a_held_out_score_as_the_objective(tiny_objective: Finished) -> None:
    """Each finished job is evaluated as it trains: eval_exact_match at every epoch end,
    the last one the trial's value."""
    study = optuna.load_study(
        study_name="tiny-objective", storage=f"sqlite:///{tiny_objective.runs / 'optuna.db'}"
    )
    (trial,) = study.trials
    client = MlflowClient(tracking_uri=f"sqlite:///{tiny_objective.runs / 'mlflow.db'}")
    run_id = trial.user_attrs["ftsweep.mlflow_run_id"]
    exact = client.get_metric_history(run_id, "eval_exact_match")
    contains = client.get_metric_history(run_id, "eval_contains")
    assert len(exact) == len(contains) == 2  # one per epoch end
    assert trial.value == pytest.approx(sorted(exact, key=lambda m: m.step)[-1].value)
    assert all(0 <= m.value <= 1 for m in exact)
    assert sorted(trial.intermediate_values) == [1, 2]  # reported to the pruner per epoch


def test_a_score_objective_needs_the_evaluate_block(cli: Any, tmp_path: Path) -> None:
    write_task("reverse", tmp_path / "data", n_train=20, n_valid=5)
    write_task("reverse", tmp_path / "held", n_train=1, n_valid=5, seed=7)
    spec = tmp_path / "s.yaml"
    spec.write_text(OBJECTIVE_SPEC.replace("evaluate: {file", "unused: {file"))
    text = "\n".join(line for line in spec.read_text().splitlines() if "unused" not in line)
    spec.write_text(text + "\n")
    r = cli("space", spec)
    assert r.code == 2 and "s.yaml: objective.metric: 'eval_exact_match' is not reported" in r.err


def test_evaluate_a_tiny_sweep_logs_exact_match_to_three_child_runs(
    cli: Any, tiny_eval: Finished
) -> None:
    r = cli("evaluate", tiny_eval.spec, "--top", "3")
    assert r.code == 0, r.err
    lines = r.out.splitlines()
    assert lines[0] == "sweep tiny-eval: 8 held-out examples"
    assert lines[1].split()[:4] == ["trial", "full_valid_loss", "eval_exact_match", "eval_contains"]
    study = optuna.load_study(
        study_name="tiny-eval", storage=f"sqlite:///{tiny_eval.runs / 'optuna.db'}"
    )
    client = MlflowClient(tracking_uri=f"sqlite:///{tiny_eval.runs / 'mlflow.db'}")
    shown = {int(line.split()[0]): float(line.split()[2]) for line in lines[2:]}
    assert sorted(shown) == [0, 1, 2]
    runs = {t.user_attrs["ftsweep.mlflow_run_id"] for t in study.trials}
    assert len(runs) == 3
    for t in study.trials:
        history = client.get_metric_history(
            t.user_attrs["ftsweep.mlflow_run_id"], "eval_exact_match"
        )
        assert [(m.step, m.value) for m in history] == [(2, pytest.approx(shown[t.number]))]
        assert 0 <= shown[t.number] <= 1
    again = cli("evaluate", tiny_eval.spec, "--top", "3")
    assert again.code == 0 and again.out.count("(recorded)") == 3
    best = json.loads(cli("best", tiny_eval.spec, "--by", "eval_contains").out)
    assert best["by"] == "eval_contains" and best["recipe"]["model"] == best["fine_tuned_model"]


def test_an_over_fitted_last_epoch_still_gives_a_winner_with_a_model(
    cli: Any, tiny_overfit: Finished, tmp_path: Path
) -> None:
    study = optuna.load_study(
        study_name="tiny-overfit", storage=f"sqlite:///{tiny_overfit.runs / 'optuna.db'}"
    )
    (job,) = [t for t in study.trials if "ftsweep.derived_from" not in t.user_attrs]
    assert study.best_trial.number != job.number  # an earlier epoch beat the last one
    winner = study.best_trial
    r = cli("best", tiny_overfit.spec)
    assert (r.code, r.err) == (0, "")
    shown = json.loads(r.out)
    assert shown["trial"] == winner.number and "model_note" not in shown
    model = Path(shown["fine_tuned_model"])
    assert model.name == f"epoch-{winner.params['n_epochs']}" and model.parent.name == "checkpoints"
    recipe = shown["recipe"]
    assert recipe["model"] == str(model) and recipe["base_model"] == "tiny"
    assert recipe["separator"] and recipe["registered_model"] == "models:/tiny-overfit/1"
    ran = _python(recipe["sample_call"], tmp_path, {})
    assert ran.returncode == 0, ran.stderr[-2000:]
    answer = json.loads(ran.stdout.strip().splitlines()[-1])
    assert answer["completion"] and answer["finish_reason"] in ("stop", "length")

"""A winner without a model (an earlier epoch whose job kept no checkpoint): ``best`` and the
registry take the best trial that has one, and the note says how to get the winner's."""

from __future__ import annotations

from pathlib import Path

import optuna

from orchestrator.backends.base import Hyperparameters, TrainingRequest
from orchestrator.tracking.recipe import (
    missing_model_note,
    recipe_of_trial,
    request_of_trial,
    with_model,
)
from tests.helpers import chat_rows, write_jsonl


def test_an_earlier_epoch_without_a_model(tmp_path: Path) -> None:
    train = write_jsonl(tmp_path / "train.jsonl", chat_rows(20))
    request = TrainingRequest("k", "gpt-4o-mini", Hyperparameters(3, 4, 1.0), train)
    dist = {"n_epochs": optuna.distributions.IntDistribution(1, 3)}
    study = optuna.create_study()
    study.add_trial(
        optuna.trial.create_trial(
            params={"n_epochs": 3}, distributions=dist, value=0.9,
            user_attrs={"ftsweep.request": request.to_json(), "ftsweep.fine_tuned_model": "ft:m"},
        )
    )  # fmt: skip
    study.add_trial(  # epoch 1 of trial 0's job: better, no checkpoint
        optuna.trial.create_trial(
            params={"n_epochs": 1}, distributions=dist, value=0.5,
            user_attrs={"ftsweep.derived_from": 0, "ftsweep.derived_job": "ftjob-1"},
        )
    )  # fmt: skip
    study.add_trial(  # epoch 2: a checkpoint, worse than epoch 1
        optuna.trial.create_trial(
            params={"n_epochs": 2}, distributions=dist, value=0.7,
            user_attrs={"ftsweep.derived_from": 0, "ftsweep.fine_tuned_model": "ft:m:ckpt-step-10"},
        )
    )  # fmt: skip
    best = study.best_trial
    assert best.number == 1
    note = missing_model_note(best)
    assert note is not None and "epoch 1 of trial 0's job (job ftjob-1)" in note
    assert "n_epochs=1" in note
    kept = with_model(study, best)
    assert kept.number == 2  # the best trial that has a model: the epoch-2 checkpoint
    assert missing_model_note(kept) is None
    assert request_of_trial(kept, study) == request_of_trial(study.trials[0])
    recipe = recipe_of_trial("openai", kept, study)
    assert recipe is not None
    assert (recipe.model, recipe.base_model) == ("ft:m:ckpt-step-10", "gpt-4o-mini")
    assert recipe.system == "You add numbers."  # the parent's training file was read

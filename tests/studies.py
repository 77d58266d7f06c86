"""A study with every kind of trial Optuna stores, to compare readers against Optuna's own."""

from __future__ import annotations

import math

import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState, create_trial


def fill(url: str, name: str = "s") -> optuna.Study:
    """A study ``name`` at ``url`` (and a second study beside it) with complete, pruned,
    failed, running and waiting trials; infinite and NaN intermediate values; user and
    system attributes of every JSON type; int, log-float, stepped-float and categorical
    parameters."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    other = optuna.create_study(study_name=f"{name}-other", storage=url, direction="maximize")
    other.set_user_attr("lineage", name)
    other.add_trial(create_trial(value=1.0, params={}, distributions={}))
    study = optuna.create_study(study_name=name, storage=url)
    study.set_user_attr("space", {"n_epochs": [2, 4], "nested": {"a": [1, None, True]}})
    study._storage.set_study_system_attr(study._study_id, "sys", "x")
    dists = {
        "n_epochs": IntDistribution(2, 4),
        "batch_size": IntDistribution(1, 64, log=True),
        "lr": FloatDistribution(0.02, 0.2, log=True),
        "plw": FloatDistribution(0.0, 0.1, step=0.01),
        "kind": CategoricalDistribution(["a", None, 3, 1.5]),
    }
    for i, state in enumerate(
        [TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.COMPLETE]
    ):
        params = {"n_epochs": 2 + i % 3, "batch_size": 2**i, "lr": 0.05, "plw": 0.03}
        params["kind"] = [None, "a", 3, 1.5][i]
        study.add_trial(
            create_trial(
                state=state,
                value=[0.5, None, None, math.inf][i],
                params=params,
                distributions=dists,
                user_attrs={"i": i, "f": 0.25, "s": 'é\n"', "l": [1, 2], "n": None},
                system_attrs={"k": {"deep": [i]}},
                intermediate_values={1: 1.0 - i / 10, 2: -math.inf, 3: math.nan}
                if state != TrialState.FAIL
                else {},
            )
        )
    running = study.ask({"n_epochs": IntDistribution(2, 4)})
    study.set_user_attr("after", 1)
    running.set_user_attr("owner", "host:1")
    study.enqueue_trial({"n_epochs": 3}, user_attrs={"queued": True})  # WAITING
    return study

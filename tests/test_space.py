"""From space specs and data sizes to Optuna distributions."""

from __future__ import annotations

from typing import ClassVar

import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from orchestrator.backends.base import (
    DEFAULT_CAPABILITIES,
    Backend,
    Capabilities,
    Hyperparameters,
    JobHandle,
    JobUpdate,
    Range,
    TrainingRequest,
)
from orchestrator.config import BatchSizeParam, FloatParam, IntParam, SpaceSpec
from orchestrator.core.errors import SpecError
from orchestrator.plan.space import resolve_space


class _Stub(Backend):
    """Only the class attributes matter to resolve_space."""

    def submit(self, request: TrainingRequest) -> JobHandle:
        raise NotImplementedError

    def find(self, key: str) -> JobHandle | None:
        raise NotImplementedError

    def poll(self, handle: JobHandle, cursor: str | None = None) -> JobUpdate:
        raise NotImplementedError

    def cancel(self, handle: JobHandle) -> None:
        raise NotImplementedError


class Hosted(_Stub):
    name = "hosted"
    capabilities: ClassVar[Capabilities] = Capabilities(
        parameters={
            **DEFAULT_CAPABILITIES.parameters,
            "n_epochs": Range(1, 50),
            "batch_size": Range(1, 256),
        }
    )


class Local(_Stub):
    name = "trainer"
    capabilities: ClassVar[Capabilities] = Capabilities(
        parameters={**DEFAULT_CAPABILITIES.parameters, "prompt_loss_weight": Range(0, 1)}
    )


def test_default_space_for_449_examples() -> None:
    space = resolve_space(SpaceSpec(), 449, Hosted)
    d = space.distributions()
    assert d["n_epochs"] == IntDistribution(2, 4)
    assert d["batch_size"] == IntDistribution(1, 18, log=True)  # 0.01 % -> 0.04 -> 1; 4 % -> 18
    assert d["learning_rate_multiplier"] == FloatDistribution(0.02, 0.2, log=True)
    assert "prompt_loss_weight" not in d
    notes = space["batch_size"].notes
    assert "0.01 % of 449 examples = 0.0449 -> 1" in notes
    assert "4 % of 449 examples = 18 -> 18" in notes


def test_local_backends_search_prompt_loss_weight_by_default() -> None:
    space = resolve_space(SpaceSpec(), 1000, Local)
    assert space.distributions()["prompt_loss_weight"] == FloatDistribution(0.01, 0.1, log=True)


def test_provider_maximum_clamps_and_is_noted() -> None:
    space = resolve_space(SpaceSpec(), 100_000, Hosted)  # 4 % = 4000 > 256
    dim = space["batch_size"]
    assert (dim.low, dim.high) == (10, 256)
    assert "high 4000 lowered to 256 (hosted's maximum is 256)" in dim.notes


def test_tiny_datasets_collapse_to_a_fixed_batch_size() -> None:
    space = resolve_space(SpaceSpec(), 12, Hosted)
    assert space["batch_size"].kind == "fixed" and space["batch_size"].value == 1
    assert "batch_size" not in space.distributions()
    assert space.hyperparameters({"n_epochs": 3, "learning_rate_multiplier": 0.1}).batch_size == 1


def test_fixed_values_and_choices() -> None:
    spec = SpaceSpec(
        n_epochs=IntParam(value=3),
        batch_size=BatchSizeParam(choices=[4, 8, 1000]),
        learning_rate_multiplier=FloatParam(choices=[0.05, 0.1]),
    )
    space = resolve_space(spec, 500, Hosted)
    assert space.fixed() == {"n_epochs": 3}
    assert space.distributions()["batch_size"] == CategoricalDistribution((4, 8, 256))
    hp = space.hyperparameters({"batch_size": 8, "learning_rate_multiplier": 0.1})
    assert (hp.n_epochs, hp.batch_size, hp.learning_rate_multiplier) == (3, 8, 0.1)


def test_prompt_loss_weight_on_a_backend_without_it_is_a_spec_error() -> None:
    spec = SpaceSpec(prompt_loss_weight=FloatParam(value=0.1))
    with pytest.raises(SpecError) as info:
        resolve_space(spec, 500, Hosted, "sweeps/openai.yaml")
    assert str(info.value).startswith(
        "sweeps/openai.yaml: space.prompt_loss_weight: backend 'hosted'"
    )
    assert info.value.exit_code == 2


def test_edges() -> None:
    dim = resolve_space(SpaceSpec(), 449, Hosted)["learning_rate_multiplier"]
    assert dim.on_edge(0.02) == "low" and dim.on_edge(0.199) == "high" and dim.on_edge(0.08) is None


@pytest.mark.parametrize(
    ("spec", "field", "value"),
    [
        (SpaceSpec(n_epochs=IntParam(low=45, high=60)), "space.n_epochs.high", "60"),
        (SpaceSpec(n_epochs=IntParam(value=51)), "space.n_epochs", "51"),
        (SpaceSpec(n_epochs=IntParam(choices=[3, 70, 2])), "space.n_epochs.choices.1", "70"),
        (
            SpaceSpec(learning_rate_multiplier=FloatParam(low=0, high=0.2)),
            "space.learning_rate_multiplier.low",
            "0",
        ),
    ],
)
def test_every_end_of_the_space_is_checked_against_the_backend(
    spec: SpaceSpec, field: str, value: str
) -> None:
    with pytest.raises(SpecError) as info:
        resolve_space(spec, 500, Hosted, "sweeps/h.yaml")
    name = field.split(".")[1]
    allowed = Hosted.capabilities.parameters[name].describe()
    assert (
        str(info.value) == f"sweeps/h.yaml: {field}: hosted accepts {name} {allowed}, got {value}"
    )


def test_a_backend_minimum_batch_size_names_the_share() -> None:
    class Big(Hosted):
        name = "big"
        capabilities: ClassVar[Capabilities] = Capabilities(
            parameters={**Hosted.capabilities.parameters, "batch_size": Range(8, 256)}
        )

    with pytest.raises(SpecError, match=r"space\.batch_size\.low_pct: big accepts batch_size 8"):
        resolve_space(SpaceSpec(), 1000, Big, "s.yaml")


def test_bounds_cheapest_and_dearest() -> None:
    spec = SpaceSpec(
        n_epochs=IntParam(choices=[2, 8]),
        batch_size=BatchSizeParam(low=4, high=16),
        learning_rate_multiplier=FloatParam(value=0.1),
    )
    space = resolve_space(spec, 1000, Local)
    assert space.bounds("n_epochs") == (2, 8)
    assert space.bounds("batch_size") == (4, 16)
    assert space.bounds("learning_rate_multiplier") == (0.1, 0.1)
    assert space.bounds("prompt_loss_weight") == (0.01, 0.1)
    assert space.cheapest() == Hyperparameters(2, 4, 0.1, 0.01)
    assert space.dearest() == Hyperparameters(8, 16, 0.1, 0.1)
    assert resolve_space(SpaceSpec(), 449, Hosted).cheapest().prompt_loss_weight is None

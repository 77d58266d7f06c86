"""The tuned hyper-parameters: one registry that everything else reads.

The sweep file's space models (:mod:`orchestrator.config`), the request's
:class:`~orchestrator.backends.base.Hyperparameters`, the backends' range checks, the search
space and the report's columns all come from :data:`PARAMETERS`. This module imports nothing
of the package, so any layer may use it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["NAMES", "PARAMETERS", "HyperParameter", "parameter"]


@dataclass(frozen=True)
class HyperParameter:
    """One tuned hyper-parameter.

    ``low``/``high``/``log`` are the recommended range (the search space's default);
    ``fixed`` is the value a backend that accepts the parameter uses when the sweep neither
    searches nor fixes it; ``optional`` parameters are left out of requests to backends that
    do not accept them.
    """

    name: str
    kind: Literal["int", "float"]
    low: float
    high: float
    log: bool
    short: str
    doc: str
    fixed: float | None = None
    optional: bool = False


PARAMETERS: tuple[HyperParameter, ...] = (
    HyperParameter(
        "n_epochs",
        "int",
        2,
        4,
        False,
        "epochs",
        "passes over the training data; small datasets need more",
    ),
    HyperParameter(
        "batch_size",
        "int",
        0.01,
        4.0,
        True,
        "batch",
        "examples per optimizer step; the range is a share (%) of the training examples",
    ),
    HyperParameter(
        "learning_rate_multiplier",
        "float",
        0.02,
        0.2,
        True,
        "lr_mult",
        "multiplies the backend's base learning rate",
    ),
    HyperParameter(
        "prompt_loss_weight",
        "float",
        0.01,
        0.1,
        True,
        "plw",
        "weight of the prompt tokens in the loss (local trainer only)",
        fixed=0.1,
        optional=True,
    ),
)

NAMES: tuple[str, ...] = tuple(p.name for p in PARAMETERS)


def parameter(name: str) -> HyperParameter:
    """The registry entry for ``name`` (KeyError for an unknown name)."""
    for p in PARAMETERS:
        if p.name == name:
            return p
    raise KeyError(name)

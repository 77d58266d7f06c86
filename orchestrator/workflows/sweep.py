"""``ftsweep run``: the sweep engine with MLflow tracking wired in, as the entry point wires it.

The engine (:func:`orchestrator.engine.run_sweep`) schedules and tells listeners; which
listeners record the sweep is the entry point's choice, as Ray Tune adds its default loggers
at ``Tuner.fit``. This one adds MLflow's (:class:`~orchestrator.tracking.MlflowListener`
over a :class:`~orchestrator.tracking.Tracker` on the sweep's tracking store), built only when
the engine takes the full path: a finished sweep run again does not open MLflow at all.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from orchestrator.engine import Overrides, SweepResult
from orchestrator.engine import run_sweep as run_engine

if TYPE_CHECKING:
    from orchestrator.config import SweepSpec
    from orchestrator.engine.events import Listener
    from orchestrator.plan.sweep import SweepPlan
    from orchestrator.stores.study import Stores
    from orchestrator.tracking import Tracker

__all__ = ["Overrides", "SweepResult", "run_sweep"]


def run_sweep(
    spec_path: str | os.PathLike[str],
    overrides: Overrides | None = None,
    *,
    listeners: Sequence[Listener] = (),
    tracker: Tracker | None = None,
    **engine: Any,
) -> SweepResult:
    """Run (or resume) the sweep in ``spec_path``, recorded in MLflow.

    ``tracker`` replaces the MLflow client on the sweep's store (tests); without it the
    tracking server, if any, is asked for its health before anything starts. ``listeners``
    and ``engine`` (``clock``, ``sleep``, ``wall``, ``plan``, ``models``) go to
    :func:`orchestrator.engine.run_sweep`. A first run starts from the imported best when
    ``ftsweep import`` filled ``NAME.imported`` (:func:`~.importer.imported_warm_start`)."""

    def warm_start(plan: SweepPlan) -> Sequence[tuple[Mapping[str, Any], Mapping[str, Any]]]:
        # imported only when a new study starts: a finished sweep run again never asks
        from orchestrator.workflows.importer.warm import imported_warm_start

        return imported_warm_start(plan)

    def mlflow(spec: SweepSpec, stores: Stores) -> Listener:
        from orchestrator.tracking import MlflowListener, Tracker

        return MlflowListener(tracker or Tracker(stores.mlflow, spec.name, stores.artifacts))

    return run_engine(
        spec_path,
        overrides or Overrides(),
        listeners=listeners,
        tracking=mlflow,
        probe_tracking=tracker is None,
        warm_start=warm_start,
        **engine,
    )

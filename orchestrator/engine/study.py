"""Stores, samplers and pruners: opening the Optuna study of a sweep.

Stores are chosen by URL, never by code: the sweep file's ``storage`` section, else the
environment (``FTSWEEP_OPTUNA_STORAGE``, ``MLFLOW_TRACKING_URI``), else the embedded default
under ``mlruns/`` (``FTSWEEP_RUNS_DIR`` moves it): ``sqlite:///mlruns/optuna.db`` and
``sqlite:///mlruns/mlflow.db`` with artifacts in ``mlruns/artifacts``. An Optuna URL of the form
``journal:PATH`` uses a JournalFile storage (several local workers without a database server).
"""

from __future__ import annotations

import importlib.util
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestrator.config import SweepSpec
from orchestrator.errors import SpecError
from orchestrator.space import SearchSpace

if TYPE_CHECKING:
    import optuna

__all__ = ["Stores", "make_pruner", "make_sampler", "open_study", "resolve_stores"]


@dataclass(frozen=True)
class Stores:
    optuna: str
    mlflow: str
    artifacts: Path | None  # None when the MLflow server decides
    workdir: Path  # backend job folders, ledger files


def resolve_stores(spec: SweepSpec) -> Stores:
    root = Path(os.environ.get("FTSWEEP_RUNS_DIR") or "mlruns").resolve()
    optuna_url = (
        spec.storage.optuna
        or os.environ.get("FTSWEEP_OPTUNA_STORAGE")
        or f"sqlite:///{root / 'optuna.db'}"
    )
    mlflow_uri = (
        spec.storage.mlflow
        or os.environ.get("MLFLOW_TRACKING_URI")
        or f"sqlite:///{root / 'mlflow.db'}"
    )
    embedded = mlflow_uri.startswith(("sqlite:", "postgresql", "mysql"))
    artifacts = root / "artifacts" if embedded else None
    for url in (optuna_url, mlflow_uri):
        if url.startswith("sqlite:///"):
            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    return Stores(optuna_url, mlflow_uri, artifacts, root)


def _storage(url: str) -> Any:
    import optuna

    if url.startswith("journal:"):
        from optuna.storages.journal import JournalFileBackend

        path = url.removeprefix("journal:")
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        return optuna.storages.JournalStorage(JournalFileBackend(path))
    return optuna.storages.RDBStorage(url, engine_kwargs={"pool_pre_ping": True})


def _new_rdb(url: str) -> None:
    import optuna

    optuna.storages.RDBStorage(url).engine.dispose()


def _grid(space: SearchSpace) -> dict[str, list[Any]]:
    grid: dict[str, list[Any]] = {}
    for d in space.dimensions:
        if d.kind == "choice":
            grid[d.name] = list(d.choices)
        elif d.kind == "int":
            assert d.low is not None and d.high is not None
            lo, hi = int(d.low), int(d.high)
            if hi - lo < 6:
                grid[d.name] = list(range(lo, hi + 1))
            else:
                grid[d.name] = sorted({round(lo * (hi / lo) ** (i / 3)) for i in range(4)})
        elif d.kind == "float":
            assert d.low is not None and d.high is not None
            flo, fhi = d.low, d.high
            if d.log:
                grid[d.name] = [flo * (fhi / flo) ** (i / 2) for i in range(3)]
            else:
                grid[d.name] = [flo + (fhi - flo) * i / 2 for i in range(3)]
    return grid


def make_sampler(spec: SweepSpec, space: SearchSpace, source: str) -> optuna.samplers.BaseSampler:
    import optuna

    name, seed = spec.sampler.name, spec.sampler.seed
    needs = {"cmaes": "cmaes", "gp": "torch"}.get(name)
    if needs and importlib.util.find_spec(needs) is None:
        raise SpecError(
            source, "sampler.name", f"{name} needs the {needs!r} package: pip install {needs}"
        )
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "grid":
        return optuna.samplers.GridSampler(_grid(space), seed=seed)
    if name == "qmc":
        return optuna.samplers.QMCSampler(seed=seed, warn_independent_sampling=False)
    if name == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed)
    return optuna.samplers.GPSampler(seed=seed)


def make_pruner(spec: SweepSpec, space: SearchSpace, source: str) -> optuna.pruners.BasePruner:
    """Pruners see one intermediate value per epoch (step = epoch number); hyperband's
    ``max_resource`` is the most epochs of the space."""
    import optuna

    p, opts = spec.pruner.name, dict(spec.pruner.options)
    max_epochs = space.bounds("n_epochs")[1]
    try:
        if p == "none":
            return optuna.pruners.NopPruner()
        if p == "median":
            opts.setdefault("n_startup_trials", 2)
            return optuna.pruners.MedianPruner(**opts)
        if p == "percentile":
            opts.setdefault("percentile", 25.0)
            opts.setdefault("n_startup_trials", 2)
            return optuna.pruners.PercentilePruner(**opts)
        if p == "successive_halving":
            return optuna.pruners.SuccessiveHalvingPruner(**opts)
        if p == "hyperband":
            opts.setdefault("min_resource", 1)
            opts.setdefault("max_resource", math.ceil(max_epochs))
            return optuna.pruners.HyperbandPruner(**opts)
        return optuna.pruners.ThresholdPruner(**opts)
    except (TypeError, ValueError) as exc:
        raise SpecError(source, "pruner.options", str(exc)) from None


def open_study(spec: SweepSpec, space: SearchSpace, stores: Stores) -> optuna.Study:
    """Create the sweep's study, or load it to resume (same name, same storage)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    from orchestrator.tracking.client import create_aside, sqlite_init_lock

    source = str(spec.source or spec.name)
    with sqlite_init_lock(stores.optuna):  # several workers may create the store at once
        create_aside(stores.optuna, _new_rdb)
        study = optuna.create_study(
            study_name=spec.name,
            storage=_storage(stores.optuna),
            sampler=make_sampler(spec, space, source),
            pruner=make_pruner(spec, space, source),
            direction=spec.objective.direction,
            load_if_exists=True,
        )
    if spec.sampler.seed is not None and study.trials:
        # Samplers are not stored with the study: a resumed one seeded as before would
        # replay the same configurations. Seed it past the trials already there.
        shifted = spec.model_copy(
            update={
                "sampler": spec.sampler.model_copy(
                    update={"seed": spec.sampler.seed + len(study.trials)}
                )
            }
        )
        study.sampler = make_sampler(shifted, space, source)
    return study

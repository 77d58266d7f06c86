"""MLflow tracking: one experiment per sweep, a parent run per study, a child run per trial.

Written against :class:`mlflow.MlflowClient` with an explicit tracking URI (no global state, so
several sweeps and tests can share a process). Step metrics go in batches (``log_batch``, at most
1000 a call), never one call per point. Tags use the ``ftsweep.`` prefix. MLflow errors are
translated to :class:`~orchestrator.errors.OrchestratorError` here.
"""

from __future__ import annotations

import os
import tempfile
import time
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from orchestrator.backends.base import MetricPoint
from orchestrator.data.findings import DatasetStats
from orchestrator.errors import OrchestratorError

__all__ = ["Tracker", "runs_link", "sqlite_init_lock"]

_BATCH = 1000
TAG = "ftsweep."


class TrackingError(OrchestratorError):
    """MLflow refused or failed an operation."""


@contextmanager
def _translated(what: str) -> Iterator[None]:
    from mlflow.exceptions import MlflowException

    try:
        yield
    except MlflowException as exc:
        raise TrackingError(f"MLflow: {what}: {exc.message.splitlines()[0]}") from exc


@contextmanager
def sqlite_init_lock(url: str) -> Iterator[None]:
    """Hold an exclusive lock beside a SQLite database while it may be created or migrated:
    two workers starting at once would otherwise run the schema migration twice."""
    if not url.startswith("sqlite:///"):
        yield
        return
    import fcntl

    path = Path(url.removeprefix("sqlite:///"))
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{path}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def runs_link(ui_url: str, experiment_id: str, direction: str | None = None) -> str:
    """The runs view of an experiment in the MLflow UI (model-training mode), best trial
    first when the objective's ``direction`` is given."""
    link = f"{ui_url.rstrip('/')}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"
    if direction is not None:
        asc = "true" if direction == "minimize" else "false"
        link += f"&orderByKey=metrics.%60objective%60&orderByAsc={asc}"
    return link


class Tracker:
    """Logs a sweep to MLflow."""

    def __init__(self, tracking_uri: str, experiment: str, artifact_root: Path | None = None):
        os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
        from mlflow import MlflowClient

        self.tracking_uri = tracking_uri
        with sqlite_init_lock(tracking_uri), _translated(f"experiment {experiment!r}"):
            self.client = MlflowClient(tracking_uri=tracking_uri)  # creates/migrates the store
            exp = self.client.get_experiment_by_name(experiment)
            if exp is None:
                location = None
                if artifact_root is not None:
                    artifact_root.mkdir(parents=True, exist_ok=True)
                    location = (artifact_root / experiment).resolve().as_uri()
                self.experiment_id = self.client.create_experiment(
                    experiment, artifact_location=location, tags={f"{TAG}sweep": experiment}
                )
            else:
                self.experiment_id = exp.experiment_id

    # -- runs -------------------------------------------------------------------------------
    def parent_run(self, run_id: str | None, name: str, tags: Mapping[str, str]) -> str:
        """The study's parent run: ``run_id`` if it still exists, else the oldest active run
        tagged as this study's parent (another worker may have just made it), else a new one."""
        with _translated("parent run"):
            if run_id:
                try:
                    run = self.client.get_run(run_id)
                    if run.info.lifecycle_stage == "active":
                        if run.info.status != "RUNNING":
                            self.client.update_run(run_id, status="RUNNING")
                        return run_id
                except Exception:  # deleted or from another store: start afresh
                    pass
            mine = f"tags.`{TAG}parent` = 'true' and tags.`{TAG}study` = '{name}'"
            found = self.client.search_runs(
                [self.experiment_id], mine, order_by=["attributes.start_time ASC"], max_results=1
            )
            if found:
                return str(found[0].info.run_id)
            tags = {**tags, f"{TAG}parent": "true", f"{TAG}study": name}
            run = self.client.create_run(self.experiment_id, run_name=name, tags=tags)
            return str(run.info.run_id)

    def child_run(self, parent_id: str, name: str, tags: Mapping[str, str]) -> str:
        with _translated(f"run {name}"):
            run = self.client.create_run(
                self.experiment_id,
                run_name=name,
                tags={"mlflow.parentRunId": parent_id, **tags},
            )
            return str(run.info.run_id)

    def finish(self, run_id: str, status: str = "FINISHED") -> None:
        with _translated("finish run"):
            self.client.set_terminated(run_id, status=status)

    # -- values -----------------------------------------------------------------------------
    def log(
        self,
        run_id: str,
        *,
        params: Mapping[str, Any] | None = None,
        metrics: Mapping[str, float] | None = None,
        tags: Mapping[str, Any] | None = None,
    ) -> None:
        """Params, final metrics and tags in one batch."""
        from mlflow.entities import Metric, Param, RunTag

        now = int(time.time() * 1000)
        with _translated("log"):
            self.client.log_batch(
                run_id,
                metrics=[Metric(k, float(v), now, 0) for k, v in (metrics or {}).items()],
                params=[Param(k, str(v)) for k, v in (params or {}).items()],
                tags=[RunTag(k, str(v)) for k, v in (tags or {}).items()],
                synchronous=True,
            )

    def log_points(self, run_id: str, points: Sequence[MetricPoint]) -> None:
        """Step metrics, batched."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(p.name, float(p.value), now, p.step) for p in points]
        with _translated("log metrics"):
            for i in range(0, len(metrics), _BATCH):
                self.client.log_batch(run_id, metrics=metrics[i : i + _BATCH], synchronous=True)

    def history(self, run_id: str, names: Iterable[str]) -> dict[str, list[tuple[int, float]]]:
        """The logged (step, value) points of each metric, in step order."""
        out = {}
        with _translated("metric history"):
            for name in names:
                points = sorted(
                    (m.step, m.value) for m in self.client.get_metric_history(run_id, name)
                )
                if points:
                    out[name] = points
        return out

    def log_datasets(self, run_id: str, datasets: Mapping[str, DatasetStats]) -> None:
        """Each file as an MLflow dataset input (context ``training``/``validation``),
        with its SHA-256 as digest."""
        from mlflow.data.dataset_source_registry import resolve_dataset_source
        from mlflow.data.meta_dataset import MetaDataset
        from mlflow.entities import DatasetInput, InputTag

        inputs = []
        for context, stats in datasets.items():
            with warnings.catch_warnings():  # "can be interpreted in multiple ways": it is local
                warnings.simplefilter("ignore", UserWarning)
                source = resolve_dataset_source(str(Path(stats.path).resolve()))
            name = Path(stats.path).name
            ds = MetaDataset(source, name=name, digest=stats.sha256[:32])  # type: ignore[abstract]
            tags = [InputTag("mlflow.data.context", context)]
            inputs.append(DatasetInput(ds._to_mlflow_entity(), tags=tags))
        with _translated("dataset inputs"):
            self.client.log_inputs(run_id, datasets=inputs)

    def log_file(self, run_id: str, path: Path, artifact_path: str | None = None) -> None:
        with _translated(f"artifact {path.name}"):
            if path.is_dir():
                self.client.log_artifacts(run_id, str(path), artifact_path)
            else:
                self.client.log_artifact(run_id, str(path), artifact_path)

    def log_text(self, run_id: str, text: str, artifact_file: str) -> None:
        with _translated(f"artifact {artifact_file}"):
            self.client.log_text(run_id, text, artifact_file)

    def log_curve_png(
        self, run_id: str, curves: Mapping[str, Sequence[tuple[int, float]]], title: str
    ) -> None:
        """A loss-curve figure (train/valid loss by step) as ``loss_curve.png``."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 4))
        for name in ("train_loss", "valid_loss", "full_valid_loss"):
            points = curves.get(name) or []
            if points:
                style = "o-" if name == "full_valid_loss" else "-"
                ax.plot(
                    [s for s, _ in points],
                    [v for _, v in points],
                    style,
                    label=name,
                    alpha=0.6 if name == "train_loss" else 1.0,
                )
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.set_title(title)
        ax.legend()
        ax.grid(alpha=0.3)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "loss_curve.png"
            fig.savefig(path, dpi=100, bbox_inches="tight")
            plt.close(fig)
            self.log_file(run_id, path)

    def register_model(
        self, run_id: str, artifact_path: str, name: str, tags: Mapping[str, str] | None = None
    ) -> str:
        """Register ``runs:/RUN/ARTIFACT_PATH`` as a new version of model ``name``."""
        with _translated(f"register model {name!r}"):
            if self.client.search_registered_models(f"name = '{name}'") == []:
                self.client.create_registered_model(name)
            run = self.client.get_run(run_id)
            source = f"{run.info.artifact_uri.rstrip('/')}/{artifact_path}"
            version = self.client.create_model_version(
                name, source=source, run_id=run_id, tags=dict(tags or {})
            )
            return str(version.version)

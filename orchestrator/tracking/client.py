"""The MLflow client ftsweep uses: experiment, runs, batched metrics, artifacts, registry.

Written against :class:`mlflow.MlflowClient` with an explicit tracking URI (no global state, so
several sweeps and tests can share a process). Step metrics go in batches (``log_batch``, at most
1000 a call), never one call per point. Every call is retried a few times on an MLflow error
(a locked SQLite file, a tracking server's 5xx), creating calls first looking for what an
earlier attempt may have made; what still fails is translated to :class:`TrackingError`.
"""

from __future__ import annotations

import functools
import os
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from orchestrator.backends.base import MetricPoint
from orchestrator.core.errors import OrchestratorError, StoreUnreachableError
from orchestrator.data.findings import DatasetStats
from orchestrator.stores.locks import create_aside, sqlite_init_lock

__all__ = [
    "TAG",
    "Tracker",
    "TrackingError",
    "run_link",
    "runs_link",
]

_BATCH = 1000
TAG = "ftsweep."
T = TypeVar("T")
#: pauses before the retries of one MLflow call
RETRY_DELAYS = (0.2, 1.0, 3.0)
#: opens the experiment's runs in the UI's model-training view, not the GenAI one
_MODEL_TRAINING = {"mlflow.experimentKind": "custom_model_development"}
#: MLflow error codes that a retry cannot fix
_PERMANENT = frozenset(
    {
        "INVALID_PARAMETER_VALUE",
        "RESOURCE_ALREADY_EXISTS",
        "RESOURCE_DOES_NOT_EXIST",
        "INVALID_STATE",
        "BAD_REQUEST",
        "PERMISSION_DENIED",
        "UNAUTHENTICATED",
    }
)


class TrackingError(OrchestratorError):
    """MLflow refused or failed an operation."""


#: what MLflow's HTTP client says when it got no connection (or no answer) at all
_NO_CONNECTION = (
    "Max retries exceeded",
    "Failed to establish a new connection",
    "Connection refused",
    "Connection aborted",
    "Read timed out",
    "RemoteDisconnected",
)
#: what a database says when another worker inserted the same row first
_DUPLICATE = (
    "UniqueViolation",
    "duplicate key value",
    "UNIQUE constraint failed",
    "IntegrityError",
)


def _no_connection(exc: Any) -> bool:
    return any(s in str(getattr(exc, "message", exc)) for s in _NO_CONNECTION)


def _duplicate(exc: Any) -> bool:
    return any(s in str(getattr(exc, "message", exc)) for s in _DUPLICATE)


@contextmanager
def _translated(what: str) -> Iterator[None]:
    from mlflow.exceptions import MlflowException

    try:
        yield
    except MlflowException as exc:
        raise TrackingError(f"MLflow: {what}: {exc.message.splitlines()[0]}") from exc


def runs_link(ui_url: str, experiment_id: str, direction: str | None = None) -> str:
    """The runs view of an experiment in the MLflow UI (model-training mode), best trial
    first when the objective's ``direction`` is given."""
    link = f"{ui_url.rstrip('/')}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"
    if direction is not None:
        asc = "true" if direction == "minimize" else "false"
        link += f"&orderByKey=metrics.%60objective%60&orderByAsc={asc}"
    return link


def run_link(ui_url: str, experiment_id: str, run_id: str) -> str:
    """One run's page in the MLflow UI, in the model-training view (without the parameter, a
    browser that never chose a view opens a child run as a GenAI evaluation)."""
    base = ui_url.rstrip("/")
    return f"{base}/#/experiments/{experiment_id}/runs/{run_id}?workflowType=machine_learning"


class Tracker:
    """Logs a sweep to MLflow. ``client`` replaces the ``MlflowClient`` (tests inject faults);
    ``sleep`` is what waits between retries."""

    def __init__(
        self,
        tracking_uri: str,
        experiment: str,
        artifact_root: Path | None = None,
        *,
        client: Any = None,
        sleep: Callable[[float], None] = time.sleep,
    ):
        os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
        from mlflow import MlflowClient

        self.tracking_uri = tracking_uri
        self.sleep = sleep
        with sqlite_init_lock(tracking_uri), _translated(f"experiment {experiment!r}"):
            create_aside(tracking_uri, lambda url: MlflowClient(tracking_uri=url))
            try:  # creates or migrates the store
                self.client = client or MlflowClient(tracking_uri=tracking_uri)
            except Exception as exc:
                if "_alembic_tmp" not in str(exc):
                    raise
                raise TrackingError(
                    f"the MLflow store {tracking_uri} was left half-migrated by an interrupted "
                    "run of an older ftsweep: move it away (or delete it if it holds nothing "
                    "you need) and run again"
                ) from None
            exp = self.client.get_experiment_by_name(experiment)
            if exp is None:
                exp = self._create_experiment(experiment, artifact_root)
            if isinstance(exp, str):
                self.experiment_id = exp
            else:
                self.experiment_id = exp.experiment_id
                if exp.tags.get("mlflow.experimentKind") is None:
                    for key, value in _MODEL_TRAINING.items():
                        self.client.set_experiment_tag(self.experiment_id, key, value)

    def _create_experiment(self, experiment: str, artifact_root: Path | None) -> Any:
        """The new experiment's id; or, when another worker created it first (a unique
        violation, ``RESOURCE_ALREADY_EXISTS``), that experiment."""
        from mlflow.exceptions import MlflowException

        location = None
        if artifact_root is not None:
            artifact_root.mkdir(parents=True, exist_ok=True)
            location = (artifact_root / experiment).resolve().as_uri()
        try:
            return self.client.create_experiment(
                experiment,
                artifact_location=location,
                tags={f"{TAG}sweep": experiment, **_MODEL_TRAINING},
            )
        except MlflowException as exc:
            theirs = self.client.get_experiment_by_name(experiment)
            if theirs is None or not (
                exc.error_code == "RESOURCE_ALREADY_EXISTS" or _duplicate(exc)
            ):
                raise
            return theirs

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        """``fn()``, retried on MLflow errors; the last one becomes a :class:`TrackingError`.
        A tracking server that no longer answers (no connection, and its ``/health`` does
        not answer either) is a :class:`StoreUnreachableError` at once: every further call
        would wait the same way."""
        from mlflow.exceptions import MlflowException

        for delay in (*RETRY_DELAYS, None):
            try:
                return fn()
            except MlflowException as exc:
                if _no_connection(exc) and (down := self._server_down()):
                    raise StoreUnreachableError(down) from None
                if delay is None or exc.error_code in _PERMANENT:
                    raise TrackingError(f"MLflow: {what}: {exc.message.splitlines()[0]}") from exc
                self.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    def _server_down(self, timeout: float = 3.0) -> str | None:
        """Why the tracking server (an ``http(s)://`` URI) does not answer, or None."""
        from urllib.error import HTTPError
        from urllib.request import urlopen

        from orchestrator.core.urls import bare_url

        if not self.tracking_uri.lower().startswith(("http://", "https://")):
            return None
        shown = bare_url(self.tracking_uri)  # no user:password@
        try:
            with urlopen(shown.rstrip("/") + "/health", timeout=timeout):
                return None
        except HTTPError as exc:
            if exc.code < 500:
                return None
            why = f"it answers HTTP {exc.code}"
        except OSError as exc:
            reason = getattr(exc, "reason", exc)
            if isinstance(reason, ConnectionRefusedError):
                why = "connection refused"
            elif isinstance(reason, TimeoutError):
                why = f"no answer within {timeout:g} s"
            else:
                why = (str(reason).splitlines() or [type(reason).__name__])[0][:200]
        return f"lost the MLflow tracking server at {shown}: {why}"

    # -- runs -------------------------------------------------------------------------------
    def parent_run(self, run_id: str | None, name: str, tags: Mapping[str, str]) -> str:
        """The study's parent run: ``run_id`` if it still exists, else the oldest active run
        tagged as this study's parent (another worker, or an attempt that seemed to fail, may
        have just made it), else a new one."""
        return self._call("parent run", lambda: self._parent_run(run_id, name, tags))

    def _parent_run(self, run_id: str | None, name: str, tags: Mapping[str, str]) -> str:
        if run_id:
            try:
                run = self.client.get_run(run_id)
                if run.info.lifecycle_stage == "active":
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
        return str(self.client.create_run(self.experiment_id, run_name=name, tags=tags).info.run_id)

    def child_run(
        self, parent_id: str, trial: int, name: str, tags: Mapping[str, str], *, new: bool = False
    ) -> str:
        """The run of trial ``trial`` under ``parent_id``: found by its tags, else created (so a
        retried or repeated call never makes a second one). ``new``: the trial cannot have a
        run yet, so the first attempt creates it without looking (a retry still looks)."""
        attempts = 0

        def find_or_create() -> str:
            nonlocal attempts
            attempts += 1
            mine = f"tags.`mlflow.parentRunId` = '{parent_id}' and tags.`{TAG}trial` = '{trial}'"
            if not new or attempts > 1:
                found = self.client.search_runs([self.experiment_id], mine, max_results=1)
                if found:
                    return str(found[0].info.run_id)
            all_tags = {"mlflow.parentRunId": parent_id, f"{TAG}trial": str(trial), **tags}
            run = self.client.create_run(self.experiment_id, run_name=name, tags=all_tags)
            return str(run.info.run_id)

        return self._call(f"run {name}", find_or_create)

    def new_run(self, name: str, tags: Mapping[str, str]) -> str:
        """A new run (never an existing one) named ``name``; a child when ``tags`` carry
        ``mlflow.parentRunId``. For runs outside a study (``ftsweep learning-curve``)."""
        return self._call(
            f"run {name}",
            lambda: str(
                self.client.create_run(
                    self.experiment_id, run_name=name, tags=dict(tags)
                ).info.run_id
            ),
        )

    def status(self, run_id: str) -> str | None:
        """The run's status (RUNNING, FINISHED, KILLED, FAILED), or None when it is gone."""
        from mlflow.exceptions import MlflowException

        try:
            run = self.client.get_run(run_id)
        except MlflowException:
            return None
        return None if run.info.lifecycle_stage != "active" else str(run.info.status)

    def resume(self, run_id: str) -> None:
        self._call("resume run", lambda: self.client.update_run(run_id, status="RUNNING"))

    def finish(self, run_id: str, status: str = "FINISHED") -> None:
        self._call("finish run", lambda: self.client.set_terminated(run_id, status=status))

    def children(self, parent_id: str) -> list[Any]:
        """The child runs of ``parent_id`` (MLflow ``Run`` objects)."""
        query = f"tags.`mlflow.parentRunId` = '{parent_id}'"
        return self._call(
            "child runs",
            lambda: list(self.client.search_runs([self.experiment_id], query, max_results=50000)),
        )

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
        self._call(
            "log",
            lambda: self.client.log_batch(
                run_id,
                metrics=[Metric(k, float(v), now, 0) for k, v in (metrics or {}).items()],
                params=[Param(k, str(v)) for k, v in (params or {}).items()],
                tags=[RunTag(k, str(v)) for k, v in (tags or {}).items()],
                synchronous=True,
            ),
        )

    def log_points(
        self,
        run_id: str,
        points: Sequence[MetricPoint],
        tags: Mapping[str, Any] | None = None,
        params: Mapping[str, Any] | None = None,
        metrics: Mapping[str, float] | None = None,
    ) -> None:
        """Step metrics, batched; ``tags``, ``params`` and final ``metrics`` (step 0) go in
        the first batch, so a trial's whole update is one call when it has under 1000."""
        from mlflow.entities import Metric, Param, RunTag

        now = int(time.time() * 1000)
        batch = [Metric(p.name, float(p.value), now, p.step) for p in points]
        batch += [Metric(k, float(v), now, 0) for k, v in (metrics or {}).items()]
        extra = [RunTag(k, str(v)) for k, v in (tags or {}).items()]
        values = [Param(k, str(v)) for k, v in (params or {}).items()]
        for i in range(0, max(len(batch), 1), _BATCH):
            chunk = batch[i : i + _BATCH]
            log = functools.partial(
                self.client.log_batch,
                run_id,
                metrics=chunk,
                params=values,
                tags=extra,
                synchronous=True,
            )
            self._call("log metrics", log)
            extra, values = [], []

    def last_steps(self, run_id: str) -> dict[str, int]:
        """The last logged step of every metric of the run (a final value counts, at 0)."""
        run = self._call("run", lambda: self.client.get_run(run_id))
        history = self.history(run_id, list(run.data.metrics))
        return {name: points[-1][0] for name, points in history.items() if points}

    def history(self, run_id: str, names: Iterable[str]) -> dict[str, list[tuple[int, float]]]:
        """The logged (step, value) points of each metric, in step order."""
        out = {}
        for name in names:
            history: list[Any] = self._call(
                "metric history", functools.partial(self.client.get_metric_history, run_id, name)
            )
            points = sorted((m.step, m.value) for m in history)
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
        self._call("dataset inputs", lambda: self._log_inputs(run_id, inputs))

    def _log_inputs(self, run_id: str, inputs: list[Any]) -> None:
        """``log_inputs``, again when another worker created the same dataset row between
        MLflow's look-up and its insert (a unique violation): the row it made is the one
        this run then links to."""
        from mlflow.exceptions import MlflowException

        for attempt in range(3):
            try:
                self.client.log_inputs(run_id, datasets=inputs)
                return
            except MlflowException as exc:
                if attempt == 2 or not _duplicate(exc):
                    raise

    def log_file(self, run_id: str, path: Path, artifact_path: str | None = None) -> None:
        if path.is_dir():
            self._call(
                f"artifact {path.name}",
                lambda: self.client.log_artifacts(run_id, str(path), artifact_path),
            )
        else:
            self._call(
                f"artifact {path.name}",
                lambda: self.client.log_artifact(run_id, str(path), artifact_path),
            )

    def log_text(self, run_id: str, text: str, artifact_file: str) -> None:
        self._call(
            f"artifact {artifact_file}", lambda: self.client.log_text(run_id, text, artifact_file)
        )

    def set_model_alias(self, name: str, alias: str, version: str) -> None:
        """Point alias ``alias`` of registered model ``name`` at ``version``."""
        self._call(
            f"alias {alias!r} of model {name!r}",
            lambda: self.client.set_registered_model_alias(name, alias, version),
        )

    def register_model(
        self, run_id: str, artifact_path: str, name: str, tags: Mapping[str, str] | None = None
    ) -> str:
        """Register ``runs:/RUN/ARTIFACT_PATH`` as a version of model ``name``: an existing
        version from the same run is returned, not registered again (several workers, retries)."""
        from mlflow.exceptions import MlflowException

        def register() -> str:
            for version in self.client.search_model_versions(f"name = '{name}'"):
                if version.run_id == run_id:
                    return str(version.version)
            try:
                self.client.create_registered_model(name)
            except MlflowException as exc:
                if "already exists" not in str(exc.message):
                    raise
            run = self.client.get_run(run_id)
            source = f"{run.info.artifact_uri.rstrip('/')}/{artifact_path}"
            version = self.client.create_model_version(
                name, source=source, run_id=run_id, tags=dict(tags or {})
            )
            return str(version.version)

        return self._call(f"register model {name!r}", register)

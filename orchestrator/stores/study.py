"""The stores of a sweep: where they are, whether they answer, opening its Optuna study.

Stores are chosen by URL, never by code: the sweep file's ``storage`` section, else the
environment (``FTSWEEP_OPTUNA_STORAGE``, ``MLFLOW_TRACKING_URI``), else the embedded default
under ``mlruns/`` (``FTSWEEP_RUNS_DIR`` moves it): ``sqlite:///mlruns/optuna.db`` and
``sqlite:///mlruns/mlflow.db`` with artifacts in ``mlruns/artifacts``. An Optuna URL of the form
``journal:PATH`` uses a JournalFile storage (several local workers without a database server).

Before the first trial :func:`check_stores` makes sure the stores answer: an ``http(s)://``
MLflow tracking server gets one ``GET /health`` (5 s, two tries), a PostgreSQL or MySQL URL a
TCP connect and a driver connect with a 5 s timeout, so a store that is down is one line and
exit 1 in seconds instead of minutes of retries. :func:`bound_mlflow_retries` bounds MLflow's
own HTTP retries for the rest of the run, unless the user set them.
"""

from __future__ import annotations

import os
import secrets
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestrator.config import SweepSpec
from orchestrator.core.attrs import StudyAttrs
from orchestrator.core.errors import StoreUnreachableError
from orchestrator.core.urls import bare_url, mask_secret, masked_url, sqlite_path
from orchestrator.stores.ledger import worker_id

if TYPE_CHECKING:
    import optuna

__all__ = [
    "MLFLOW_HTTP_DEFAULTS",
    "Stores",
    "bound_mlflow_retries",
    "check_stores",
    "new_rdb",
    "open_study",
    "resolve_stores",
    "storage",
]

#: MLflow's HTTP client settings ftsweep uses unless the environment sets them: MLflow's own
#: (7 retries, back-off factor 2, 120 s a request) spend minutes on a server that is down
MLFLOW_HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
}
_DATABASES = ("postgresql", "postgres", "mysql", "mariadb")
_DEFAULT_PORTS = {"postgresql": 5432, "mysql": 3306, "mariadb": 3306}
#: drivers known to take ``connect_timeout`` (seconds) as a connect argument
_TIMEOUT_DRIVERS = frozenset({"psycopg2", "psycopg", "pymysql", "mysqldb"})


@dataclass(frozen=True)
class Stores:
    optuna: str
    mlflow: str
    artifacts: Path | None  # None when the MLflow server decides
    workdir: Path  # backend job folders, ledger files

    def backend_dir(self, backend: str) -> Path:
        """The folder a backend named ``backend`` keeps its own files in (its ``workdir``)."""
        return self.workdir / "backends" / backend


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
        if (path := sqlite_path(url)) is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
    return Stores(optuna_url, mlflow_uri, artifacts, root)


def bound_mlflow_retries() -> None:
    """Bound MLflow's own HTTP retries and timeout in this process
    (:data:`MLFLOW_HTTP_DEFAULTS`), leaving any the user has set."""
    for name, value in MLFLOW_HTTP_DEFAULTS.items():
        os.environ.setdefault(name, value)


def check_stores(
    stores: Stores,
    *,
    mlflow: bool = True,
    timeout: float = 5.0,
    tries: int = 2,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Raise :class:`StoreUnreachableError` when a store of the sweep does not answer: the
    MLflow tracking server (``http(s)://``; skipped with ``mlflow=False``) or a database
    URL of either store. Creates nothing; SQLite and journal files are not probed."""
    if mlflow and stores.mlflow.startswith(("http://", "https://")):
        _probe_tracking_server(stores.mlflow, timeout, tries, sleep)
    for what, url in (("Optuna storage", stores.optuna), ("MLflow store", stores.mlflow)):
        if url.split(":", 1)[0].split("+", 1)[0] in _DATABASES:
            _probe_database(what, url, timeout)


def _why(exc: BaseException, timeout: float) -> str:
    """A failed connection in a few words."""
    import ssl
    from urllib.error import URLError

    reason: Any = exc.reason if isinstance(exc, URLError) else exc
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused"
    if isinstance(reason, socket.gaierror):
        return "the host name does not resolve"
    if isinstance(reason, TimeoutError):
        return f"no answer within {timeout:g} s"
    if isinstance(reason, ssl.SSLError):
        return f"TLS failed ({getattr(reason, 'reason', None) or reason})"
    text = str(reason).splitlines()[0] if str(reason) else type(reason).__name__
    return text[:200]


def _probe_tracking_server(
    uri: str, timeout: float, tries: int, sleep: Callable[[float], None]
) -> None:
    import ssl
    from urllib.error import HTTPError
    from urllib.request import Request, urlopen

    shown = bare_url(uri)  # no user:password@: what is asked for, and shown
    context = None
    if shown.startswith("https:"):
        if os.environ.get("MLFLOW_TRACKING_INSECURE_TLS", "").lower() == "true":
            context = ssl._create_unverified_context()
        elif os.environ.get("MLFLOW_TRACKING_SERVER_CERT_PATH"):
            context = ssl.create_default_context(
                cafile=os.environ["MLFLOW_TRACKING_SERVER_CERT_PATH"]
            )
    problem = "no answer"
    for attempt in range(max(tries, 1)):
        try:
            with urlopen(Request(shown.rstrip("/") + "/health"), timeout=timeout, context=context):
                return
        except HTTPError as exc:
            if exc.code < 500:
                return  # it answers (a proxy's 404, a login page): MLflow's client says more
            problem = f"it answers HTTP {exc.code}"
        except OSError as exc:  # URLError, timeouts, TLS
            problem = _why(exc, timeout)
        if attempt + 1 < tries:
            sleep(0.5)
    raise StoreUnreachableError(
        f"cannot reach the MLflow tracking server at {shown}: {problem} "
        "(check MLFLOW_TRACKING_URI / storage.mlflow)"
    )


def _probe_database(what: str, url: str, timeout: float) -> None:
    """A TCP connect to the server, then a connect through its driver (credentials, database
    name), each within ``timeout``. A driver that is not installed is left to the store."""
    import sqlalchemy
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, SQLAlchemyError
    from sqlalchemy.pool import NullPool

    try:
        parsed = make_url(url)
    except ArgumentError:
        return  # the store itself reports a malformed URL
    shown = masked_url(url)
    host = parsed.host
    port = parsed.port or _DEFAULT_PORTS.get(parsed.get_backend_name())
    if host and not host.startswith("/") and port:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
        except OSError as exc:
            raise StoreUnreachableError(
                f"cannot reach the {what} at {shown}: {_why(exc, timeout)}"
            ) from exc
    if parsed.get_driver_name() not in _TIMEOUT_DRIVERS:
        return
    try:
        engine = sqlalchemy.create_engine(
            parsed, poolclass=NullPool, connect_args={"connect_timeout": max(1, round(timeout))}
        )
    except ImportError:
        return
    try:
        with engine.connect():
            pass
    except SQLAlchemyError as exc:
        cause = getattr(exc, "orig", None) or exc
        text = mask_secret((str(cause).strip().splitlines() or [type(cause).__name__])[0], url)
        # not chained: the driver's error carries the connection arguments, password included
        raise StoreUnreachableError(f"cannot open the {what} at {shown}: {text[:300]}") from None
    finally:
        engine.dispose()


def storage(url: str) -> Any:
    """The Optuna storage at ``url`` (``journal:PATH`` a journal file, else a database)."""
    import optuna

    if url.startswith("journal:"):
        from optuna.storages.journal import JournalFileBackend

        path = url.removeprefix("journal:")
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        return optuna.storages.JournalStorage(JournalFileBackend(path))
    return optuna.storages.RDBStorage(url, engine_kwargs={"pool_pre_ping": True})


def new_rdb(url: str) -> None:
    """Create (or migrate) the Optuna tables of the database at ``url``."""
    import optuna

    optuna.storages.RDBStorage(url).engine.dispose()


def _same_directions(spec: SweepSpec, study: optuna.Study) -> None:
    """A resumed study optimises what the sweep file names: as many objectives, each the
    same way (Optuna loads an existing study with its own directions whatever is asked)."""
    wanted = [o.direction for o in spec.objective_list]
    found = [d.name.lower() for d in study.directions]
    if found != wanted:
        from orchestrator.core.errors import SpecError

        field = "objectives" if spec.objectives is not None else "objective"
        raise SpecError(
            str(spec.source or spec.name),
            field,
            f"study {study.study_name!r} was started with {len(found)} objective(s) "
            f"({', '.join(found)}), the file names {len(wanted)} ({', '.join(wanted)}); "
            "give the sweep a new name to start another study",
        )


def open_study(
    spec: SweepSpec,
    stores: Stores,
    name: str | None = None,
    *,
    sampler: Callable[[int | None], optuna.samplers.BaseSampler],
    pruner: optuna.pruners.BasePruner,
) -> optuna.Study:
    """Create the sweep's study (``name``, default the sweep's), or load it to resume.

    ``sampler(seed)`` builds the sweep's sampler for a seed (the plan's
    :func:`orchestrator.plan.samplers.make_sampler`): an unset seed is drawn per process
    and recorded, and a resumed study's seed is shifted past its trials."""
    import optuna

    from orchestrator.stores.locks import create_aside, sqlite_init_lock

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with sqlite_init_lock(stores.optuna):  # several workers may create the store at once
        create_aside(stores.optuna, new_rdb)
        study = optuna.create_study(
            study_name=name or spec.name,
            storage=storage(stores.optuna),
            sampler=sampler(spec.sampler.seed),
            pruner=pruner,
            directions=[o.direction for o in spec.objective_list],
            load_if_exists=True,
        )
    _same_directions(spec, study)
    seed = spec.sampler.seed
    if seed is None:
        # unset: a seed of this process's own, so workers started together propose
        # different configurations
        seed = secrets.randbelow(2**31)
    elif study.trials:
        # Samplers are not stored with the study: a resumed one seeded as before would
        # replay the same configurations. Seed it past the trials already there.
        seed = (seed + len(study.trials)) % 2**32
    if seed != spec.sampler.seed:
        study.sampler = sampler(seed)
    study.set_user_attr(f"{StudyAttrs.SAMPLER_SEED}.{worker_id()}", seed)
    return study

"""Stores, samplers and pruners: opening the Optuna study of a sweep.

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

import importlib.util
import math
import os
import secrets
import socket
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestrator.attrs import StudyAttrs
from orchestrator.config import SweepSpec
from orchestrator.engine.ledger import worker_id
from orchestrator.errors import SpecError, StoreUnreachableError
from orchestrator.space import SearchSpace, pinned_epochs

if TYPE_CHECKING:
    import optuna

__all__ = [
    "DEFAULT_SAMPLER_LABEL",
    "DEFAULT_START_TRIALS",
    "DEFAULT_START_TRIALS_DERIVED",
    "MLFLOW_HTTP_DEFAULTS",
    "Stores",
    "bound_mlflow_retries",
    "check_stores",
    "default_sampler",
    "make_pruner",
    "make_sampler",
    "open_study",
    "resolve_stores",
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
    from urllib.parse import urlsplit, urlunsplit
    from urllib.request import Request, urlopen

    parts = urlsplit(uri)
    host = parts.hostname or ""
    netloc = f"[{host}]" if ":" in host else host
    if parts.port is not None:
        netloc += f":{parts.port}"
    shown = urlunsplit((parts.scheme, netloc, parts.path, "", ""))  # no user:password@
    context = None
    if parts.scheme == "https":
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
    shown = parsed.render_as_string(hide_password=True)
    secret = parsed.password
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
        text = (str(cause).strip().splitlines() or [type(cause).__name__])[0]
        if secret:
            text = text.replace(str(secret), "***")
        # not chained: the driver's error carries the connection arguments, password included
        raise StoreUnreachableError(f"cannot open the {what} at {shown}: {text[:300]}") from None
    finally:
        engine.dispose()


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


#: ``sampler: auto``: scrambled Sobol points for the trials TPE would draw at random (its
#: ``n_startup_trials``), then TPE (measured in ``benchmarks/bench_search.py``; see
#: ``docs/search.md``)
DEFAULT_START_TRIALS = 10
#: the same when earlier epochs are told as trials (they count, as they do for TPE): with
#: 2-4 epochs each job finishes 3 trials, so TPE takes over after 3 jobs instead of 4
DEFAULT_START_TRIALS_DERIVED = 8
#: the name ``benchmarks/bench_search.py`` gives the default's configuration
DEFAULT_SAMPLER_LABEL = "auto (qmc start, then tpe)"


def default_sampler(
    seed: int | None, most_epochs: int | None = None
) -> optuna.samplers.BaseSampler:
    """``sampler: auto``: scrambled Sobol points until :data:`DEFAULT_START_TRIALS` trials
    have finished (derived ones included), then TPE. A seed seeds both, reproducibly.

    ``most_epochs`` (given when earlier epochs are told as trials): every job trains that
    many epochs (the space's most), the start's and TPE's alike, so each also measures every
    smaller epoch count; TPE still models the epochs from all those trials (a proposal of 2
    epochs is measured on the way to 4). The start is then
    :data:`DEFAULT_START_TRIALS_DERIVED` finished trials."""
    import optuna

    from orchestrator.engine.samplers import StartThen

    if seed is None:  # unseeded, as Optuna would (it warns about it; nothing is wrong)
        seed = secrets.randbelow(2**31)
    with warnings.catch_warnings():  # QMCSampler is "experimental" since 3.0: noise to users
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        start = optuna.samplers.QMCSampler(
            scramble=True, seed=seed, warn_independent_sampling=False
        )
    derived = most_epochs is not None
    n_start = DEFAULT_START_TRIALS_DERIVED if derived else DEFAULT_START_TRIALS
    then = optuna.samplers.TPESampler(n_startup_trials=n_start, seed=seed + 1)
    pinned = {"n_epochs": most_epochs} if derived else None
    return StartThen(start, then, n_start, pinned, pin_then=derived)


def make_sampler(spec: SweepSpec, space: SearchSpace, source: str) -> optuna.samplers.BaseSampler:
    import optuna

    name, seed = spec.sampler.name, spec.sampler.seed
    if name == "auto":
        return default_sampler(seed, pinned_epochs(space, spec.sampler))
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
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.QMCSampler(
                seed=secrets.randbelow(2**31) if seed is None else seed,
                warn_independent_sampling=False,
            )
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


def open_study(
    spec: SweepSpec, space: SearchSpace, stores: Stores, name: str | None = None
) -> optuna.Study:
    """Create the sweep's study (``name``, default the sweep's), or load it to resume."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    from orchestrator.tracking.client import create_aside, sqlite_init_lock

    source = str(spec.source or spec.name)
    with sqlite_init_lock(stores.optuna):  # several workers may create the store at once
        create_aside(stores.optuna, _new_rdb)
        study = optuna.create_study(
            study_name=name or spec.name,
            storage=_storage(stores.optuna),
            sampler=make_sampler(spec, space, source),
            pruner=make_pruner(spec, space, source),
            direction=spec.objective.direction,
            load_if_exists=True,
        )
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
        seeded = spec.model_copy(update={"sampler": spec.sampler.model_copy(update={"seed": seed})})
        study.sampler = make_sampler(seeded, space, source)
    study.set_user_attr(f"{StudyAttrs.SAMPLER_SEED}.{worker_id()}", seed)
    return study

"""PostgreSQL and an MLflow tracking server for the scale-out tests.

``postgres_server``: ``FTSWEEP_TEST_POSTGRES_URL`` when set (``.ci/run`` starts a cluster),
else a throwaway cluster of this session when ``initdb``/``pg_ctl`` are found, else the tests
are skipped; with ``CI`` set a missing PostgreSQL is a failure, not a skip. Each test gets a
fresh database (``postgres_db``), so tests are independent.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.scaleout.compose import Native
from tests.scaleout.pg import (
    MlflowServer,
    create_database,
    free_port,
    pg_bin,
    start_cluster,
    start_mlflow,
)

#: the password compose.yaml's URLs are interpolated with: the test cluster trusts loopback,
#: so it is ignored by the server, and it must never show in an error or a log
PASSWORD = "pg-secret-4f1d2c9b"
_COUNTER = itertools.count()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """A PostgreSQL server URL (database ``postgres``), for the whole session."""
    url = os.environ.get("FTSWEEP_TEST_POSTGRES_URL")
    if url:
        yield url
        return
    bin_dir = pg_bin()
    if bin_dir is None:
        why = "PostgreSQL not found (initdb/pg_ctl; apt-get install postgresql)"
        if os.environ.get("CI"):
            pytest.fail(f"{why}: CI must run the scale-out tests")
        pytest.skip(why)
    cluster = start_cluster(bin_dir)
    try:
        yield cluster.url
    finally:
        cluster.stop()


@pytest.fixture
def postgres_db(postgres_server: str) -> Callable[[str], str]:
    """``make(label)``: a fresh database on the server; returns its URL."""

    def make(label: str) -> str:
        return create_database(postgres_server, f"t{os.getpid()}_{next(_COUNTER)}_{label}")

    return make


NATIVE_ENV = {"POSTGRES_USER": "postgres", "POSTGRES_PASSWORD": PASSWORD, "MLFLOW_WORKERS": "1"}


@pytest.fixture
def native() -> Native:
    """compose.yaml with this test's variables."""
    return Native(dict(NATIVE_ENV))


def _mlflow(postgres_server: str, folder: Path, label: str) -> MlflowServer:
    """compose.yaml's MLflow server on a free loopback port, its store a fresh database."""
    from sqlalchemy.engine import make_url

    name = f"t{os.getpid()}_{next(_COUNTER)}_{label}"
    database = make_url(create_database(postgres_server, name)).database
    assert database is not None
    port = free_port()
    argv = Native(dict(NATIVE_ENV)).mlflow_argv(
        port, postgres_server, database, folder / "mlartifacts"
    )
    return start_mlflow(argv, port, folder / "mlflow-server.log")


@pytest.fixture(scope="session")
def mlflow_server(
    postgres_server: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[MlflowServer]:
    """One MLflow server for the session (each test logs to its own experiments)."""
    server = _mlflow(postgres_server, tmp_path_factory.mktemp("mlflow"), "mlflow")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def own_mlflow_server(postgres_server: str, tmp_path: Path) -> Iterator[MlflowServer]:
    """An MLflow server of this test's own (it may stop it)."""
    server = _mlflow(postgres_server, tmp_path, "mlflow")
    try:
        yield server
    finally:
        server.stop()

"""Store URLs as shown to users (``orchestrator.core.urls``), and error messages of the stores
that name a URL without its password: a real SQLAlchemy, a real PostgreSQL driver against a
port nobody listens on, a real MLflow client."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.core.errors import OrchestratorError, StoreUnreachableError
from orchestrator.core.urls import bare_url, mask_secret, masked_url, sqlite_path


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        # SQLAlchemy renders database URLs (hide_password=True)
        ("postgresql://ftsweep:s3cret@db:5432/sw", "postgresql://ftsweep:***@db:5432/sw"),
        ("postgresql+psycopg://u:p%40ss%2Fw%3Ard@db/sw", "postgresql+psycopg://u:***@db/sw"),
        ("mysql+pymysql://u:p#ss?w@db/sw", "mysql+pymysql://u:***@db/sw"),
        ("postgresql://u:@db/sw", "postgresql://u:***@db/sw"),
        ("sqlite://user:s3cr3t-pw@/:memory:", "sqlite://user:***@/%3Amemory%3A"),
        # an unencoded @ in the password: masked up to the authority's last @
        ("postgresql://u:p@ss@db/sw", "postgresql://u:***@db/sw"),
        # no password: unchanged, a database user name included
        ("postgresql://ftsweep@db/sw", "postgresql://ftsweep@db/sw"),
        ("sqlite:///my project %1/optuna.db", "sqlite:///my project %1/optuna.db"),
        ("sqlite:////abs/optuna.db?timeout=5", "sqlite:////abs/optuna.db?timeout=5"),
        ("journal:/runs/optuna.log", "journal:/runs/optuna.log"),
        ("journal:relative/optuna.log", "journal:relative/optuna.log"),
        ("mlruns", "mlruns"),
        ("databricks", "databricks"),
        # http(s) tracking URIs: the text kept, the password (or a lone user name, a token) not
        ("http://u:hunter2@host:5000/mlflow?x=1", "http://u:***@host:5000/mlflow?x=1"),
        ("https://u:p%40ss@[::1]:8443/", "https://u:***@[::1]:8443/"),
        ("https://ghp_token123@host/", "https://***@host/"),
        ("http://host:5000", "http://host:5000"),
    ],
)
def test_masked_url(url: str, shown: str) -> None:
    assert masked_url(url) == shown


@pytest.mark.parametrize(
    ("url", "secrets"),
    [
        ("postgresql://u:p%40ss%2Fw%3Ard@db/sw", ["p%40ss%2Fw%3Ard", "p@ss/w:rd"]),
        ("postgresql://u:p@ss@db/sw", ["p@ss"]),
        ("mysql://u:p#ss?w@db/sw", ["p#ss?w"]),
        ("http://u:hunter2@host/", ["hunter2"]),
        ("https://ghp_token123@host/", ["ghp_token123"]),
    ],
)
def test_no_spelling_of_the_password_survives(url: str, secrets: list[str]) -> None:
    for secret in secrets:
        assert secret not in masked_url(url)
        message = f'could not connect as u with "{secret}" to {url} ({secret})'
        masked = mask_secret(message, url)
        assert secret not in masked and "***" in masked


def test_mask_secret_leaves_messages_without_a_password_alone() -> None:
    text = "connection refused: postgresql://u@db/sw"
    assert mask_secret(text, "postgresql://u@db/sw") == text
    assert mask_secret(text, "journal:/x.log") == text


@pytest.mark.parametrize(
    ("url", "path"),
    [
        ("sqlite:///optuna.db", Path("optuna.db")),
        ("sqlite:////abs/runs/optuna.db", Path("/abs/runs/optuna.db")),
        ("sqlite:///my project %1/optuna.db", Path("my project %1/optuna.db")),
        ("sqlite:///a%20b.db", Path("a b.db")),  # the file SQLAlchemy opens
        ("sqlite+pysqlite:///x.db?timeout=5", Path("x.db")),
        ("sqlite:///:memory:", None),
        ("sqlite://", None),
        ("sqlite://user:pw@/:memory:", None),
        ("postgresql://u:p@db/sw", None),
        ("journal:/runs/optuna.log", None),
        ("http://host/sqlite.db", None),
    ],
)
def test_sqlite_path(url: str, path: Path | None) -> None:
    assert sqlite_path(url) == path


#: URLs whose reading (the SQLite file, a password or none) must be SQLAlchemy's own
READ_AS_SQLALCHEMY_DOES = [
    "sqlite:///optuna.db",
    "sqlite:////abs/runs/optuna.db",
    "sqlite:///my project %1/optuna.db",
    "sqlite:///a%20b.db?timeout=5&uri=true",
    "sqlite+pysqlite:///x.db",
    "SQLite:///x.db",
    "sqlitex:///x.db",
    "sqlite://localhost/x.db",
    "sqlite://host:12/x.db",
    "sqlite://host:port/x.db",
    "sqlite://u:p%40w@/x.db",
    "sqlite://u@/x.db",
    "sqlite:///:memory:",
    "sqlite://",
    "postgresql://u:p@ss@db/sw",
    "postgresql://u@h:p@x/db",
    "postgresql://ftsweep@[::1]:5432/sw",
    "mysql+pymysql://u:p#ss?w@db/sw",
    "not a url",
]


@pytest.mark.parametrize("url", READ_AS_SQLALCHEMY_DOES)
def test_sqlite_urls_are_read_as_sqlalchemy_reads_them(url: str) -> None:
    """The file and the password are found without SQLAlchemy, and agree with its reading
    (``make_url``) wherever it reads the URL at all."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        parsed = None
    database = parsed.database if parsed is not None else None
    sqlite = parsed is not None and parsed.get_backend_name() == "sqlite"
    expected = Path(database) if sqlite and database and database != ":memory:" else None
    assert sqlite_path(url) == expected
    if parsed is not None and parsed.password is None:
        assert masked_url(url) == url
    if parsed is not None and parsed.password:
        assert parsed.password not in mask_secret(f"as {parsed.password}", url)


def test_a_sqlite_url_is_read_without_importing_sqlalchemy() -> None:
    """``run`` on a finished sweep reads a SQLite store: finding its file and showing its URL
    import no SQLAlchemy (a third of a second)."""
    code = (
        "import sys\n"
        "from orchestrator.core.urls import masked_url, sqlite_path\n"
        "url = 'sqlite:////runs/optuna.db'\n"
        "assert sqlite_path(url) is not None and masked_url(url) == url\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'sqlalchemy'))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("url", "bare"),
    [
        ("http://u:hunter2@host:5000/mlflow?x=1#f", "http://host:5000/mlflow"),
        ("https://token@[::1]:8443/", "https://[::1]:8443/"),
        ("http://host", "http://host"),
    ],
)
def test_bare_url(url: str, bare: str) -> None:
    assert bare_url(url) == bare


def _dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


#: why the PostgreSQL tests skip, and how to run them
NO_PSYCOPG = "needs psycopg: pip install -e '.[postgres]' (make test installs it)"


def test_the_advisory_lock_names_its_database_without_the_password() -> None:
    pytest.importorskip("psycopg", reason=NO_PSYCOPG)
    from orchestrator.stores.locks import advisory_lock

    url = f"postgresql+psycopg://ftsweep:p%40ss%2Fw0rd@127.0.0.1:{_dead_port()}/sw"
    with pytest.raises(StoreUnreachableError) as info, advisory_lock(url, "k", "the lock"):
        pass
    message = str(info.value)
    assert message.startswith("cannot take the lock on postgresql+psycopg://ftsweep:***@127.0.0.1")
    assert "p%40ss" not in message and "p@ss/w0rd" not in message
    assert "\n" not in message


def test_reading_a_store_names_it_without_the_password(tmp_path: Path) -> None:
    pytest.importorskip("psycopg", reason=NO_PSYCOPG)
    from orchestrator.config import load_spec
    from orchestrator.stores.read import generations

    port = _dead_port()
    spec = tmp_path / "s.yaml"
    spec.write_text(
        "name: s\n"
        "data: {train: train.jsonl}\n"
        "backend: {name: openai, model: gpt-4o-mini}\n"
        "objective: {metric: train_loss}\n"
        f"storage: {{optuna: 'postgresql://u:hunter%232@127.0.0.1:{port}/sw'}}\n"
    )
    with pytest.raises(OrchestratorError) as info:
        generations(load_spec(spec))
    message = str(info.value)
    assert message.startswith(f"cannot read the Optuna store postgresql://u:***@127.0.0.1:{port}")
    assert "hunter" not in message


def test_a_tracking_server_that_does_not_answer_is_named_without_the_password(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from orchestrator.workflows.diagnose import from_mlflow_run

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    url = f"http://ftsweep:hunter2@127.0.0.1:{_dead_port()}"
    with pytest.raises(StoreUnreachableError) as info:
        from_mlflow_run("0" * 32, url)
    message = str(info.value)
    assert message.startswith("MLflow at http://ftsweep:***@127.0.0.1:")
    assert "hunter2" not in message
    assert info.value.__cause__ is None and info.value.__suppress_context__  # MLflow's names it

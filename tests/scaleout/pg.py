"""A throwaway PostgreSQL cluster on loopback, and an MLflow tracking server on top of it.

Used by the scale-out tests' fixtures (``conftest.py``); ``.ci/run`` starts the same kind of
cluster in bash and hands its URL over in ``FTSWEEP_TEST_POSTGRES_URL``.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Cluster", "MlflowServer", "create_database", "free_port", "pg_bin", "start_cluster"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pg_bin() -> Path | None:
    """The folder of ``initdb`` and ``pg_ctl``: on PATH, else Debian's newest."""
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return Path(found).resolve().parent
    folders = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_version)
    for folder in reversed(folders):
        if (Path(folder) / "initdb").exists() and (Path(folder) / "pg_ctl").exists():
            return Path(folder)
    return None


def _version(folder: str) -> tuple[int, ...]:
    part = Path(folder).parent.name
    return tuple(int(x) for x in part.split(".") if x.isdigit())


@dataclass
class Cluster:
    url: str  # postgresql://postgres@127.0.0.1:PORT/postgres
    root: Path
    pid: int

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGINT)  # fast shutdown
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and _alive(self.pid):
            time.sleep(0.05)
        shutil.rmtree(self.root, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _as_user() -> tuple[list[str], int | None, int | None]:
    """initdb refuses root: run the server as ``postgres`` (or ``nobody``) then."""
    if os.geteuid() != 0:
        return [], None, None
    for name in ("postgres", "nobody"):
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            continue
        return ["runuser", "-u", name, "--"], entry.pw_uid, entry.pw_gid
    raise RuntimeError("running as root and no postgres/nobody user for the server")


def start_cluster(bin_dir: Path) -> Cluster:
    """initdb in a temporary folder, then ``pg_ctl start`` on a free loopback port."""
    root = Path(tempfile.mkdtemp(prefix="ftsweep-pg-"))
    prefix, uid, gid = _as_user()
    if uid is not None and gid is not None:
        os.chown(root, uid, gid)
    port = free_port()
    data = root / "data"
    run = dict(check=True, capture_output=True, text=True, timeout=120)
    subprocess.run(
        [*prefix, str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres",
         "--auth=trust", "-E", "UTF8", "--no-instructions"],
        **run,
    )  # fmt: skip
    options = (
        f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off "
        "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
    )
    subprocess.run(
        [*prefix, str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(root / "server.log"),
         "-w", "-t", "60", "-o", options, "start"],
        **run,
    )  # fmt: skip
    pid = int((data / "postmaster.pid").read_text().splitlines()[0])
    return Cluster(f"postgresql://postgres@127.0.0.1:{port}/postgres", root, pid)


def create_database(server_url: str, name: str) -> str:
    """``CREATE DATABASE name`` on the server; returns the new database's URL."""
    import psycopg
    from sqlalchemy.engine import make_url

    url = make_url(server_url)
    with psycopg.connect(
        host=url.host, port=url.port, user=url.username, password=url.password,
        dbname=url.database or "postgres", autocommit=True,
    ) as conn:  # fmt: skip
        conn.execute(f'CREATE DATABASE "{name}"')  # type: ignore[arg-type]
    return url.set(database=name).render_as_string(hide_password=False)


@dataclass
class MlflowServer:
    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def stop(self) -> None:
        """SIGTERM to the mlflow process (it stops its uvicorn workers), then wait."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)


def start_mlflow(argv: Sequence[str], port: int, log: Path, timeout: float = 120.0) -> MlflowServer:
    """Start ``mlflow server`` (``argv`` after the program name), poll ``/health``."""
    env = {**os.environ, "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true"}
    mlflow_bin = Path(sys.executable).with_name("mlflow")
    out = open(log, "wb")  # noqa: SIM115 (the server writes to it while it runs)
    process = subprocess.Popen(
        [str(mlflow_bin), *argv], stdout=out, stderr=subprocess.STDOUT, env=env,
        start_new_session=True,
    )  # fmt: skip
    out.close()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise RuntimeError(
                f"mlflow server exited {process.returncode}: {log.read_text()[-2000:]}"
            )
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2):
                return MlflowServer(url, process, log)
        except OSError:
            pass
        if time.monotonic() > deadline:
            server = MlflowServer(url, process, log)
            server.stop()
            raise RuntimeError(
                f"mlflow server not healthy in {timeout:g} s: {log.read_text()[-2000:]}"
            )
        time.sleep(0.2)


@contextlib.contextmanager
def mlflow_server(argv: Sequence[str], port: int, log: Path) -> Iterator[MlflowServer]:
    server = start_mlflow(argv, port, log)
    try:
        yield server
    finally:
        server.stop()

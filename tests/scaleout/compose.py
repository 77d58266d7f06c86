"""compose.yaml, read as the scale-out tests run it natively: the same commands and variables,
with the services' addresses replaced by loopback ones. A change to compose.yaml is therefore
exercised by CI even where no docker engine runs."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "compose.yaml"
_VAR = re.compile(r"\$\{(\w+)(?:(:?[-?])([^}]*))?\}|\$\$")


def services() -> dict[str, Any]:
    return dict(yaml.safe_load(COMPOSE.read_text())["services"])


def interpolate(text: str, env: Mapping[str, str]) -> str:
    """Compose's ``${VAR}``, ``${VAR:-default}``, ``${VAR:?message}`` and ``$$``."""

    def one(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name, op, arg = m.group(1), m.group(2), m.group(3)
        value = env.get(name)
        if op in (":-", "-"):
            return value if value or (op == "-" and value is not None) else arg
        if op in (":?", "?"):
            if not value:
                raise KeyError(f"compose.yaml needs {name}: {arg}")
            return value
        return value or ""

    return _VAR.sub(one, text)


def _database_url(url: str, server: str, database: str) -> str:
    """``url`` (compose's, host ``postgres``) on the test's server and database."""
    ours = make_url(server)
    theirs = make_url(url)
    assert theirs.host == "postgres", url
    moved = theirs.set(host=ours.host, port=ours.port, database=database)
    return moved.render_as_string(hide_password=False)


@dataclass
class Native:
    """compose.yaml's mlflow and worker services, on loopback."""

    env: dict[str, str]  # the variables compose.yaml is interpolated with

    def mlflow_argv(self, port: int, server: str, database: str, artifacts: Path) -> list[str]:
        """The mlflow service's command, after ``mlflow``, and its backend store URI."""
        svc = services()["mlflow"]
        argv = [interpolate(str(a), self.env) for a in svc["command"]]
        assert argv[:2] == ["mlflow", "server"], argv
        out = []
        for arg in argv[1:]:
            if arg.startswith("--host="):
                arg = "--host=127.0.0.1"
            elif arg.startswith("--port="):
                arg = f"--port={port}"
            elif arg.startswith("--artifacts-destination="):
                arg = f"--artifacts-destination={artifacts}"
            out.append(arg)
        store = interpolate(svc["environment"]["MLFLOW_BACKEND_STORE_URI"], self.env)
        out.append(f"--backend-store-uri={_database_url(store, server, database)}")
        return out

    def worker_env(self, server: str, database: str, mlflow_url: str) -> dict[str, str]:
        """The worker service's environment: the variables it sets (addresses moved to
        loopback) and those it passes through from ``self.env``."""
        out: dict[str, str] = {}
        for name, value in services()["worker"]["environment"].items():
            if value is None:  # passed through
                if self.env.get(name):
                    out[name] = self.env[name]
                continue
            text = interpolate(str(value), self.env)
            if name == "FTSWEEP_OPTUNA_STORAGE":
                text = _database_url(text, server, database)
            elif name == "MLFLOW_TRACKING_URI":
                assert text == "http://mlflow:5000", text
                text = mlflow_url
            out[name] = text
        return out

    def worker_command(self, sweep: Path) -> list[str]:
        cmd = [interpolate(str(a), {**self.env, "SWEEP": str(sweep)}) for a in _worker_cmd()]
        assert cmd[:2] == ["ftsweep", "run"], cmd
        return cmd


def _worker_cmd() -> list[str]:
    return list(services()["worker"]["command"])

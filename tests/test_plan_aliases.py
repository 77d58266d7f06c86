"""A sweep file may name ``FAMILY@latest`` as ``backend.model``: the plan treats it as its
family offline (``validate``/``space``/``estimate`` reach no provider), and the local trainer,
which has no model list, refuses it with one line (exit 2)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from orchestrator.apisim.server import SimServer
from tests.apisim.fixtures import request_log
from tests.conftest import Result
from tests.test_plan_checks import _refused, _sweep, server, stores

__all__ = ["server", "stores"]

Cli = Callable[..., Result]


@pytest.mark.parametrize("command", ["space", "estimate"])
def test_an_alias_plans_offline_as_its_family(
    cli: Cli, tmp_path: Path, stores: Path, server: SimServer, command: str
) -> None:
    alias = _sweep(tmp_path, "openai", model="gpt-4o-mini@latest")
    r = cli(command, alias)
    assert r.code == 0, r.err
    if command == "estimate":
        plain = tmp_path / "plain.yaml"
        plain.write_text(alias.read_text().replace("gpt-4o-mini@latest", "gpt-4o-mini"))
        expected = cli(command, plain).out
        assert r.out == expected.replace("gpt-4o-mini", "gpt-4o-mini@latest")
        assert "$" in r.out  # priced as gpt-4o-mini
    assert request_log(server) == []
    assert not stores.exists()


def test_an_alias_is_refused_by_the_local_backend(
    cli: Cli, tmp_path: Path, stores: Path, tiny_model: Path
) -> None:
    spec = _sweep(tmp_path, "local", model="gpt-4o-mini@latest")
    line = (
        f"{spec}: backend.model: model 'gpt-4o-mini@latest' is an alias, and the local trainer "
        "has no model list to resolve it: name a model folder or a built-in (tiny, smollm2-135m)"
    )
    _refused(cli("estimate", spec), line, stores)
    _refused(cli("run", spec), line, stores)

"""The shipped contract suite (:mod:`orchestrator.testing.contract`) against the built-in backends.

Each backend contributes a fixture named ``<name>_case`` returning a
:class:`orchestrator.testing.BackendCase` (``local_case`` in ``tests/backends/conftest.py``,
``openai_case`` and ``azure_case`` in ``tests/apisim/fixtures.py``); adding its name to
``BACKENDS`` runs the whole suite against it.
"""

from __future__ import annotations

import pytest

from orchestrator.testing import BackendCase
from orchestrator.testing.contract import *  # noqa: F403

BACKENDS = ["local", "openai", "azure", "azure_dated"]


@pytest.fixture(params=BACKENDS)
def backend_case(request: pytest.FixtureRequest) -> BackendCase:
    built: BackendCase = request.getfixturevalue(f"{request.param}_case")
    return built

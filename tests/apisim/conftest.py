"""Fixtures of the simulator tests (defined in :mod:`tests.apisim.fixtures`)."""

from __future__ import annotations

from tests.apisim.fixtures import chat_data, sim_server

__all__ = ["chat_data", "sim_server"]

"""The reliability tests use the engine tests' stores and tiny-model sweeps."""

from tests.engine.conftest import make_sweep, runs_dir

__all__ = ["make_sweep", "runs_dir"]

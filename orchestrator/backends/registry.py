"""Backend discovery through the entry-point group ``ftsweep.backends``.

Built-in backends register the same way as third-party ones: a line in ``pyproject.toml``::

    [project.entry-points."ftsweep.backends"]
    mybackend = "mypackage.module:MyBackend"
"""

from __future__ import annotations

from importlib.metadata import EntryPoint, entry_points

from orchestrator.backends.base import Backend
from orchestrator.core.errors import UnknownBackendError

__all__ = ["GROUP", "available", "load"]

GROUP = "ftsweep.backends"


def available() -> dict[str, EntryPoint]:
    """Registered backends by name (nothing is imported)."""
    return {ep.name: ep for ep in entry_points(group=GROUP)}


def load(name: str) -> type[Backend]:
    """The backend class registered as ``name``; an unknown name lists the known ones."""
    eps = available()
    if name not in eps:
        known = ", ".join(sorted(eps)) or "none installed"
        raise UnknownBackendError(f"unknown backend {name!r}; known: {known}")
    cls = eps[name].load()
    if not (isinstance(cls, type) and issubclass(cls, Backend)):
        raise UnknownBackendError(f"entry point {name!r} is not a Backend subclass")
    return cls

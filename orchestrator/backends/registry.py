"""Backend discovery through the entry-point group ``ftsweep.backends``.

Built-in backends register the same way as third-party ones: a line in ``pyproject.toml``::

    [project.entry-points."ftsweep.backends"]
    mybackend = "mypackage.module:MyBackend"
"""

from __future__ import annotations

from importlib.metadata import EntryPoint, entry_points
from pathlib import Path

from orchestrator.backends.base import Backend, BackendOptions
from orchestrator.core.errors import BackendError, UnknownBackendError

__all__ = ["GROUP", "available", "build", "load"]

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


def build(cls: type[Backend], options: BackendOptions, *, workdir: Path) -> Backend:
    """``cls.from_options(options, workdir=workdir)``, with a backend written for the earlier
    contract (whose ``from_options`` took the options as a mapping) named as such.

    Raises:
        BackendError: ``from_options`` used the options model as a mapping (``.get``,
            ``[...]``, ``**``): one line naming the backend and the fix. Any other error of
            ``from_options`` passes through as it is.
    """
    try:
        return cls.from_options(options, workdir=workdir)
    except (AttributeError, TypeError) as exc:
        if not _used_as_mapping(exc, options):
            raise
        where = f"{cls.__module__}:{cls.__qualname__}"
        raise BackendError(
            f"backend {getattr(cls, 'name', where)!r} ({where}) was written for an earlier "
            f"ftsweep: from_options now receives a validated options model "
            f"({type(options).__name__}), not a mapping ({type(exc).__name__}: {exc}); "
            "declare its options as fields of a BackendOptions subclass set as the "
            "backend's Options and read them as attributes (options.name), see "
            "docs/backends.md"
        ) from exc


#: what code written for a mapping calls on it
_MAPPING_METHODS = frozenset({"get", "keys", "items", "values", "copy", "pop", "setdefault"})


def _used_as_mapping(exc: BaseException, options: BackendOptions) -> bool:
    """Whether ``exc`` is what using ``options`` as a mapping raises: a mapping method
    missing, not subscriptable, or not a mapping after ``**``."""
    kind, text = type(options).__name__, str(exc)
    if isinstance(exc, AttributeError):
        missing = getattr(exc, "name", None) or text.rpartition(" ")[2].strip("'\"")
        about = getattr(exc, "obj", None) is options or f"'{kind}' object has no" in text
        return about and missing in _MAPPING_METHODS
    if isinstance(exc, TypeError):
        return text.endswith(f"must be a mapping, not {kind}") or (
            f"'{kind}' object is not subscriptable" in text
        )
    return False

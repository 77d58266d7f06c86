"""Every module imports on its own, nothing imports in a cycle, and layers only call down.

The layers, top to bottom (a module may import its own layer and those below), are those
of ``[tool.importlinter]`` in ``pyproject.toml`` and of ``docs/architecture.md``::

    cli                                   the only place that prints or exits
    workflows, apisim, testing            retune, schedule, learning curves, diagnose
    tracking                              MLflow: client, listener, pyfunc, recipe
    engine                                the sweep loop, trials, events
    results                               read, table, HTML
    analysis                              diagnosis, advice
    plan                                  plan, space, fingerprint, sampler and pruner
    stores                                study, ledger, locks, snapshot, read API
    backends                              the contract, local, OpenAI/Azure
    data                                  checks, formats, prepare
    catalog                               model names, prices, token counters
    config                                the sweep file
    core                                  errors, params, attrs, progress

The runtime check imports each module in a fresh interpreter (several at once); the static
checks read the imports with :mod:`ast`: for cycles, those that run when the module is
imported; for the layers, lazy ones (inside functions) too, but not ``TYPE_CHECKING`` ones
(annotations only, never executed); for the data layer, every import.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import pkgutil
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "orchestrator"

#: the optional ``local`` extra: modules that need it may fail to import without it
LOCAL_EXTRA = {"torch", "transformers", "peft", "accelerate", "gguf"}

LAYERS: tuple[tuple[str, ...], ...] = (
    ("orchestrator.cli", "orchestrator.__main__"),
    ("orchestrator.workflows", "orchestrator.apisim", "orchestrator.testing"),
    ("orchestrator.tracking",),
    ("orchestrator.engine",),
    ("orchestrator.results",),
    ("orchestrator.analysis",),
    ("orchestrator.plan",),
    ("orchestrator.stores",),
    ("orchestrator.backends",),
    ("orchestrator.evaluation",),
    ("orchestrator.data",),
    ("orchestrator.catalog",),
    ("orchestrator.config",),
    ("orchestrator.core",),
)


def _walk(folder: Path, prefix: str) -> list[str]:
    """Every module under ``folder``, found the way ``pkgutil.walk_packages`` finds them but
    without importing the packages: walk_packages imports each one in this process and
    silently skips a package that fails to import, with all its modules."""
    names = []
    for info in pkgutil.iter_modules([str(folder)], prefix):
        names.append(info.name)
        if info.ispkg:
            names += _walk(folder / info.name.rpartition(".")[2], info.name + ".")
    return names


#: ``__main__`` is a script (importing it runs the CLI), not a module to import
MODULES = sorted(
    m for m in ["orchestrator", *_walk(PACKAGE, "orchestrator.")] if not m.endswith(".__main__")
)


# -- runtime: each module alone, in a fresh interpreter ------------------------------------

_IMPORT_ONE = (
    "import importlib, sys\n"
    "importlib.import_module(sys.argv[1])\n"
    "print(sys.modules['orchestrator'].__file__)\n"
)


@dataclass(frozen=True)
class Imported:
    returncode: int
    stdout: str
    stderr: str

    @property
    def missing(self) -> str | None:
        """The top-level package named by a ModuleNotFoundError, if that is why it failed."""
        found = re.findall(r"ModuleNotFoundError: No module named '([\w.]+)'", self.stderr)
        return found[-1].split(".")[0] if found else None


def _import_alone(module: str) -> Imported:
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    proc = subprocess.run(
        [sys.executable, "-c", _IMPORT_ONE, module],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": path},
        timeout=120,
        check=False,
    )
    return Imported(proc.returncode, proc.stdout, proc.stderr)


@pytest.fixture(scope="module")
def imported() -> dict[str, Imported]:
    """Every module imported alone, a few interpreters at a time."""
    workers = max(2, min(4, os.cpu_count() or 2))
    with ThreadPoolExecutor(workers) as pool:
        return dict(zip(MODULES, pool.map(_import_alone, MODULES), strict=True))


@pytest.mark.parametrize("module", MODULES)
def test_each_module_imports_alone(module: str, imported: dict[str, Imported]) -> None:
    result = imported[module]
    if result.returncode != 0:
        missing = result.missing
        if missing in LOCAL_EXTRA and importlib.util.find_spec(missing) is None:
            pytest.skip(
                f"needs the 'local' extra ({missing} is not installed: pip install -e '.[local]')"
            )
        tail = "\n".join(result.stderr.strip().splitlines()[-12:])
        pytest.fail(f"`import {module}` in a fresh interpreter failed:\n{tail}", pytrace=False)
    loaded_from = Path(result.stdout.strip().splitlines()[-1]).resolve()
    assert loaded_from == PACKAGE / "__init__.py", f"imported {loaded_from}, not this tree"


# -- static: the imports as written ------------------------------------------------------


@dataclass(frozen=True)
class Edge:
    """``source`` imports ``target`` at ``line``; ``when`` is ``import`` (at import time),
    ``lazy`` (inside a function) or ``typing`` (under ``if TYPE_CHECKING``)."""

    source: str
    target: str
    line: int
    when: str


def _module_files() -> dict[str, Path]:
    files = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        files[".".join(parts)] = path
    return files


FILES = _module_files()


def test_every_file_is_a_module_of_the_package() -> None:
    """No folder without ``__init__.py`` (it would be left out of the wheel)."""
    assert sorted(m for m in FILES if not m.endswith(".__main__")) == MODULES


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _targets(source: str, node: ast.Import | ast.ImportFrom) -> list[str]:
    """The package modules an import statement names (a ``from X import Y`` of a
    submodule names ``X.Y``; of anything else, ``X``)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name.split(".")[0] == "orchestrator"]
    base = node.module or ""
    if node.level:
        package = source.split(".")
        if FILES[source].name != "__init__.py":
            package.pop()
        package = package[: len(package) - (node.level - 1)]
        base = ".".join([*package, base] if base else package)
    if base.split(".")[0] != "orchestrator":
        return []
    subs = [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in FILES]
    return subs if len(subs) == len(node.names) else [base, *subs]


def _edges(source: str) -> list[Edge]:
    tree = ast.parse(FILES[source].read_text(encoding="utf-8"), str(FILES[source]))
    edges: list[Edge] = []

    def visit(nodes: list[ast.stmt], when: str) -> None:
        for node in nodes:
            if isinstance(node, ast.Import | ast.ImportFrom):
                edges.extend(Edge(source, t, node.lineno, when) for t in _targets(source, node))
            elif isinstance(node, ast.If) and _is_type_checking(node.test):
                visit(node.body, "typing")
                visit(node.orelse, when)
            elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                visit(node.body, "lazy" if when == "import" else when)
            else:  # classes, with, try, loops: their statements run when the module does
                for child in ast.iter_child_nodes(node):
                    if isinstance(child, ast.stmt):
                        visit([child], when)
                    elif isinstance(child, ast.ExceptHandler):
                        visit(child.body, when)

    visit(tree.body, "import")
    return edges


EDGES = [edge for module in FILES for edge in _edges(module)]


def _ancestors(module: str) -> list[str]:
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(2, len(parts))]


def _import_time_graph() -> dict[str, set[str]]:
    """What executing each module executes first: the modules it imports, and the packages
    above them (``import a.b.c`` runs ``a/b/__init__`` first) other than its own."""
    graph: dict[str, set[str]] = {m: set() for m in FILES}
    for e in EDGES:
        if e.when != "import" or e.target not in FILES or e.target == e.source:
            continue
        graph[e.source].add(e.target)
        own = set(_ancestors(e.source))
        graph[e.source].update(p for p in _ancestors(e.target) if p not in own and p in FILES)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return found


def test_no_import_cycles() -> None:
    graph = _import_time_graph()
    shown = []
    for component in _cycles(graph):
        members = set(component)
        lines = [
            f"  {e.source} -> {e.target} (line {e.line})"
            for e in EDGES
            if e.when == "import" and e.source in members and e.target in members
        ]
        shown.append(" <-> ".join(component) + "\n" + "\n".join(lines))
    assert not shown, "modules that import each other at import time:\n" + "\n".join(shown)


def _within(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def _layer(module: str) -> int:
    """0 for the top layer (cli), larger further down; the longest matching prefix wins."""
    matches = [(len(p), depth) for depth, ps in enumerate(LAYERS) for p in ps if _within(module, p)]
    if not matches:
        raise AssertionError(f"{module} is in no layer: add it to LAYERS in {__file__}")
    return max(matches)[1]


def test_every_module_has_a_layer() -> None:
    for module in FILES:
        if module != "orchestrator":
            _layer(module)


def test_layers_only_call_down() -> None:
    upward = [
        f"{e.source}:{e.line} imports {e.target} ({e.when})"
        for e in EDGES
        if e.when != "typing"
        and e.source != "orchestrator"
        and e.target != "orchestrator"
        and _layer(e.target) < _layer(e.source)
    ]
    assert not upward, "imports of a higher layer:\n" + "\n".join(upward)


DATA_MODULES = sorted(m for m in FILES if _within(m, "orchestrator.data"))


@pytest.mark.parametrize("module", DATA_MODULES)
def test_data_does_not_import_backends(module: str) -> None:
    """The data layer sits below the backends: a backend hands the data checks what they
    need (a token counter), never the other way round."""
    found = [
        f"{e.source}:{e.line} imports {e.target} ({e.when})"
        for e in EDGES
        if e.source == module and _within(e.target, "orchestrator.backends")
    ]
    assert not found, "\n".join(found)


def test_no_cycles_counting_lazy_imports() -> None:
    """Imports inside functions run later, but a circle of them is still two modules that
    cannot be understood (or moved) one without the other."""
    graph: dict[str, set[str]] = {m: set() for m in FILES}
    for e in EDGES:
        if e.when != "typing" and e.target in FILES and e.target != e.source:
            graph[e.source].add(e.target)
    found = [" <-> ".join(c) for c in _cycles(graph)]
    assert not found, "modules that import each other (lazily or not):\n" + "\n".join(found)


def test_the_package_root_holds_only_its_entry_modules() -> None:
    root = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert root == ["__init__.py", "__main__.py"], root


MAX_MODULE_LINES = 600


@pytest.mark.parametrize("module", sorted(FILES))
def test_no_module_is_over_600_lines(module: str) -> None:
    lines = len(FILES[module].read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_MODULE_LINES, f"{FILES[module].relative_to(ROOT)}: {lines} lines"


def _python_files() -> list[Path]:
    return sorted(
        p
        for folder in ("orchestrator", "tests", "benchmarks")
        for p in (ROOT / folder).rglob("*.py")
    )


def test_no_private_name_is_imported_from_another_module() -> None:
    """A private name (``_x``) is its module's own: what another module needs is public API,
    in its home. Checked in the package, its tests and its benchmarks alike."""
    found = []
    for path in _python_files():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for node in ast.walk(tree):
            if not isinstance(node, ast.ImportFrom) or node.level:
                continue
            if (node.module or "").split(".")[0] != "orchestrator":
                continue
            for alias in node.names:
                if alias.name.startswith("_") and not alias.name.startswith("__"):
                    where = path.relative_to(ROOT)
                    found.append(f"{where}:{node.lineno} imports {node.module}.{alias.name}")
    assert not found, "\n".join(found)

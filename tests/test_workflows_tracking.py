"""The retune and learning-curve workflows write to MLflow only through
:mod:`orchestrator.tracking`: none of their modules imports ``mlflow``, and the one
``Tracker`` each opens is built by the tracking factory it hands to the engine (a
``__call__``), for the engine's MLflow listener, never beside it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

WORKFLOWS = Path(__file__).resolve().parents[1] / "orchestrator" / "workflows"
MODULES = [
    "learning_curve",
    "curve_tracking",
    "power_law",
    "retune",
    "retune_report",
    "retune_lock",
    "generation",
]


class _Uses(ast.NodeVisitor):
    """The modules a file imports, and the function each ``Tracker(...)`` is built in."""

    def __init__(self) -> None:
        self.imports: list[str] = []
        self.trackers: list[str] = []
        self.functions: list[str] = ["<module>"]

    def visit_Import(self, node: ast.Import) -> None:
        self.imports += [alias.name for alias in node.names]

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        self.imports.append(node.module or "")

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        self.functions.append(node.name)
        self.generic_visit(node)
        self.functions.pop()

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
        if name == "Tracker":
            self.trackers.append(self.functions[-1])
        self.generic_visit(node)


def _uses(module: str) -> _Uses:
    uses = _Uses()
    uses.visit(ast.parse((WORKFLOWS / f"{module}.py").read_text(encoding="utf-8")))
    return uses


@pytest.mark.parametrize("module", MODULES)
def test_mlflow_only_through_the_tracking_listener(module: str) -> None:
    uses = _uses(module)
    assert uses.imports, "the module was read"
    assert [m for m in uses.imports if m == "mlflow" or m.startswith("mlflow.")] == []
    assert set(uses.trackers) <= {"__call__"}, uses.trackers


def test_the_check_sees_a_tracker_built_beside_the_engine() -> None:
    beside = "def report(x):\n    Tracker(x).log_text('run', 'text', 'f')\n"
    uses = _Uses()
    uses.visit(ast.parse(beside))
    assert uses.trackers == ["report"]

"""Listeners read; only the engine writes the study and the trials' ledger.

A listener hook returns what it wants kept (``Records``: the MLflow listener's parent and
child run ids, that MLflow holds the conclusion, the registered version) and the engine
writes it: on the trial with its next ledger write, on the study after the dispatch."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
WRITES = {"set_user_attr", "set_system_attr", "set_attr", "set_attrs", "stage", "tell"}


def _listener_classes() -> dict[str, list[ast.ClassDef]]:
    found: dict[str, list[ast.ClassDef]] = {}
    for path in sorted((ROOT / "orchestrator").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef) and any(
                "Listener" in ast.unparse(base) or "Console" in ast.unparse(base)
                for base in node.bases
            ):
                found.setdefault(str(path.relative_to(ROOT)), []).append(node)
    return found


def _writes(cls: ast.ClassDef) -> list[str]:
    return [
        f"{cls.name}:{node.lineno} calls .{node.func.attr}()"
        for node in ast.walk(cls)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr in WRITES
    ]


def test_the_scan_finds_the_listeners() -> None:
    names = {c.name for classes in _listener_classes().values() for c in classes}
    assert {"MlflowListener", "ConsoleListener", "CurveListener"} <= names


def test_no_listener_writes_the_study_or_a_trial() -> None:
    found = [
        f"{path}: {w}"
        for path, classes in _listener_classes().items()
        for cls in classes
        for w in _writes(cls)
    ]
    assert not found, "\n".join(found)


def test_the_scan_sees_a_write() -> None:
    source = (
        "class L(Listener):\n    def trial_started(self, e):\n        e.study.set_user_attr(1, 2)\n"
    )
    cls = ast.parse(source).body[0]
    assert isinstance(cls, ast.ClassDef) and _writes(cls)

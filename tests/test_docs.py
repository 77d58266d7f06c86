"""The docs are current: the generated sweep-file reference, the README's commands, the
design's commands."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from orchestrator.cli.app import build
from orchestrator.config.reference import missing_notes, render

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
COMMANDS = build().commands
#: the commands the design promises (shared DESIGN.md, "Contracts others rely on")
DESIGNED = [
    "validate",
    "prepare",
    "space",
    "estimate",
    "run",
    "status",
    "report",
    "best",
    "retune",
    "schedule",
    "ui",
    "backends",
    "apisim",
]


def test_the_sweep_file_reference_is_current() -> None:
    doc = ROOT / "docs" / "sweep-file.md"
    assert doc.read_text() == render(), (
        "docs/sweep-file.md is stale: python -m orchestrator.config.reference > docs/sweep-file.md"
    )


def test_every_sweep_file_field_is_documented() -> None:
    assert missing_notes() == [], "add these to NOTES in orchestrator/config/reference.py"


@pytest.mark.parametrize("name", DESIGNED)
def test_the_designed_commands_exist(name: str) -> None:
    assert name in COMMANDS, f"ftsweep {name} is in the design but not in the CLI"


def test_every_command_the_readme_lists_exists_and_has_help() -> None:
    listed = set(re.findall(r"`ftsweep ([a-z][a-z-]*)", README))
    assert listed, "the README lists no commands?"
    for name in sorted(listed):
        assert name in COMMANDS, f"the README lists `ftsweep {name}`, which does not exist"
        assert COMMANDS[name].help, f"ftsweep {name} has no help"


def test_every_command_is_in_the_readme() -> None:
    listed = set(re.findall(r"`ftsweep ([a-z][a-z-]*)", README))
    missing = sorted(set(COMMANDS) - listed)
    assert not missing, f"the README's command table lacks: {missing}"


def test_docs_the_readme_links_exist() -> None:
    for target in re.findall(r"\]\((docs/[^)#]+)", README):
        assert (ROOT / target).is_file(), f"README links {target}, which is missing"

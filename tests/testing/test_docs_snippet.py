"""The test module ``docs/backends.md`` gives under "Testing it" runs as it is written there,
as a backend author runs it: its own file, a fresh pytest process, no ftsweep conftest."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "backends.md"


def snippet() -> str:
    """The first Python block of the doc's "Testing it" section."""
    section = DOC.read_text().split("\n## Testing it\n", 1)[1].split("\n## ", 1)[0]
    found = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert found, 'docs/backends.md: no Python block under "## Testing it"'
    return found.group(1)


def test_the_docs_contract_test_module_runs_and_passes(tmp_path: Path) -> None:
    code = snippet()
    for field in ("env=", "timeout_s=", "busy="):  # what a backend's case must think about
        assert field in code, f"the doc's BackendCase leaves out {field[:-1]}"
    module = tmp_path / "test_contract.py"
    module.write_text(code)
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(module)],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": path},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert re.search(r"\b10 passed\b", proc.stdout), proc.stdout[-1000:]
    assert "skipped" not in proc.stdout, proc.stdout[-1000:]

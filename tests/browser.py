"""Headless Chromium for the tests that look at what users see (the MLflow UI, HTML reports):
the page's text after its scripts ran, and a screenshot kept under ``test-artifacts/``."""

from __future__ import annotations

import html
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

ARTIFACTS = Path(os.environ.get("FTSWEEP_TEST_ARTIFACTS", "test-artifacts")).resolve()
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",  # this machine's closed network refuses them
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
]


def chromium() -> str:
    """The browser's path; the test is skipped without one (and fails under CI, which
    installs it)."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is needed for this test (.ci/run installs it)")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    return found


def _run(url: str, *args: str, size: str) -> subprocess.CompletedProcess[str]:
    with tempfile.TemporaryDirectory(prefix="ftsweep-chromium-") as profile:
        return subprocess.run(
            [
                chromium(),
                *FLAGS,
                f"--user-data-dir={profile}",
                f"--window-size={size}",
                "--virtual-time-budget=30000",  # let the page's scripts fetch and render
                *args,
                url,
            ],
            capture_output=True,
            text=True,
            timeout=240,
            check=False,
        )


def page_text(url: str, screenshot: str | None = None, size: str = "1600,1000") -> str:
    """The visible text of ``url`` once its scripts ran; a PNG of it to
    ``test-artifacts/<screenshot>`` when named."""
    r = _run(url, "--dump-dom", size=size)
    assert r.returncode == 0, r.stderr[-2000:]
    if screenshot:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        target = ARTIFACTS / screenshot
        shot = _run(url, f"--screenshot={target}", size=size)
        assert shot.returncode == 0 and target.is_file(), shot.stderr[-2000:]
    dom = re.sub(r"<(style|script)\b.*?</\1>", " ", r.stdout, flags=re.S | re.I)
    text = html.unescape(re.sub(r"<[^>]+>", " ", dom))
    return re.sub(r"\s+", " ", text)

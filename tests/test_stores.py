"""Creating the embedded SQLite stores is interrupt-safe; the file locks of the stores."""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from orchestrator.core.errors import StoreUnreachableError
from orchestrator.stores.locks import create_aside, exclusive, file_lock, launch_lock, try_flock


def test_an_interrupted_creation_leaves_no_store(tmp_path: Path) -> None:
    def make(url: str) -> None:
        con = sqlite3.connect(url.removeprefix("sqlite:///"))
        con.execute("create table half_made (x)")
        con.close()
        raise KeyboardInterrupt  # Ctrl-C in the middle of the migrations

    with pytest.raises(KeyboardInterrupt):
        create_aside(f"sqlite:///{tmp_path / 'mlflow.db'}", make)
    assert list(tmp_path.iterdir()) == []


def test_a_created_store_is_moved_into_place(tmp_path: Path) -> None:
    def make(url: str) -> None:
        con = sqlite3.connect(url.removeprefix("sqlite:///"))
        con.execute("create table done (x)")
        con.close()

    target = tmp_path / "optuna.db"
    create_aside(f"sqlite:///{target}", make)
    assert [p.name for p in tmp_path.iterdir()] == ["optuna.db"]
    tables = sqlite3.connect(target).execute("select name from sqlite_master").fetchall()
    assert tables == [("done",)]
    create_aside(f"sqlite:///{target}", lambda url: pytest.fail("the store exists"))


# -- locks ---------------------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("flock") is None, reason="flock(1) is not installed")
def test_a_file_lock_held_too_long_is_one_line_naming_it(tmp_path: Path) -> None:
    """Another process (here ``flock(1)``, the lock ``filelock`` takes too) holds the store's
    creation lock: the wait ends after the timeout, with one line naming the lock and file."""
    lock = tmp_path / "optuna.db.lock"
    holder = subprocess.Popen(
        ["flock", str(lock), "-c", "echo held; exec sleep 60"],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,  # flock(1) runs the command in a child: stop both
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        started = time.monotonic()
        with (
            pytest.raises(StoreUnreachableError) as info,
            file_lock(lock, "the store-creation lock", timeout=0.5),
        ):
            pytest.fail("the lock is held by another process")
        assert 0.4 < time.monotonic() - started < 5
        assert str(info.value) == (
            f"cannot take the store-creation lock ({lock}): another process has held it for 0.5 s"
        )
    finally:
        os.killpg(holder.pid, signal.SIGKILL)
        holder.communicate()
    with file_lock(lock, timeout=5):  # free again once its holder is gone
        assert lock.exists()


def test_the_launch_lock_excludes_other_processes(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    code = (
        "import sys\n"
        "from orchestrator.stores.locks import launch_lock\n"
        "with launch_lock(sys.argv[1], 's'):\n"
        "    print('held', flush=True)\n"
        "    sys.stdin.readline()\n"
    )
    other = subprocess.Popen(
        [sys.executable, "-c", code, url], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert other.stdout is not None and other.stdout.readline() == "held\n"
        with (
            pytest.raises(StoreUnreachableError, match="the study's launch lock"),
            file_lock(tmp_path / "optuna.db.launch.lock", "the study's launch lock", timeout=0.3),
        ):
            pass
    finally:
        other.communicate("\n", timeout=30)
    with launch_lock(url, "s"):
        pass


@pytest.mark.parametrize(
    ("url", "excludes"),
    [
        ("sqlite:///runs/optuna.db", True),
        ("sqlite+pysqlite:////abs/optuna.db", True),
        ("journal:runs/optuna.log", True),
        ("postgresql+psycopg://u:p@db/sw", True),
        ("mysql://u:p@db/sw", False),
        ("sqlite:///:memory:", False),  # one process: no file to lock beside
    ],
)
def test_which_storages_the_launch_lock_covers(url: str, excludes: bool) -> None:
    assert exclusive(url) is excludes


def test_try_flock_is_the_lock_of_flock_n(tmp_path: Path) -> None:
    lock = tmp_path / "sub" / ".retune-x.lock"
    with try_flock(lock) as fd:
        assert fd is not None
        with try_flock(lock) as again:
            assert again is None  # non-blocking: held, even by this process's other descriptor
        if shutil.which("flock"):
            proc = subprocess.run(["flock", "-n", "-E", "75", str(lock), "true"], check=False)
            assert proc.returncode == 75
    with try_flock(lock) as fd:
        assert fd is not None

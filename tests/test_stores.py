"""Creating the embedded SQLite stores is interrupt-safe."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from orchestrator.stores.locks import create_aside


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

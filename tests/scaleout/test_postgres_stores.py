"""The pieces of the scale-out path on a real PostgreSQL: the launch lock is exclusive across
connections, a dataset row another worker made first is linked (not a crash), two workers
creating the stores at once both succeed, and the read-only reader of `status` reads what
Optuna reads."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import optuna
import psycopg
import pytest
from sqlalchemy.engine import make_url

from orchestrator.data.findings import DatasetStats
from orchestrator.stores.locks import advisory_key, launch_lock
from orchestrator.tracking import Tracker

ROOT = Path(__file__).resolve().parents[2]


def _connect(url: str) -> psycopg.Connection[tuple[object, ...]]:
    u = make_url(url)
    return psycopg.connect(
        host=u.host, port=u.port, user=u.username, dbname=u.database, autocommit=True
    )


def _until(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    """Poll ``condition`` (a state of the database), not a fixed sleep."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.02)


def test_the_launch_lock_is_one_holder_across_connections(
    postgres_db: Callable[[str], str],
) -> None:
    url = postgres_db("lock")
    key = advisory_key("ftsweep.launch:study-a")
    with _connect(url) as other:

        def free() -> bool:
            with other.transaction():
                row = other.execute("SELECT pg_try_advisory_xact_lock(%s)", (key,)).fetchone()
            return bool(row and row[0])

        with launch_lock(url, "study-a"):
            assert not free()  # another machine's worker would wait here
            with launch_lock(url, "study-b"):  # another study's lock is another key
                pass
        assert free()  # released at the end of the block


def test_a_dataset_row_another_worker_made_first_is_linked(
    postgres_db: Callable[[str], str], tmp_path: Path
) -> None:
    """Worker B inserts the same dataset row inside an open transaction; worker A's insert
    waits on it, then meets a unique violation when B commits: A links to B's row."""
    url = postgres_db("mlflow")
    tracker = Tracker(url, "datasets")
    run = tracker.parent_run(None, "datasets", {})
    data = tmp_path / "train.jsonl"
    data.write_text('{"prompt": "a", "completion": "b"}\n')
    stats = DatasetStats(str(data), "prompt_completion", 1, 1, data.stat().st_size, "ab" * 32)
    errors: list[BaseException] = []
    with _connect(url) as other:
        other.execute("BEGIN")
        other.execute(
            "INSERT INTO datasets (dataset_uuid, experiment_id, name, digest, "
            "dataset_source_type, dataset_source) VALUES (%s, %s, %s, %s, %s, %s)",
            ("theirs0000", int(tracker.experiment_id), data.name, "ab" * 16, "local", "{}"),
        )

        def log() -> None:
            try:
                tracker.log_datasets(run, {"training": stats})
            except BaseException as exc:
                errors.append(exc)

        thread = threading.Thread(target=log)
        thread.start()
        with _connect(url) as watcher:

            def waiting() -> bool:
                rows = watcher.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                    "AND query ILIKE '%%datasets%%'"
                ).fetchone()
                return bool(rows and int(str(rows[0])) > 0)

            _until(waiting)  # A's insert waits for B's transaction
        other.execute("COMMIT")
        thread.join(timeout=60)
    assert not errors, errors
    inputs = tracker.client.get_run(run).inputs.dataset_inputs
    assert [i.dataset.name for i in inputs] == [data.name]
    with _connect(url) as conn:
        rows = conn.execute("SELECT dataset_uuid FROM datasets").fetchall()
    assert rows == [("theirs0000",)]


_CREATE = """
import sys, optuna
from orchestrator.tracking import Tracker
from orchestrator.stores.locks import sqlite_init_lock
optuna_url, mlflow_url = sys.argv[1:3]
with sqlite_init_lock(optuna_url):
    optuna.create_study(study_name="s", storage=optuna_url, load_if_exists=True)
Tracker(mlflow_url, "e")
"""


def test_two_workers_creating_the_stores_at_once_both_succeed(
    postgres_db: Callable[[str], str],
) -> None:
    """Optuna's tables and MLflow's migrations on empty PostgreSQL databases, by two
    processes at once (each store under the store-creation lock)."""
    optuna_url, mlflow_url = postgres_db("optuna"), postgres_db("mlflow")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _CREATE, optuna_url, mlflow_url],
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    errors = [p.communicate(timeout=180)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errors
    assert len(optuna.get_all_study_summaries(optuna_url)) == 1
    assert Tracker(mlflow_url, "e").experiment_id


@pytest.mark.parametrize("name", ["has space", "quote'd"])
def test_advisory_keys_are_stable_signed_64_bit(name: str) -> None:
    key = advisory_key(name)
    assert key == advisory_key(name) and -(2**63) <= key < 2**63
    assert key != advisory_key(name + "x")


def test_status_reader_reads_what_optuna_reads(postgres_db: Callable[[str], str]) -> None:
    """``status``/``report``'s plain-query reader (orchestrator/stores/snapshot.py) on PostgreSQL:
    the same trials, attributes and lineage as Optuna's ORM."""
    from tests.test_snapshot import same_as_optuna

    same_as_optuna(postgres_db("snapshot"))


def test_a_ledger_event_reads_back_as_optunas_writes(postgres_db: Callable[[str], str]) -> None:
    """The ledger's one-statement upsert (orchestrator/stores/ledger.py) on PostgreSQL: new
    and already written attributes, as ``set_user_attr`` leaves them."""
    from orchestrator.stores.ledger import write

    url = postgres_db("ledger")
    study = optuna.create_study(study_name="s", storage=url)
    ours, theirs = study.ask(), study.ask()
    attrs = {"ftsweep.worker": "host:1", "ftsweep.heartbeat": 1.5, "ftsweep.cp": {"1": [2]}}
    write(ours, attrs, {1: 0.5})
    write(ours, {"ftsweep.heartbeat": 2.5, "ftsweep.job_id": "j"}, {1: 0.25, 2: float("inf")})
    for key, value in {**attrs, "ftsweep.heartbeat": 2.5, "ftsweep.job_id": "j"}.items():
        theirs.set_user_attr(key, value)
    for step, value in ((1, 0.5), (1, 0.25), (2, float("inf"))):
        theirs.storage.set_trial_intermediate_value(theirs._trial_id, step, value)
    a, b = optuna.load_study(study_name="s", storage=url).trials
    assert a.user_attrs == b.user_attrs and a.intermediate_values == b.intermediate_values

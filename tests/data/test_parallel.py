"""The data checks on several processes give exactly the serial report.

Every comparison forces the pool on small files (``min_parallel_bytes=0``) and cuts them into
ranges small enough that boundaries fall everywhere: at line starts, inside lines, around
blank and over-long lines.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import pytest

from orchestrator.catalog.tokens import openai_counter
from orchestrator.core.errors import UsageError
from orchestrator.data.checks import check_dataset
from orchestrator.data.filecheck import FileCheck
from orchestrator.data.parallel import WORKERS_ENV, data_workers, run_check
from orchestrator.data.reader import line_ranges
from tests.helpers import chat_rows, pc_rows

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = sorted((ROOT / "data").glob("*/*.train.jsonl"))


def _report(train: Path, valid: Path | None = None, **kw: Any) -> dict[str, Any]:
    counter = kw.pop("counter", openai_counter("gpt-4o-mini"))
    return check_dataset(train, valid, counter, model="gpt-4o-mini", **kw).to_dict()


def _same_in_parallel(
    train: Path, valid: Path | None = None, sizes: tuple[int, ...] = (), **kw: Any
) -> None:
    serial = _report(train, valid, workers=1, **kw)
    n = train.stat().st_size
    for size in sizes or (1, 97, n // 3 + 1, n // 2):
        parallel = _report(train, valid, workers=2, range_bytes=size, min_parallel_bytes=0, **kw)
        assert parallel == serial, f"range_bytes={size}"


def _hostile(path: Path) -> Path:
    good = [json.dumps(r).encode() for r in chat_rows(30)]
    lines: list[bytes] = [
        b"\xef\xbb\xbf{not json",  # BOM, then invalid JSON: the format is set by line 2
        *good[:5],
        b"",  # blank
        b"   ",  # blank (spaces)
        good[0],  # duplicate of line 2
        json.dumps({"prompt": "p", "completion": " c"}).encode(),  # mixed formats
        b'{"messages": [{"role": "user", "content": "caf\xe9"}]}',  # invalid UTF-8
        json.dumps({"messages": [{"role": "user", "content": "x" * 400}]}).encode(),  # too long
        *(g.replace(b"}]}", b"}]}\r") for g in good[5:12]),  # CRLF
        json.dumps({"messages": [{"role": "assistant", "content": "hi"}]}).encode(),  # warnings
        b"[1, 2]",
        *good[12:],
        good[3],  # another duplicate, far from its original
        b'{"messages": [}',
    ]
    path.write_bytes(b"\n".join(lines))  # and no newline at the very end
    return path


def test_line_ranges_cut_only_at_line_starts_and_cover_the_file(tmp_path: Path) -> None:
    path = _hostile(tmp_path / "h.jsonl")
    data = path.read_bytes()
    starts = {0} | {i + 1 for i, b in enumerate(data) if b == ord("\n")}
    for size in (1, 2, 50, 333, len(data) - 1, len(data), 10 * len(data)):
        ranges = line_ranges(path, len(data), size)
        assert ranges[0][0] == 0 and ranges[-1][1] == len(data)
        assert all(a[1] == b[0] for a, b in itertools.pairwise(ranges))
        assert all(start in starts and start < end for start, end in ranges)
    # a boundary exactly at a line start stays there; one inside a line moves to the next
    third = sorted(starts)[3]
    assert line_ranges(path, len(data), third)[0] == (0, third)
    assert line_ranges(path, len(data), third - 1)[0] == (0, third)


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.parent.name)
def test_shipped_datasets_same_report_in_parallel(path: Path) -> None:
    valid = path.with_name(path.name.replace(".train.", ".valid."))
    _same_in_parallel(path, valid if valid.exists() else None)


@pytest.mark.parametrize(
    "name",
    ["microsoft-foundry_gsm8k_chat_train.jsonl", "openai-cookbook_toy_chat_fine_tuning.jsonl"],
)
def test_public_datasets_same_report_in_parallel(public: Path, name: str) -> None:
    valid = public / "microsoft-foundry_gsm8k_chat_validation.jsonl"
    _same_in_parallel(public / name, valid, sizes=(1, 4096, 50_000))


def test_hostile_file_same_report_in_parallel(tmp_path: Path) -> None:
    path = _hostile(tmp_path / "h.jsonl")
    data = path.read_bytes()
    starts = [i + 1 for i, b in enumerate(data) if b == ord("\n")]
    # every boundary exactly at a line start, and one byte either side of it
    sizes = tuple(sorted({s + d for s in starts[:12] for d in (-1, 0, 1)} | {1, len(data) // 2}))
    _same_in_parallel(path, sizes=sizes, max_line_bytes=300)
    serial = _report(path, workers=1, max_line_bytes=300)
    codes = {f["code"]: f for f in serial["findings"]}
    # the hostile lines are all found (so the comparison above compares something)
    assert {"invalid_json", "blank_lines", "duplicate", "mixed_formats", "invalid_utf8"} <= set(
        codes
    )
    assert {"line_too_long", "crlf", "bom", "data_type"} <= set(codes)
    assert codes["duplicate"]["lines"] == (9, 40)
    assert codes["mixed_formats"]["message"].endswith("(format set by line 2)")


def test_overlap_and_duplicates_found_across_ranges(tmp_path: Path) -> None:
    rows = chat_rows(40)
    train = tmp_path / "t.jsonl"
    train.write_text("".join(json.dumps(r) + "\n" for r in [*rows, rows[0], rows[39]]))
    valid = tmp_path / "v.jsonl"
    valid.write_text("".join(json.dumps(r) + "\n" for r in [*chat_rows(5, 100), rows[20]]))
    _same_in_parallel(train, valid, sizes=(1, 200, 1000))
    report = _report(train, valid, workers=2, range_bytes=200, min_parallel_bytes=0)
    found = {(f["code"], f["file"]): f for f in report["findings"]}
    assert found["duplicate", str(train)]["lines"] == (41, 42)
    assert found["train_valid_overlap", str(valid)]["lines"] == (6,)


def test_prompt_completion_conventions_same_in_parallel(tmp_path: Path) -> None:
    rows = pc_rows(60)
    rows[17]["prompt"] = "no separator here"
    rows[44]["completion"] = " no stop"
    train = tmp_path / "pc.jsonl"
    train.write_text("".join(json.dumps(r) + "\n" for r in rows))
    _same_in_parallel(train, sizes=(1, 300, 2000))
    _same_in_parallel(train, sizes=(1, 300), counter=None)


def test_labels_and_token_totals_same_in_parallel(tmp_path: Path) -> None:
    rows = [
        {
            "messages": [
                {"role": "system", "content": "Classify."},
                {"role": "user", "content": f"ticket {i}"},
                {"role": "assistant", "content": ["billing", "shipping", "account"][i % 3]},
            ]
        }
        for i in range(90)
    ]
    train = tmp_path / "cls.jsonl"
    train.write_text("".join(json.dumps(r) + "\n" for r in rows))
    _same_in_parallel(train, sizes=(1, 500))
    report = _report(train, workers=2, range_bytes=500, min_parallel_bytes=0)
    assert report["train"]["labels"] == {"billing": 30, "shipping": 30, "account": 30}
    assert report["train"]["total_tokens"] > 0


def test_the_pool_really_runs_ranges(tmp_path: Path) -> None:
    train = tmp_path / "t.jsonl"
    train.write_text("".join(json.dumps(r) + "\n" for r in chat_rows(50)))
    counter = openai_counter("gpt-4o-mini")

    def ranges(**kw: Any) -> int:
        check = FileCheck(str(train), counter, "gpt-4o-mini", 1 << 20)
        return run_check(check, counter, "gpt-4o-mini", **kw)

    assert ranges(workers=2, range_bytes=1000, min_parallel_bytes=0) > 1
    assert ranges(workers=1, range_bytes=1000, min_parallel_bytes=0) == 0
    assert ranges(workers=2, range_bytes=1000) == 0  # small files stay serial


def test_worker_count_from_option_env_and_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(WORKERS_ENV, raising=False)
    assert data_workers() >= 1
    assert data_workers(3) == 3
    monkeypatch.setenv(WORKERS_ENV, "5")
    assert data_workers() == 5
    assert data_workers(2) == 2
    monkeypatch.setenv(WORKERS_ENV, "lots")
    with pytest.raises(UsageError, match=f"{WORKERS_ENV}='lots'"):
        data_workers()
    monkeypatch.setenv(WORKERS_ENV, "0")
    with pytest.raises(UsageError):
        data_workers()


def test_spawned_workers_when_threads_run_give_the_same_report(tmp_path: Path) -> None:
    """With another thread alive the pool spawns instead of forking (the counter travels
    pickled): the same report."""
    import threading

    path = _hostile(tmp_path / "h.jsonl")
    serial = _report(path, workers=1, max_line_bytes=300)
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait, daemon=True)
    thread.start()
    try:
        parallel = _report(
            path, workers=2, range_bytes=400, min_parallel_bytes=0, max_line_bytes=300
        )
    finally:
        stop.set()
        thread.join()
    assert parallel == serial


def test_validate_refuses_a_bad_worker_count_in_one_line(
    cli: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    train = tmp_path / "t.jsonl"
    train.write_text("".join(json.dumps(r) + "\n" for r in chat_rows(12)))
    monkeypatch.setenv(WORKERS_ENV, "lots")
    r = cli("validate", train)
    assert r.code == 2
    assert f"error: {WORKERS_ENV}='lots': must be a whole number >= 1" in r.err
    assert "Traceback" not in r.err
    monkeypatch.delenv(WORKERS_ENV)
    assert cli("validate", train, "--workers", "0").code == 2
    r = cli("validate", train, "--workers", "2", "--json")
    assert r.code == 0, r.err
    assert json.loads(r.out)["train"]["n_examples"] == 12

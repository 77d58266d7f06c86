"""Bad input: a clear message naming the line, exit 2, never a traceback."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.catalog.tokens import openai_counter
from orchestrator.data.checks import check_dataset
from tests.helpers import chat_rows, pc_rows, write_jsonl

GOOD = [json.dumps(r) for r in chat_rows(12)]


def _file(tmp_path: Path, lines: list[str | bytes], name: str = "d.jsonl") -> Path:
    p = tmp_path / name
    p.write_bytes(b"".join((x if isinstance(x, bytes) else x.encode()) + b"\n" for x in lines))
    return p


def _with(bad: str | bytes, at: int = 4) -> list[str | bytes]:
    lines: list[str | bytes] = list(GOOD)
    lines.insert(at - 1, bad)
    return lines


CASES = {
    "invalid_utf8": (
        _with(b'{"messages": [{"role": "user", "content": "caf\xe9"}]}'),
        4,
        "invalid UTF-8",
    ),
    "invalid_json": (_with('{"messages": [}'), 4, "invalid JSON"),
    "json_array": (_with("[1, 2, 3]"), 4, "expected a JSON object, got an array"),
    "json_number": (_with("42"), 4, "expected a JSON object, got a number"),
    "null_content": (
        _with(
            json.dumps(
                {
                    "messages": [
                        {"role": "user", "content": None},
                        {"role": "assistant", "content": "x"},
                    ]
                }
            )
        ),
        4,
        "message 1 (user) has no content",
    ),
    "non_string_content": (
        _with(
            json.dumps(
                {
                    "messages": [
                        {"role": "user", "content": 5},
                        {"role": "assistant", "content": "x"},
                    ]
                }
            )
        ),
        4,
        "content must be a string, got a number",
    ),
    "unknown_role": (
        _with(
            json.dumps(
                {
                    "messages": [
                        {"role": "robot", "content": "hi"},
                        {"role": "assistant", "content": "x"},
                    ]
                }
            )
        ),
        4,
        "unknown role 'robot'",
    ),
    "missing_assistant": (
        _with(json.dumps({"messages": [{"role": "user", "content": "hi"}]})),
        4,
        "no assistant message",
    ),
    "mixed_formats": (
        _with(json.dumps({"prompt": "a", "completion": " b"})),
        4,
        "prompt_completion example in a chat file (format set by line 1)",
    ),
    "missing_messages": (_with(json.dumps({"messages": []})), 4, "'messages' must be a non-empty"),
    "unknown_shape": (_with(json.dumps({"text": "hi"})), 4, "neither 'messages' nor"),
    "special_token": (
        _with(
            json.dumps(
                {
                    "messages": [
                        {"role": "user", "content": "a <|endoftext|> b"},
                        {"role": "assistant", "content": "x"},
                    ]
                }
            )
        ),
        4,
        "reserved token <|endoftext|>",
    ),
    "bad_weight": (
        _with(
            json.dumps(
                {
                    "messages": [
                        {"role": "user", "content": "a"},
                        {"role": "assistant", "content": "x", "weight": 2},
                    ]
                }
            )
        ),
        4,
        "weight must be 0 or 1",
    ),
}


@pytest.mark.parametrize("kind", sorted(CASES))
def test_malformed_line_is_named_and_exits_2(cli, tmp_path: Path, kind: str) -> None:
    lines, line_no, text = CASES[kind]
    path = _file(tmp_path, lines)
    r = cli("validate", path)
    assert r.code == 2, r.out
    assert f"{path}:{line_no}: " in r.out
    assert text in r.out
    assert "Traceback" not in r.out + r.err


def test_pretty_printed_json_file(cli, tmp_path: Path) -> None:
    path = tmp_path / "pretty.jsonl"
    path.write_text(json.dumps(chat_rows(12), indent=2))
    r = cli("validate", path)
    assert r.code == 2
    assert f"{path}:1: invalid JSON" in r.out
    assert "pretty-printed JSON" in r.out


def test_empty_file(cli, tmp_path: Path) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_bytes(b"")
    r = cli("validate", path)
    assert r.code == 2
    assert f"{path}: file is empty" in r.out


def test_missing_file_is_one_line_exit_2(cli, tmp_path: Path) -> None:
    r = cli("validate", tmp_path / "nope.jsonl")
    assert r.code == 2
    assert r.err.strip().splitlines()[-1] == f"error: {tmp_path / 'nope.jsonl'}: no such file"


def test_too_few_examples(cli, tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "few.jsonl", chat_rows(7))
    r = cli("validate", path)
    assert r.code == 2
    assert "7 examples; the fine-tuning API requires at least 10" in r.out


def test_bom_and_crlf_are_accepted(cli, tmp_path: Path) -> None:
    path = tmp_path / "win.jsonl"
    path.write_bytes(
        b"\xef\xbb\xbf" + b"".join(json.dumps(r).encode() + b"\r\n" for r in chat_rows(12))
    )
    r = cli("validate", path, "--json")
    assert r.code == 0, r.out
    codes = {f["code"] for f in json.loads(r.out)["findings"]}
    assert {"bom", "crlf"} <= codes


def test_a_20_mb_line_is_handled(tmp_path: Path) -> None:
    big = {
        "messages": [
            {"role": "user", "content": "word " * 4_000_000},
            {"role": "assistant", "content": "ok"},
        ]
    }
    path = tmp_path / "big.jsonl"
    with path.open("w") as f:
        for r in chat_rows(11):
            f.write(json.dumps(r) + "\n")
        f.write(json.dumps(big) + "\n")
    assert path.stat().st_size > 20_000_000
    report = check_dataset(path, counter=openai_counter("gpt-4o-mini"), model="gpt-4o-mini")
    assert report.ok
    over = next(f for f in report.findings if f.code == "over_token_limit")
    assert over.lines == (12,)


def test_a_line_over_the_limit_is_rejected_not_read(tmp_path: Path) -> None:
    path = _file(tmp_path, _with('{"messages": "' + "x" * 5000 + '"}'))
    report = check_dataset(path, max_line_bytes=1000)
    err = next(f for f in report.errors if f.code == "line_too_long")
    assert err.lines == (4,)
    assert report.train.n_examples == 13  # the lines after it are still read


def test_deeply_nested_json_is_rejected_cleanly(cli, tmp_path: Path) -> None:
    deep = '{"messages": ' + "[" * 200_000 + "]" * 200_000 + "}"
    path = _file(tmp_path, _with(deep))
    r = cli("validate", path)
    assert r.code == 2
    assert f"{path}:4: JSON nested too deeply" in r.out


def test_no_traceback_from_the_real_process(tmp_path: Path) -> None:
    path = _file(tmp_path, _with(b"\xff\xfe garbage"))
    proc = subprocess.run(
        [sys.executable, "-m", "orchestrator", "validate", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stdout + proc.stderr
    assert f"{path}:4: invalid UTF-8" in proc.stdout


def test_prompt_completion_conventions(tmp_path: Path) -> None:
    rows = pc_rows(30)
    rows[5] = {"prompt": "reverse: abc", "completion": "cba\n"}  # no separator, no space
    rows[9] = {"prompt": "a\n\n###\n\nb\n\n###\n\n", "completion": " x\n"}  # separator inside
    path = write_jsonl(tmp_path / "pc.jsonl", rows)
    report = check_dataset(path)
    by = {f.code: f for f in report.findings}
    assert report.train.separator == "\n\n###\n\n"
    assert report.train.stop_sequence == "\n"
    assert by["separator_missing"].lines == (6,)
    assert by["separator_inside"].lines == (10,)
    assert by["completion_no_leading_space"].lines == (6,)


def test_duplicates_and_overlap_are_named(tmp_path: Path) -> None:
    rows = chat_rows(20)
    rows.append(rows[2])
    train = write_jsonl(tmp_path / "t.jsonl", rows)
    valid = write_jsonl(tmp_path / "v.jsonl", [*chat_rows(5, start=100), rows[7]])
    report = check_dataset(train, valid)
    dup = next(f for f in report.findings if f.code == "duplicate")
    assert dup.lines == (21,) and "line 21 repeats line 3" in dup.message
    overlap = next(f for f in report.findings if f.code == "train_valid_overlap")
    assert overlap.file == str(valid) and overlap.lines == (6,)
    assert "training line 8" in overlap.message


def test_classification_labels_and_imbalance(tmp_path: Path) -> None:
    rows = [
        {"prompt": f"ticket {i} ->", "completion": " spam\n" if i % 12 == 0 else " ham\n"}
        for i in range(240)
    ]
    report = check_dataset(write_jsonl(tmp_path / "c.jsonl", rows))
    assert report.train.task == "classification"
    assert report.train.labels == {"ham": 220, "spam": 20}
    assert any(f.code == "label_imbalance" for f in report.findings)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                ["messages", "role", "content", "prompt", "completion", "weight", "name", "x"]
            ),
            children,
            max_size=4,
        )
    ),
    max_leaves=20,
)
roles = st.sampled_from(["system", "user", "assistant", "tool", "robot", 3])
message = st.fixed_dictionaries(
    {"role": roles},
    optional={
        "content": st.none() | st.text(max_size=30) | st.integers(),
        "weight": st.sampled_from([0, 1, 2, True]),
    },
)
chatty = st.fixed_dictionaries({"messages": st.lists(message, max_size=4)})
line = st.one_of(
    json_values.map(json.dumps).map(str.encode),
    chatty.map(json.dumps).map(str.encode),
    st.binary(max_size=40).filter(lambda b: b"\n" not in b),
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(lines=st.lists(line, min_size=0, max_size=15))
def test_reader_and_checks_never_crash(tmp_path: Path, lines: list[bytes]) -> None:
    path = tmp_path / "fuzz.jsonl"
    path.write_bytes(b"\n".join(lines))
    report = check_dataset(path)
    for f in report.findings:
        assert f.severity in ("error", "warning", "info")
        assert f.message
        assert all(1 <= n <= max(1, len(lines)) for n in f.lines)
    assert report.train.n_examples <= len(lines)

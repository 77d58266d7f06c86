"""ftsweep prepare: tables to JSONL, safely."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from orchestrator.data.checks import check_dataset


def _csv(tmp_path: Path) -> Path:
    rows = [
        {"text": f"review {i}: it {'broke' if i % 4 == 0 else 'works'} ->", "label": ""}
        for i in range(200)
    ]
    for i, r in enumerate(rows):
        r["label"] = "negative" if i % 4 == 0 else "positive"
    rows.append(dict(rows[3]))  # a duplicate
    rows.append({"text": "no label", "label": "  "})  # empty completion
    path = tmp_path / "reviews.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def _read(path: Path) -> list[dict[str, str]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_prepare_csv_to_valid_prompt_completion(cli, tmp_path: Path) -> None:
    src = _csv(tmp_path)
    before = src.read_bytes()
    out = tmp_path / "out"
    r = cli("prepare", src, "--prompt", "text", "--completion", "label", "--out", out)
    assert r.code == 0, r.err
    summary = json.loads(r.out)
    assert summary["examples_in"] == 202
    assert summary["train_examples"] + summary["valid_examples"] == 200
    assert summary["stratified"] is True
    assert "removed 1 exact duplicates" in r.err
    assert "dropped 1 rows with an empty completion (rows 202)" in r.err
    sep, stop = summary["separator"], summary["stop_sequence"]
    assert sep != " ->"  # every prompt already contains " ->": another separator is chosen
    train, valid = _read(out / "train.jsonl"), _read(out / "valid.jsonl")
    for row in train + valid:
        assert row["prompt"].endswith(sep) and row["prompt"].count(sep) == 1
        assert row["completion"].startswith(" ") and row["completion"].endswith(stop)
    # stratified: both labels in valid, in about the original proportion
    labels = [v["completion"].strip() for v in valid]
    assert labels.count("negative") == 5 and labels.count("positive") == 15
    assert src.read_bytes() == before
    report = check_dataset(out / "train.jsonl", out / "valid.jsonl")
    assert report.ok
    assert not [f for f in report.findings if f.code.startswith(("separator", "stop", "duplicate"))]


def test_prepare_is_deterministic_for_a_seed(cli, tmp_path: Path) -> None:
    src = _csv(tmp_path)
    for name in ("a", "b"):
        assert (
            cli(
                "prepare",
                src,
                "--prompt",
                "text",
                "--completion",
                "label",
                "--out",
                tmp_path / name,
                "--seed",
                "7",
            ).code
            == 0
        )
    assert (tmp_path / "a" / "valid.jsonl").read_bytes() == (
        tmp_path / "b" / "valid.jsonl"
    ).read_bytes()


def test_prepare_never_overwrites(cli, tmp_path: Path) -> None:
    src = _csv(tmp_path)
    out = tmp_path / "out"
    assert cli("prepare", src, "--prompt", "text", "--completion", "label", "--out", out).code == 0
    first = (out / "train.jsonl").read_bytes()
    r = cli("prepare", src, "--prompt", "text", "--completion", "label", "--out", out)
    assert r.code == 2 and "exists; use --force" in r.err
    assert (out / "train.jsonl").read_bytes() == first
    jsonl = tmp_path / "in" / "train.jsonl"
    jsonl.parent.mkdir()
    jsonl.write_text('{"prompt": "a", "completion": "b"}\n')
    r = cli("prepare", jsonl, "--out", jsonl.parent, "--force")
    assert r.code == 2 and "refusing to overwrite the input" in r.err


def test_prepare_parquet_to_chat(cli, tmp_path: Path) -> None:
    src = tmp_path / "qa.parquet"
    pd.DataFrame(
        {"q": [f"question {i}" for i in range(30)], "a": [f"answer {i}" for i in range(30)]}
    ).to_parquet(src)
    out = tmp_path / "chat"
    r = cli(
        "prepare",
        src,
        "--prompt",
        "q",
        "--completion",
        "a",
        "--system",
        "Be brief.",
        "--out",
        out,
        "--valid-fraction",
        "0.2",
    )
    assert r.code == 0, r.err
    rows = _read(out / "train.jsonl")
    assert len(rows) == 24 and len(_read(out / "valid.jsonl")) == 6
    assert [m["role"] for m in rows[0]["messages"]] == ["system", "user", "assistant"]


def test_prepare_bad_input_is_one_line_exit_2(cli, tmp_path: Path) -> None:
    src = _csv(tmp_path)
    r = cli("prepare", src, "--prompt", "body", "--out", tmp_path / "o")
    assert r.code == 2
    assert r.err.strip() == f"error: {src}: no column 'body' (columns: text, label)"
    bad = tmp_path / "x.xlsx"
    bad.write_text("nope")
    r = cli("prepare", bad, "--out", tmp_path / "o")
    assert r.code == 2 and "unsupported file type '.xlsx'" in r.err
    assert not (tmp_path / "o" / "train.jsonl").exists()


def test_prepare_keeps_the_conventions_a_jsonl_file_has(cli, tmp_path: Path) -> None:
    """What `validate` tells a user with duplicates in prepared JSONL to run: `prepare`
    removes them and keeps the separator and stop sequence every example already ends with
    (it appended its own after them, two separators on every prompt)."""
    rows = [
        {"prompt": f"what is {i}+{i}?\n\n###\n\n", "completion": f" {2 * i}\n"} for i in range(80)
    ]
    rows += rows[:20]
    src = tmp_path / "pc.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out"
    r = cli("prepare", src, "--out", out)
    assert r.code == 0, r.err
    summary = json.loads(r.out)
    assert (summary["separator"], summary["stop_sequence"]) == ("\n\n###\n\n", "\n")
    assert summary["changes"] == [
        "removed 20 exact duplicates",
        "kept the separator '\\n\\n###\\n\\n' that every prompt already ends with",
        "kept the stop sequence '\\n' that every completion already ends with",
    ]
    written = _read(out / "train.jsonl") + _read(out / "valid.jsonl")
    assert sorted(written, key=lambda x: x["prompt"]) == sorted(
        rows[:80], key=lambda x: x["prompt"]
    )

"""`ftsweep validate` states the total of every counted finding in words, says what removes
duplicates, and prices what every example repeats (a shared prefix or suffix) per epoch."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

from orchestrator.catalog.tokens import counter_for
from orchestrator.data.checks import check_dataset
from tests.conftest import Result
from tests.helpers import pc_rows, write_jsonl

Cli = Callable[..., Result]

#: `validate`'s default model (docs/architecture.md): cl100k_base
DEFAULT_MODEL = "gpt-3.5-turbo-0613"
PREFIX = "Classify the sentiment of this review: "
SEPARATOR = "\n\nAnswer with one word.\n\n###\n\n"


def _reviews(n: int) -> list[dict[str, str]]:
    rng = random.Random(0)
    words = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel"]
    return [
        {
            "prompt": f"{PREFIX}{' '.join(rng.choice(words) for _ in range(6))} {i}{SEPARATOR}",
            "completion": f" {'positive' if i % 2 else 'negative'} review\n",
        }
        for i in range(n)
    ]


def _with_duplicates(tmp_path: Path) -> Path:
    rows: list[dict[str, Any]] = _reviews(300)
    for k in range(60):  # line 41 repeats line 11, line 44 line 12, ...
        rows.insert(40 + 3 * k, dict(rows[10 + k]))
    return write_jsonl(tmp_path / "reviews.jsonl", rows)


def test_sixty_duplicates_say_sixty_and_prepare_removes_them(tmp_path: Path, cli: Cli) -> None:
    path = _with_duplicates(tmp_path)
    r = cli("validate", path)
    assert r.code == 0, r.err
    found = [line for line in r.out.splitlines() if "exact duplicate" in line]
    assert found == [
        f"  warning  {path}:41: exact duplicate of an earlier example (line 41 repeats line 11): "
        "it counts twice in training; `ftsweep prepare` removes exact duplicates (60 duplicated "
        "examples in all: lines 41, 44, 47, 50, 53, 56, ...)"
    ]
    data = json.loads(cli("validate", path, "--json").out)
    (dup,) = [f for f in data["findings"] if f["code"] == "duplicate"]
    assert (dup["count"], dup["noun"], len(dup["lines"])) == (60, "duplicated examples", 20)

    # what the message promises: prepare removes them, and the result has none
    out = tmp_path / "prepared"
    r = cli("prepare", path, "--out", out, "--valid-fraction", "0")
    assert r.code == 0, r.err
    assert "removed 60 exact duplicates" in r.err
    prepared = json.loads(cli("validate", out / "train.jsonl", "--json").out)
    assert prepared["train"]["n_examples"] == 300
    assert not [f for f in prepared["findings"] if f["code"] == "duplicate"]


def test_one_duplicate_reads_as_one(tmp_path: Path, cli: Cli) -> None:
    rows: list[dict[str, Any]] = _reviews(30)
    rows.append(dict(rows[4]))
    path = write_jsonl(tmp_path / "one.jsonl", rows)
    r = cli("validate", path)
    assert (
        f"  warning  {path}:31: exact duplicate of an earlier example (line 31 repeats line 5): "
        "it counts twice in training; `ftsweep prepare` removes exact duplicates\n"
    ) in r.out


def test_per_line_findings_state_their_total(tmp_path: Path, cli: Cli) -> None:
    rows = pc_rows(200)
    for i in range(20, 32):  # 12 prompts without the separator
        rows[i]["prompt"] = rows[i]["prompt"].removesuffix("\n\n###\n\n")
    train = write_jsonl(tmp_path / "train.jsonl", rows)
    valid = write_jsonl(tmp_path / "valid.jsonl", [*pc_rows(20, start=500), *rows[100:103]])
    r = cli("validate", train, "--valid", valid)
    assert r.code == 0, r.err
    assert (
        f"  warning  {train}:21: prompt does not end with the separator '\\n\\n###\\n\\n' that "
        "the others end with (12 prompts without the separator in all: lines 21, 22, 23, 24, 25, "
        "26, ...)"
    ) in r.out.splitlines()
    assert (
        f"  warning  {valid}:21: validation example also in the training file (line 21 = "
        "training line 101): the validation loss looks better than it is; remove it from one "
        "file (3 overlapping examples in all: lines 21, 22, 23)"
    ) in r.out.splitlines()


def test_a_shared_prefix_and_suffix_are_priced_per_epoch(tmp_path: Path, cli: Cli) -> None:
    path = write_jsonl(tmp_path / "reviews.jsonl", _reviews(300))
    r = cli("validate", path)
    assert r.code == 0, r.err
    count = counter_for(DEFAULT_MODEL).count  # tiktoken's own count of each text
    lines = r.out.splitlines()

    def cost(text: str) -> str:
        return f"{count(text)} tokens each, {count(text) * 300:,} per epoch over 300 examples"

    assert (
        f"  warning  {path}: every prompt starts with {PREFIX!r} ({cost(PREFIX)}): fine-tuning "
        "needs no repeated instruction; removing it saves those tokens"
    ) in lines
    assert (
        f"  info     {path}: every prompt ends with {SEPARATOR!r} ({cost(SEPARATOR)}): a "
        "separator needs only a few characters (such as ' ->' or '\\n\\n###\\n\\n'); the rest "
        "is repeated in every example"
    ) in lines
    # 'negative review' and 'positive review' share 'tive review\n': whole words only
    assert (
        f"  info     {path}: every completion ends with ' review\\n' ({cost(' review' + chr(10))})"
        ": a stop sequence needs only a few characters (such as '\\n' or ' END'); the rest is "
        "repeated in every example"
    ) in lines


def test_without_a_tokenizer_the_price_is_in_characters(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "reviews.jsonl", _reviews(300))
    report = check_dataset(path)  # no counter: characters
    by = {f.code: f for f in report.findings}
    assert f"({len(PREFIX)} characters each, {len(PREFIX) * 300:,} per epoch over 300 " in (
        by["common_prompt_prefix"].message
    )
    assert by["common_prompt_suffix"].message.startswith(
        f"every prompt ends with {SEPARATOR!r} ({len(SEPARATOR)} characters each"
    )


def test_short_endings_and_differing_texts_get_no_note(tmp_path: Path) -> None:
    # the usual separator and stop sequence alone are conventions, not repeated text
    report = check_dataset(write_jsonl(tmp_path / "pc.jsonl", pc_rows(50)))
    codes = {f.code for f in report.findings}
    assert not codes & {"common_prompt_suffix", "common_completion_suffix"}


def test_a_long_shared_prefix_and_suffix_are_quoted_cut_and_priced_whole(tmp_path: Path) -> None:
    """A shared text over 60 characters is quoted in part, with '...' where it was cut (a
    cut mid-word must not read as the whole text), and priced whole."""
    long_prefix = "You are a support assistant for ACME. Read the ticket and classify it: "
    long_suffix = " Answer with one word: billing, shipping, technical or other.\n\n###\n\n"
    rows = [
        {"prompt": f"{long_prefix}{i}{long_suffix}", "completion": f" x{i}\n"} for i in range(40)
    ]
    report = check_dataset(write_jsonl(tmp_path / "t.jsonl", rows))  # priced in characters
    by = {f.code: f.message for f in report.findings}
    assert by["common_prompt_prefix"].startswith(
        f"every prompt starts with {long_prefix[:60]!r}... ({len(long_prefix)} characters each"
    )
    assert by["common_prompt_suffix"].startswith(
        f"every prompt ends with ...{long_suffix[-60:]!r} ({len(long_suffix)} characters each"
    )

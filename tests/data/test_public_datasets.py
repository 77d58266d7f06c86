"""The real public datasets: what the checks must say about them."""

from __future__ import annotations

import json
from pathlib import Path

from orchestrator.catalog.tokens import openai_counter
from orchestrator.data.checks import check_dataset


def test_gsm8k_train_is_valid_chat_with_exact_token_counts(cli, public: Path) -> None:
    r = cli("validate", public / "microsoft-foundry_gsm8k_chat_train.jsonl", "--json")
    assert r.code == 0, r.err
    report = json.loads(r.out)
    train = report["train"]
    assert train["n_examples"] == 449
    assert train["format"] == "chat"
    assert report["ok"] is True
    assert [f for f in report["findings"] if f["severity"] == "error"] == []
    # cl100k_base counts by the cookbook's formula (pinned; the encoding is hash-verified)
    assert train["total_tokens"] == sum(
        _cookbook_count(json.loads(line)["messages"])
        for line in (public / "microsoft-foundry_gsm8k_chat_train.jsonl").open()
    )
    assert report["default_epochs"] == 3


def _cookbook_count(messages: list[dict[str, str]]) -> int:
    """The cookbook's num_tokens_from_messages, written out independently with tiktoken."""
    from orchestrator.catalog.tokens import encoding

    enc = encoding("cl100k_base")  # a tiktoken.Encoding, built offline
    n = 0
    for m in messages:
        n += 3
        for key, value in m.items():
            n += len(enc.encode(value))
            if key == "name":
                n += 1
    return n + 3


def test_gsm8k_train_and_valid_have_no_overlap(public: Path) -> None:
    report = check_dataset(
        public / "microsoft-foundry_gsm8k_chat_train.jsonl",
        public / "microsoft-foundry_gsm8k_chat_validation.jsonl",
        openai_counter("gpt-4o-mini"),
        model="gpt-4o-mini",
    )
    assert report.ok
    assert report.valid is not None and report.valid.n_examples == 50
    assert not [f for f in report.findings if f.code == "train_valid_overlap"]
    assert report.encoding == "o200k_base"
    assert report.cost_per_epochs[3] == round(report.train.billed_tokens * 3 * 3.0 / 1e6, 4)


def test_cookbook_toy_file_findings_match_the_notebook(cli, public: Path) -> None:
    path = public / "openai-cookbook_toy_chat_fine_tuning.jsonl"
    r = cli("validate", path, "--json")
    assert r.code == 2  # 5 examples: the API requires 10
    report = json.loads(r.out)
    by_code = {f["code"]: f for f in report["findings"]}
    assert by_code["too_few_examples"]["severity"] == "error"
    assert by_code["missing_system_message"]["lines"] == [3]
    assert by_code["missing_user_message"]["lines"] == [4]
    assert by_code["over_token_limit"]["lines"] == [5]
    assert "8,032 tokens" in by_code["over_token_limit"]["message"]
    formats = {
        "data_type",
        "missing_messages_list",
        "message_missing_key",
        "message_unrecognized_key",
        "unrecognized_role",
        "missing_content",
        "example_missing_assistant_message",
    }
    assert not formats & set(by_code)  # the notebook finds no format errors
    train = report["train"]
    # the notebook's distributions (cl100k_base, its approximate formula)
    assert (train["tokens"]["min"], train["tokens"]["max"]) == (26, 8032)
    assert train["tokens"]["mean"] == 1648.4 and train["tokens"]["median"] == 45
    assert (train["trained_tokens"]["min"], train["trained_tokens"]["max"]) == (4, 8000)
    assert (train["messages"]["min"], train["messages"]["max"], train["messages"]["mean"]) == (
        2,
        9,
        3.8,
    )
    assert train["billed_tokens"] == 4306  # the old notebook's 4,096-token limit
    assert report["default_epochs"] == 20


def test_toy_file_table_names_each_finding_with_its_line(cli, public: Path) -> None:
    path = public / "openai-cookbook_toy_chat_fine_tuning.jsonl"
    r = cli("validate", path)
    assert r.code == 2
    assert f"{path}:3: example has no system message" in r.out
    assert f"{path}:4: example has no user message" in r.out
    assert f"{path}:5: example has 8,032 tokens" in r.out
    assert "default n_epochs for 5 examples: 20" in r.out
    assert r.out.rstrip().endswith("INVALID: 1 error, 3 warnings")


def test_model_limit_changes_the_verdict_on_long_examples(public: Path) -> None:
    path = public / "openai-cookbook_toy_chat_fine_tuning.jsonl"
    report = check_dataset(path, counter=openai_counter("gpt-4o-mini"), model="gpt-4o-mini")
    assert not [f for f in report.findings if f.code == "over_token_limit"]
    assert report.train.billed_tokens == report.train.total_tokens

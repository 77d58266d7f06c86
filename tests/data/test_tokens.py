"""Exact token counts with no network."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.catalog.tokens import PINNED_SHA256, counter_for, model_info
from orchestrator.core.errors import TokenizerError

ROOT = Path(__file__).resolve().parents[2]
NO_NETWORK = (
    "import socket\n"
    "def no_net(*a, **k): raise OSError('network disabled in this test')\n"
    "socket.socket.connect = no_net\n"
)


def _offline(code: str, env: dict[str, str]) -> str:
    """Run ``code`` in a fresh interpreter with no network; its stdout."""
    proc = subprocess.run(
        [sys.executable, "-c", NO_NETWORK + code],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), **env},
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def test_encodings_load_offline_from_the_carried_tables(tmp_path: Path) -> None:
    # A fresh, empty tiktoken cache and no network: the tables must come from the package.
    cache, home = tmp_path / "cache", tmp_path / "home"
    code = (
        "from orchestrator.catalog.tokens import counter_for, encoding\n"
        "print(counter_for('gpt-4o-mini').count('hello world'),"
        " counter_for('gpt-3.5-turbo').count('hello world'),"
        " encoding('cl100k_base').encode('tiktoken is great!'))\n"
    )
    env = {"TIKTOKEN_CACHE_DIR": str(cache), "FTSWEEP_HOME": str(home)}
    assert _offline(code, env) == "2 2 [83, 1609, 5963, 374, 2294, 0]"
    # the converted tables, and the copy tiktoken's load_tiktoken_bpe caches of each
    for folder in (home / "tiktoken", cache):
        kept = [p for p in folder.iterdir() if p.is_file()]
        assert {hashlib.sha256(p.read_bytes()).hexdigest() for p in kept} == set(
            PINNED_SHA256.values()
        )
    # a table changed on disk is refused by tiktoken's hash check, and written again
    table = home / "tiktoken" / "cl100k_base.tiktoken"
    table.write_bytes(table.read_bytes().replace(b" 0\n", b" 1\n", 1))
    for cached in cache.iterdir():
        cached.unlink()
    assert _offline(code, env) == "2 2 [83, 1609, 5963, 374, 2294, 0]"
    assert hashlib.sha256(table.read_bytes()).hexdigest() == PINNED_SHA256["cl100k_base"]


@pytest.mark.parametrize("name", sorted(PINNED_SHA256))
def test_the_encodings_are_tiktokens_own(tmp_path: Path, name: str) -> None:
    """tiktoken's own constructor (``tiktoken_ext.openai_public``), fed the same table through
    its cache, builds the same pattern, special tokens and token ids."""
    texts = [
        "hello world",
        "naïve café — Zürich, 12345678 tokens!",
        "def f(x):\n    return x**2\n\n\n",
        "I'LL  say   it's   DONE's\r\n\tend  ",
        "数据检查 and émojis 🎉🎉",
        "<|endoftext|> is special; <|fim_prefix|> may be",
    ]
    # tiktoken's cache keeps a download under the SHA-1 of its URL: only this test relies on it
    url = f"https://openaipublic.blob.core.windows.net/encodings/{name}.tiktoken"
    cache = tmp_path / "cache"
    code = (
        "import hashlib, json, os, shutil\n"
        "from orchestrator.catalog.tokens import encoding, tables_dir\n"
        f"ours = encoding({name!r})\n"
        "os.makedirs(os.environ['TIKTOKEN_CACHE_DIR'], exist_ok=True)\n"
        f"shutil.copy(tables_dir() / '{name}.tiktoken', os.path.join("
        f"os.environ['TIKTOKEN_CACHE_DIR'], hashlib.sha1({url!r}.encode()).hexdigest()))\n"
        "import tiktoken\n"
        "from tiktoken_ext import openai_public\n"
        f"theirs = tiktoken.Encoding(**getattr(openai_public, {name!r})())\n"
        f"texts = {texts!r}\n"
        "same = [ours.encode(t, allowed_special='all') == theirs.encode(t, allowed_special='all')"
        " and ours.encode_ordinary(t) == theirs.encode_ordinary(t) for t in texts]\n"
        "print(json.dumps([same, ours.n_vocab == theirs.n_vocab,"
        " ours.special_tokens_set == theirs.special_tokens_set,"
        " ours._pat_str == theirs._pat_str, ours._special_tokens == theirs._special_tokens]))\n"
    )
    env = {"TIKTOKEN_CACHE_DIR": str(cache), "FTSWEEP_HOME": str(tmp_path / "home")}
    assert _offline(code, env) == json.dumps([[True] * len(texts), True, True, True, True])


@pytest.mark.parametrize(
    ("model", "encoding", "limit"),
    [
        ("gpt-4o-mini-2024-07-18", "o200k_base", 65_536),
        ("gpt-35-turbo-0125", "cl100k_base", 16_385),
        ("ft:gpt-4.1-nano-2025-04-14:org:suffix:abc123", "o200k_base", 32_768),
        ("gpt-3.5-turbo-0613", "cl100k_base", 4_096),
    ],
)
def test_model_names_resolve(model: str, encoding: str, limit: int) -> None:
    info = model_info(model)
    assert (info.encoding, info.max_tokens_per_example) == (encoding, limit)


def test_unknown_model_lists_known_ones() -> None:
    # issue 24: the offered list names the models one can still train, with their dates
    with pytest.raises(
        TokenizerError, match=r"unknown model 'llama-9'; known: gpt-4o-mini, gpt-4o"
    ):
        model_info("llama-9")


def test_batch_and_single_counts_agree() -> None:
    c = counter_for("gpt-4o-mini")
    texts = ["", "Hello, world!", "naïve café — Zürich", "def f(x):\n    return x**2\n"]
    assert c.count_many(texts) == [c.count(t) for t in texts]
    assert c.count("") == 0


def test_local_models_count_as_the_trainer_encodes(tmp_path: Path, tiny_model: Path) -> None:
    """The tiny model's tokenizer is byte-level: one token per byte, plus BOS and EOS."""
    import json

    from orchestrator.backends.counters import counter_for_model
    from orchestrator.backends.local.tasks import write_task
    from orchestrator.data.checks import check_dataset

    train, _ = write_task("reverse", tmp_path, n_train=40, n_valid=10)
    rows = [json.loads(line) for line in train.read_text().splitlines()]
    report = check_dataset(train, counter=counter_for_model("tiny"), model="tiny")
    assert report.encoding == "tiny tokenizer"
    n_bytes = sum(len(r["prompt"].encode()) + len(r["completion"].encode()) for r in rows)
    assert report.train.total_tokens == n_bytes + 2 * len(rows)
    completion = sum(len(r["completion"].encode()) + 1 for r in rows)  # + EOS
    assert report.train.trained_tokens is not None
    assert report.train.trained_tokens.mean == round(completion / len(rows), 2)
    assert report.price_per_million is None  # your own hardware


def test_unknown_model_is_a_usage_error(
    cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.helpers import chat_rows, write_jsonl

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    path = write_jsonl(tmp_path / "t.jsonl", chat_rows(12))
    r = cli("validate", path, "--model", "no-such/model-here")
    assert r.code == 2
    assert r.err.strip().splitlines()[-1].startswith("error: unknown model 'no-such/model-here'")

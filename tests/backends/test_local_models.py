"""Model names, the model cache, ``ftsweep models``, options and the toy tasks."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from orchestrator.backends.local import LocalOptions, LoraOptions, models
from orchestrator.backends.local.options import FULL_LR, LORA_LR, TINY_LR
from orchestrator.backends.local.tasks import generate, write_task
from orchestrator.core.errors import BackendError, UnsupportedParameterError, UsageError


def test_builtin_tiny_resolves_to_its_cached_folder(tiny_model: Path) -> None:
    source = models.resolve("tiny")
    assert source.kind == "builtin" and source.tiny
    assert Path(source.location) == tiny_model
    assert (tiny_model / "config.json").is_file() and (tiny_model / "tokenizer.json").is_file()
    assert models.pull("tiny") == tiny_model  # cached: nothing rebuilt


def test_a_model_folder_resolves_as_a_folder(tiny_model: Path, tmp_path: Path) -> None:
    source = models.resolve(str(tiny_model))
    assert source.kind == "dir" and source.tiny  # its metadata says it is the tiny model
    with pytest.raises(UsageError, match=r"no config\.json"):
        models.resolve(str(tmp_path))


@pytest.mark.parametrize("name", ["HuggingFaceTB/SmolLM2-135M-Instruct", "openai-community/gpt2"])
def test_org_slash_name_is_a_hub_id(name: str) -> None:
    assert models.resolve(name).kind == "hub"


@pytest.mark.parametrize(
    "name", ["./no/such/dir", "missing.gguf", "white space", "gpt2", "gpt-4o-mini", "a/b/c"]
)
def test_unusable_names_are_usage_errors(name: str) -> None:
    with pytest.raises(UsageError, match=r"hub id \(org/name\)|no such GGUF"):
        models.resolve(name)


def test_an_unknown_model_fails_fast_offline(
    ftsweep_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No hub round trips: offline is the default, and a hub id not in the cache is unknown."""
    import time

    from orchestrator.backends.local import LocalBackend
    from orchestrator.core.errors import UnknownModelError

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    assert models.hub_offline()
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    assert not models.hub_offline()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    options = LocalBackend.Options()
    for name in ("gpt-4o-mini", "nobody/nothing"):
        started = time.monotonic()
        with pytest.raises(UnknownModelError, match=repr(name)):
            LocalBackend.token_counter(name, options)
        assert time.monotonic() - started < 5


def test_an_unknown_builtin_cannot_be_pulled() -> None:
    with pytest.raises(UsageError, match="known: tiny, smollm2-135m"):
        models.pull("huge")


def test_a_hub_model_offline_is_a_backend_error(ftsweep_home: Path) -> None:
    with pytest.raises(BackendError, match="cannot load model 'nobody/nothing'"):
        models.load(models.resolve("nobody/nothing"))


def test_list_models_reports_the_cache(tiny_model: Path) -> None:
    infos = {m.name: m for m in models.list_models()}
    assert set(infos) == {"tiny", "smollm2-135m"}
    assert infos["tiny"].cached and infos["tiny"].path == tiny_model
    assert infos["tiny"].size_bytes and infos["tiny"].size_bytes > 100_000


def test_cli_models_list_and_pull(tiny_model: Path, cli: Callable[..., Any]) -> None:
    listed = cli("models", "list")
    assert listed.code == 0
    assert any(line.split()[:2] == ["tiny", "yes"] for line in listed.out.splitlines())
    as_json = json.loads(cli("models", "list", "--json").out)
    assert {row["name"] for row in as_json} == {"tiny", "smollm2-135m"}
    pulled = cli("models", "pull", "tiny")
    assert pulled.code == 0 and pulled.out.strip() == str(tiny_model)
    bad = cli("models", "pull", "huge")
    assert bad.code == 2 and "unknown built-in model 'huge'" in bad.err


def test_options_parse_and_round_trip() -> None:
    opts = LocalOptions.parse(
        {"max_device_batch": 4, "lora": {"r": 4, "target_modules": ["q_proj"]}}
    )
    assert opts.lora == LoraOptions(r=4, target_modules=("q_proj",))
    assert LocalOptions.parse(opts.to_dict()) == opts
    assert LocalOptions.parse({"lora": True}).lora == LoraOptions()
    assert LocalOptions.parse({"device": "cpu"}, base=opts).max_device_batch == 4


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        ({"lr": 1}, "unknown option 'lr'"),
        ({"max_device_batch": 0}, "max_device_batch"),
        ({"lora": {"rank": 4}}, "lora"),
        ({"lora": {"dropout": 1.5}}, "lora.dropout"),
        ({"device": "tpu"}, "device"),
        ({"base_learning_rate": -1}, "base_learning_rate"),
    ],
)
def test_bad_options_name_the_option(raw: dict[str, Any], match: str) -> None:
    with pytest.raises(UnsupportedParameterError, match=match):
        LocalOptions.parse(raw)


def test_base_learning_rates() -> None:
    assert LocalOptions().learning_rate(2.0, tiny=True) == 2 * TINY_LR
    assert LocalOptions().learning_rate(1.0, tiny=False) == FULL_LR
    assert LocalOptions(lora=LoraOptions()).learning_rate(1.0, tiny=False) == LORA_LR
    assert LocalOptions(base_learning_rate=0.5).learning_rate(0.1, tiny=True) == 0.05


def test_tasks_are_reproducible_and_splits_disjoint(tmp_path: Path) -> None:
    assert generate("reverse", 5, seed=1) == generate("reverse", 5, seed=1)
    assert generate("reverse", 5, seed=1) != generate("reverse", 5, seed=2)
    example = generate("random_labels", 1)[0]
    assert example["prompt"].startswith("code for ") and len(example["completion"]) == 5
    train, valid = write_task("reverse", tmp_path, n_train=30, n_valid=10, fmt="chat")
    rows = [json.loads(line) for path in (train, valid) for line in path.read_text().splitlines()]
    assert len(rows) == 40 and all("messages" in r for r in rows)
    users = [r["messages"][0]["content"] for r in rows]
    assert len(set(users)) == 40
    with pytest.raises(ValueError, match="unknown task"):
        generate("sorting", 3)

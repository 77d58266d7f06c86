"""Everything checkable is checked by the plan: exit 2, one line naming the file and the field,
before a study, an upload or a job exists. Through the public CLI, against real stores and a
real fine-tuning API simulator (which must see no request at all)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from orchestrator import apisim
from orchestrator.apisim.server import SimServer
from orchestrator.catalog.names import trainable_line
from orchestrator.core import clock
from tests.apisim.fixtures import openai_env, request_log
from tests.conftest import Result
from tests.helpers import chat_rows, write_jsonl

Cli = Callable[..., Result]
OPENAI_MODELS = trainable_line(clock.today())  # the models one can still train, with dates


@pytest.fixture
def stores(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The embedded stores' folder of this test (it must stay absent)."""
    root = tmp_path / "mlruns"
    monkeypatch.setenv("FTSWEEP_RUNS_DIR", str(root))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("FTSWEEP_OPTUNA_STORAGE", raising=False)
    return root


@pytest.fixture
def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[SimServer]:
    """An OpenAI-shaped API the openai backend would reach (it must not)."""
    sim = apisim.start(state=tmp_path / "apisim", speed=0)
    for var, value in openai_env(sim).items():
        monkeypatch.setenv(var, value)
    yield sim
    sim.close()


def _sweep(tmp_path: Path, backend: str, *, n_train: int = 40, **fields: Any) -> Path:
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    train = write_jsonl(data / "train.jsonl", chat_rows(n_train))
    valid = write_jsonl(data / "valid.jsonl", chat_rows(10, start=500))
    model = "gpt-4o-mini" if backend == "openai" else "tiny"
    spec: dict[str, Any] = {
        "name": f"checks-{backend}",
        "data": {"train": str(train), "valid": str(valid)},
        "backend": {"name": backend, "model": model},
        "trials": 2,
    }
    for key, value in fields.items():
        if key == "options":
            spec["backend"]["options"] = value
        elif key == "model":
            spec["backend"]["model"] = value
        else:
            spec[key] = value
    path = tmp_path / f"{backend}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def _refused(r: Result, line: str, stores: Path) -> None:
    """Exit 2, exactly ``error: LINE`` on stderr, nothing on stdout, and no store."""
    assert r.code == 2, r.err
    assert r.err == f"error: {line}\n"
    assert r.out == ""
    assert not (stores / "optuna.db").exists() and not (stores / "mlflow.db").exists()
    assert not stores.exists()


# -- (a) the space against the backend's ranges -------------------------------------------


@pytest.mark.parametrize("command", ["space", "estimate", "run"])
def test_a_range_beyond_the_backends_is_refused(
    cli: Cli, tmp_path: Path, stores: Path, server: SimServer, command: str
) -> None:
    spec = _sweep(tmp_path, "openai", space={"n_epochs": {"low": 45, "high": 60}})
    r = cli(command, spec)
    _refused(r, f"{spec}: space.n_epochs.high: openai accepts n_epochs 1 to 50, got 60", stores)
    assert request_log(server) == []


def test_a_fixed_value_and_a_choice_are_checked_too(
    cli: Cli, tmp_path: Path, stores: Path, server: SimServer
) -> None:
    spec = _sweep(tmp_path, "openai", space={"n_epochs": 51})
    _refused(
        cli("space", spec),
        f"{spec}: space.n_epochs: openai accepts n_epochs 1 to 50, got 51",
        stores,
    )
    spec = _sweep(tmp_path, "openai", space={"n_epochs": [3, 99]})
    line = f"{spec}: space.n_epochs.choices.1: openai accepts n_epochs 1 to 50, got 99"
    _refused(cli("run", spec), line, stores)
    spec = _sweep(tmp_path, "local", space={"learning_rate_multiplier": {"low": 0, "high": 0.5}})
    line = (
        f"{spec}: space.learning_rate_multiplier.low: "
        "local accepts learning_rate_multiplier > 0, got 0"
    )
    _refused(cli("space", spec), line, stores)
    assert request_log(server) == []


# -- (b) the dataset-level data rules ----------------------------------------------------


@pytest.mark.parametrize("backend", ["openai", "local"])
def test_five_training_examples_stop_validate_estimate_and_run(
    cli: Cli, tmp_path: Path, stores: Path, server: SimServer, tiny_model: Path, backend: str
) -> None:
    spec = _sweep(tmp_path, backend, n_train=5)
    train = tmp_path / "data" / "train.jsonl"
    r = cli("validate", train)
    assert r.code == 2
    assert "5 examples; the fine-tuning API requires at least 10" in r.out
    for command in ("space", "estimate", "run"):
        line = f"{train}: 5 examples; the fine-tuning API requires at least 10"
        _refused(cli(command, spec), line, stores)
    assert request_log(server) == []


def test_a_data_error_names_the_first_and_counts_the_rest(
    cli: Cli, tmp_path: Path, stores: Path, server: SimServer
) -> None:
    spec = _sweep(tmp_path, "openai")
    train = tmp_path / "data" / "train.jsonl"
    valid = tmp_path / "data" / "valid.jsonl"
    lines = train.read_text().splitlines()
    lines[2] = lines[4] = lines[6] = "{not json"
    train.write_text("\n".join(lines) + "\n")
    r = cli("run", spec)
    assert r.code == 2
    assert r.err.startswith(f"error: {train}:3: ")
    assert r.err.endswith(f" (2 more errors: run `ftsweep validate {train} --valid {valid}`)\n")
    assert r.err.count("\n") == 1 and "Traceback" not in r.err
    assert not stores.exists()


def test_training_and_validation_in_different_formats_are_refused(
    cli: Cli, tmp_path: Path, stores: Path, server: SimServer
) -> None:
    spec = _sweep(tmp_path, "openai")
    valid = tmp_path / "data" / "valid.jsonl"
    write_jsonl(valid, [{"prompt": f"q{i} ->", "completion": f" a{i}\n"} for i in range(10)])
    line = f"{valid}: validation data is prompt_completion, training data is chat"
    _refused(cli("estimate", spec), line, stores)


# -- (c) backend options, by the backend's own model -------------------------------------


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        ({"lr": 1}, "backend.options.lr: unknown field"),
        ({"torch_threads": "2"}, "backend.options.torch_threads: input should be a valid integer"),
        ({"lora": {"x": 1}}, "backend.options.lora.x: unknown field"),
        ({"lora": {"r": 0}}, "backend.options.lora.r: input should be greater than or equal to 1"),
        (
            {"lora": {"target_modules": 3}},
            "backend.options.lora.target_modules: input should be a valid string or a valid list",
        ),
        (
            {"lr": 1, "valid_every": 0.5},  # pydantic: declared fields first, then extras
            "backend.options.valid_every: input should be a valid integer (and 1 more problem)",
        ),
    ],
)
@pytest.mark.parametrize("command", ["space", "run"])
def test_local_options_name_the_field(
    cli: Cli, tmp_path: Path, stores: Path, command: str, options: dict[str, Any], problem: str
) -> None:
    spec = _sweep(tmp_path, "local", options=options)
    _refused(cli(command, spec), f"{spec}: {problem}", stores)


@pytest.mark.parametrize("command", ["space", "estimate", "run"])
def test_a_key_in_the_sweep_file_is_refused_without_repeating_it(
    cli: Cli, tmp_path: Path, stores: Path, server: SimServer, command: str
) -> None:
    secret = "sk-proj-do-not-print-me-4242"
    spec = _sweep(tmp_path, "openai", options={"api_key": secret})
    r = cli(command, spec)
    line = (
        f"{spec}: backend.options.api_key: credentials come from the environment, "
        "never from sweep files"
    )
    _refused(r, line, stores)
    assert secret not in r.out + r.err
    assert request_log(server) == []


def test_openai_options_are_typed(
    cli: Cli, tmp_path: Path, stores: Path, server: SimServer
) -> None:
    spec = _sweep(tmp_path, "openai", options={"timeout": "fast"})
    _refused(
        cli("run", spec), f"{spec}: backend.options.timeout: input should be a valid number", stores
    )
    spec = _sweep(tmp_path, "openai", options={"lora": True})
    _refused(cli("run", spec), f"{spec}: backend.options.lora: unknown field", stores)
    assert request_log(server) == []


# -- (d) hyperband's resource is the space's largest n_epochs ---------------------------


@pytest.mark.parametrize(("n_epochs", "most"), [([2, 8], 8), ({"low": 3, "high": 6}, 6), (5, 5)])
def test_hyperband_max_resource_is_the_most_epochs_of_the_space(n_epochs: Any, most: int) -> None:
    from orchestrator.backends.local import LocalBackend
    from orchestrator.config import SweepSpec
    from orchestrator.plan.samplers import make_pruner
    from orchestrator.plan.space import resolve_space

    spec = SweepSpec.model_validate(
        {
            "name": "hb",
            "data": {"train": "t.jsonl"},
            "backend": {"name": "local", "model": "tiny"},
            "space": {"n_epochs": n_epochs},
            "pruner": {"name": "hyperband"},
        }
    )
    space = resolve_space(spec.space, 100, LocalBackend)
    assert space.bounds("n_epochs")[1] == most
    pruner = make_pruner(spec, space, "hb.yaml")
    assert pruner._max_resource == most  # type: ignore[attr-defined]


# -- (e) the configurations to train first ----------------------------------------------

BASE = {"n_epochs": 3, "batch_size": 1, "learning_rate_multiplier": 0.1}


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        ({**BASE, "n_epochs": 60}, "enqueue.0.n_epochs: openai accepts n_epochs 1 to 50, got 60"),
        (
            {"n_epochs": 3, "learning_rate_multiplier": 0.1},
            "enqueue.0.batch_size: required field is missing (give every searched parameter: "
            "n_epochs, batch_size, learning_rate_multiplier; fixed ones may be left out)",
        ),
        (
            {**BASE, "prompt_loss_weight": 0.1},
            "enqueue.0.prompt_loss_weight: backend 'openai' does not accept prompt_loss_weight",
        ),
        (
            {**BASE, "n_epochs": 6},
            "enqueue.0.n_epochs: 6 is outside the search space (int 2 – 4)",
        ),
        (
            {**BASE, "n_epochs": 2.5},
            "enqueue.0.n_epochs: 2.5 is outside the search space (int 2 – 4)",
        ),
    ],
)
@pytest.mark.parametrize("command", ["space", "run"])
def test_enqueued_configurations_are_checked(
    cli: Cli,
    tmp_path: Path,
    stores: Path,
    server: SimServer,
    command: str,
    entry: dict[str, float],
    problem: str,
) -> None:
    spec = _sweep(tmp_path, "openai", enqueue=[entry])
    _refused(cli(command, spec), f"{spec}: {problem}", stores)
    assert request_log(server) == []


def test_a_fixed_parameter_may_be_left_out_of_an_entry(
    cli: Cli, tmp_path: Path, stores: Path, server: SimServer
) -> None:
    spec = _sweep(
        tmp_path,
        "openai",
        space={"n_epochs": 3},
        enqueue=[{"batch_size": 2, "learning_rate_multiplier": 0.05}],
    )
    r = cli("space", spec)
    assert r.code == 0, r.err
    spec = _sweep(tmp_path, "openai", space={"n_epochs": 3}, enqueue=[{**BASE, "n_epochs": 4}])
    _refused(
        cli("space", spec),
        f"{spec}: enqueue.0.n_epochs: 4 is outside the search space (fixed 3)",
        stores,
    )


# -- (f) the model, by the backend's token counter --------------------------------------


@pytest.mark.parametrize("command", ["estimate", "run"])
def test_an_unknown_openai_model_is_refused_at_once(
    cli: Cli, tmp_path: Path, stores: Path, server: SimServer, command: str
) -> None:
    spec = _sweep(tmp_path, "openai", model="gpt-9-turbo")
    started = time.monotonic()
    r = cli(command, spec)
    elapsed = time.monotonic() - started
    line = f"{spec}: backend.model: unknown model 'gpt-9-turbo'; known: {OPENAI_MODELS}"
    _refused(r, line, stores)
    assert elapsed < 1.0
    assert request_log(server) == []


def test_an_unknown_local_model_is_refused_without_the_hub(
    cli: Cli, tmp_path: Path, stores: Path, tiny_model: Path
) -> None:
    spec = _sweep(tmp_path, "local", model="gpt-4o-mini")
    line = (
        f"{spec}: backend.model: model 'gpt-4o-mini' is not a built-in name (tiny, "
        "smollm2-135m), a model folder, a .gguf file or a Hugging Face hub id (org/name)"
    )
    _refused(cli("estimate", spec), line, stores)


def test_validate_finds_local_models_through_the_backends(
    cli: Cli, tmp_path: Path, tiny_model: Path
) -> None:
    train = write_jsonl(tmp_path / "t.jsonl", chat_rows(12))
    r = cli("validate", train, "--model", "tiny", "--json")
    assert r.code == 0, r.err
    assert '"encoding": "tiny tokenizer"' in r.out
    r = cli("validate", train, "--model", "gpt-9-turbo")
    assert r.code == 2
    assert r.err.splitlines()[-1] == (
        f"error: unknown model 'gpt-9-turbo': not an OpenAI model ({OPENAI_MODELS}); "
        "azure: azure does not fine-tune 'gpt-9-turbo'; known: gpt-4o-mini, gpt-4o, gpt-4.1, "
        "gpt-4.1-mini, gpt-4.1-nano, gpt-oss-20b, Llama-3.3-70B-Instruct, Qwen-32B, "
        "Ministral-3B (or give its price: backend.options.prices); "
        "local: model 'gpt-9-turbo' is not a built-in name (tiny, smollm2-135m), a model "
        "folder, a .gguf file or a Hugging Face hub id (org/name)"
    )


# -- what passes the plan ----------------------------------------------------------------


def test_estimate_prices_by_the_backend(
    cli: Cli, tmp_path: Path, stores: Path, server: SimServer
) -> None:
    import json

    from orchestrator.plan.sweep import estimate_sweep, plan_sweep

    spec = _sweep(tmp_path, "openai", prices={"gpt-4o-mini": 10.0}, budget_usd=1.0)
    r = cli("estimate", spec, "--json")
    assert r.code == 0, r.err
    est = json.loads(r.out)
    plan = plan_sweep(spec, count_tokens=True)
    assert plan.options.model_dump()["prices"] == {"gpt-4o-mini": 10.0}
    tokens = plan.train.billed_tokens
    assert est["price_per_million"] == 10.0
    # the default search trains every job at the space's most epochs (2-4: 4)
    assert est["epochs"] == [4, 4]
    assert est["cost_per_trial"] == [round(tokens * 4 * 10 / 1e6, 4)] * 2
    assert estimate_sweep(plan).cost_per_trial == tuple(est["cost_per_trial"])
    assert request_log(server) == []
    assert not stores.exists()
    # a named sampler trains what it proposes: 2 to 4 epochs
    spec = _sweep(tmp_path, "openai", prices={"gpt-4o-mini": 10.0}, sampler={"name": "tpe"})
    est = json.loads(cli("estimate", spec, "--json").out)
    assert est["epochs"] == [2, 4]
    assert est["cost_per_trial"] == [
        round(tokens * 2 * 10 / 1e6, 4),
        round(tokens * 4 * 10 / 1e6, 4),
    ]


def test_backends_lists_ranges_jobs_and_prices(cli: Cli) -> None:
    r = cli("backends")
    assert r.code == 0, r.err
    rows = {line.split()[0]: line for line in r.out.splitlines()[1:]}
    assert "n_epochs 1 to 50, batch_size 1 to 256, learning_rate_multiplier > 0" in rows["openai"]
    assert rows["openai"].split()[-2:] == ["3", "yes"]
    assert rows["azure"].split()[-2:] == ["3", "yes"]  # 3 running per resource (2026-02)
    assert "prompt_loss_weight 0 to 1" in rows["local"]
    assert rows["local"].split()[-2:] == ["any", "no"]

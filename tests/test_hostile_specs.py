"""Hostile sweep files: every one is refused with one line naming the file and the field (or
line), exit 2, no traceback, nothing created, in bounded time, by ``space``, ``estimate`` and
``run`` alike; and a fuzz of the loader: a ``SweepSpec`` or a ``SpecError``, nothing else."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.config import SweepSpec, load_spec
from orchestrator.core.errors import SpecError
from tests.conftest import ROOT, Result
from tests.helpers import chat_rows, write_jsonl

BASE = "name: hostile\ndata: {train: train.jsonl, valid: valid.jsonl}\n"
BACKEND = "backend: {name: local, model: tiny}\n"
COMMANDS = ("space", "estimate", "run")
#: seconds any refusal may take, in process
QUICK = 3.0


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder with valid data; runs would go to ``runs/`` (which must never appear)."""
    write_jsonl(tmp_path / "train.jsonl", chat_rows(30))
    write_jsonl(tmp_path / "valid.jsonl", chat_rows(6, start=100))
    monkeypatch.setenv("FTSWEEP_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.delenv("FTSWEEP_OPTUNA_STORAGE", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return tmp_path


def _write(folder: Path, text: str | bytes, name: str = "sweep.yaml") -> Path:
    path = folder / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def _refused(
    cli: Callable[..., Result], command: str, spec: Path, expected: str, folder: Path
) -> None:
    started = time.monotonic()
    r = cli(command, spec)
    elapsed = time.monotonic() - started
    lines = r.err.splitlines()
    assert r.code == 2, r
    assert len(lines) == 1, r.err
    assert lines[0].startswith(f"error: {spec}: "), lines[0]
    if expected.startswith("re:"):
        assert re.search(expected[3:], lines[0]), lines[0]
    else:
        assert expected in lines[0], lines[0]
    assert "Traceback" not in r.err + r.out
    assert not (folder / "runs").exists()
    assert elapsed < QUICK, f"{command} took {elapsed:.1f} s"


# -- the file itself -------------------------------------------------------------------------

FLOW_1000 = "backend: {name: local, model: tiny, options: {x: " + "[" * 1000 + "]" * 1000 + "}}\n"
BLOCK_1000 = "backend:\n  name: local\n  model: tiny\n  options:\n" + "".join(
    " " * (4 + 2 * i) + f"k{i}:\n" for i in range(1000)
)
BOMB = BACKEND + "".join(
    f"x{i}: &x{i} [" + ", ".join([f"*x{i - 1}" if i else "lol"] * 9) + "]\n" for i in range(9)
)

FILE_CASES: dict[str, tuple[str | bytes, str]] = {
    "nested_1000_flow": (BASE + FLOW_1000, "line 3: nested deeper than 50 levels"),
    "nested_1000_block": (BASE + BLOCK_1000, "nested deeper than 50 levels"),
    "alias_bomb": (BASE + BOMB, "the document has more than 100,000 values"),
    "recursive_alias": (BASE + BACKEND + "x: &a [1, *a]\n", "alias *a is used inside its own"),
    "duplicate_key": (BASE + BACKEND + "trials: 3\ntrials: 4\n", "line 5: duplicate key 'trials'"),
    "duplicate_nested_key": (
        BASE + BACKEND + "space:\n  n_epochs: 2\n  n_epochs: 3\n",
        "line 6: duplicate key 'n_epochs' (first on line 5)",
    ),
    "duplicate_in_flow": (BASE + "backend: {name: local, model: a, model: b}\n", "line 3: dupl"),
    "not_utf8": (BASE.encode() + BACKEND.encode() + b"trials: 3 # caf\xe9\n", "line 4: not UTF-8"),
    "nul_character": (BASE + BACKEND + "trials: 3\x00\n", "invalid YAML"),
    "invalid_yaml": (BASE + BACKEND + "space: [unclosed\n", "invalid YAML"),
    "int_of_5000_digits": (
        BASE + BACKEND + "trials: " + "7" * 5000 + "\n",
        "line 4: invalid YAML: cannot read",
    ),
    "impossible_date": (BASE + BACKEND + "target: 2024-02-30\n", "cannot read '2024-02-30'"),
    "python_tag": (
        BASE + BACKEND + "target: !!python/object/apply:os.system [echo hi]\n",
        "could not determine a constructor",
    ),
    "two_documents": (BASE + BACKEND + "---\ntrials: 3\n", "invalid YAML"),
    "a_list": ("- 1\n- 2\n", "a sweep file must be a YAML mapping"),
    "empty": ("", "a sweep file must be a YAML mapping"),
    "control_char_key": (BASE + BACKEND + '"tri\\x07als": 3\n', "tri\\x07als: unknown field"),
}


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("case", sorted(FILE_CASES))
def test_hostile_file(cli, folder: Path, command: str, case: str) -> None:
    text, expected = FILE_CASES[case]
    _refused(cli, command, _write(folder, text), expected, folder)


@pytest.mark.parametrize("command", COMMANDS)
def test_a_50_mb_file_is_refused_by_its_size(cli, folder: Path, command: str) -> None:
    spec = _write(folder, BASE + BACKEND + "# padding\n" * (50 * 1024 * 1024 // 10))
    size = spec.stat().st_size
    expected = f"the file is {size:,} bytes; sweep files are at most 1 MiB"
    _refused(cli, command, spec, expected, folder)


def test_a_1_mib_file_of_values_loads_or_fails_quickly(cli, folder: Path) -> None:
    lines = [BASE, BACKEND, "backend_notes:\n"]
    lines += ["  - [1, 2, 3, 4, 5, 6, 7, 8]\n" for _ in range(30_000)]  # < 1 MiB, 270k values
    spec = _write(folder, "".join(lines))
    assert spec.stat().st_size < 1024 * 1024
    _refused(cli, "space", spec, "more than 100,000 values", folder)


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda d: (os.mkfifo(d / "fifo.yaml"), d / "fifo.yaml")[1], "is a named pipe (FIFO)"),
        (lambda d: Path("/dev/zero"), "is a character device, not a regular file"),
        (lambda d: (os.mkdir(d / "dir.yaml"), d / "dir.yaml")[1], "is a directory"),
        (lambda d: d / "missing.yaml", "no such file"),
        (
            lambda d: (os.symlink(d / "loop.yaml", d / "loop.yaml"), d / "loop.yaml")[1],
            "cannot read: Too many levels of symbolic links",
        ),
    ],
    ids=["fifo", "dev_zero", "directory", "missing", "symlink_loop"],
)
@pytest.mark.timeout(30)
def test_not_a_regular_file(cli, folder: Path, command: str, make: Any, expected: str) -> None:
    if not hasattr(os, "mkfifo") or not Path("/dev/zero").exists():
        pytest.skip("needs a POSIX system")
    _refused(cli, command, make(folder), expected, folder)


@pytest.mark.parametrize("target", ["fifo", "/dev/zero", "big"])
def test_the_real_process_answers_in_seconds(folder: Path, target: str) -> None:
    if target == "fifo":
        spec = folder / "fifo.yaml"
        os.mkfifo(spec)
    elif target == "big":
        spec = _write(folder, BASE + BACKEND + "# padding\n" * (50 * 1024 * 1024 // 10))
    else:
        spec = Path(target)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "FTSWEEP_RUNS_DIR": str(folder / "runs")}
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "orchestrator", "run", str(spec)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        env=env,
        cwd=folder,
    )
    elapsed = time.monotonic() - started
    assert proc.returncode == 2, proc
    assert proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith(f"error: {spec}: ")
    assert "Traceback" not in proc.stderr
    assert not (folder / "runs").exists()
    assert elapsed < 15, f"{elapsed:.1f} s"


# -- the fields ------------------------------------------------------------------------------

FIELD_CASES: dict[str, tuple[str, str]] = {
    # numbers that are not finite
    "budget_inf": ("budget_usd: .inf", "budget_usd: input should be a finite number"),
    "budget_nan": ("budget_usd: .nan", "budget_usd: input should be a finite number"),
    "timeout_nan": ("timeout_s: .nan", "timeout_s: input should be a finite number"),
    "timeout_inf": ("timeout_s: .inf", "timeout_s: input should be a finite number"),
    "target_nan": ("target: .nan", "target: input should be a finite number"),
    "target_minus_inf": ("target: -.inf", "target: input should be a finite number"),
    "price_nan": ("prices: {tiny: .nan}", "prices.tiny: input should be a finite number"),
    "price_inf": ("prices: {tiny: .inf}", "prices.tiny: input should be a finite number"),
    "price_negative": ("prices: {tiny: -1}", "prices.tiny: input should be greater than or"),
    "lrm_inf": (
        "space: {learning_rate_multiplier: .inf}",
        "space.learning_rate_multiplier.value: input should be a finite number",
    ),
    "lrm_high_inf": (
        "space: {learning_rate_multiplier: {low: 0.1, high: .inf}}",
        "space.learning_rate_multiplier.high: input should be a finite number",
    ),
    "lrm_choice_nan": (
        "space: {learning_rate_multiplier: [0.1, .nan]}",
        "space.learning_rate_multiplier.choices.1: input should be a finite number",
    ),
    "lrm_zero_log": (
        "space: {learning_rate_multiplier: {low: 0, high: 0.2, log: true}}",
        "space.learning_rate_multiplier.low: must be > 0 on a log scale",
    ),
    "lrm_bool": (
        "space: {learning_rate_multiplier: true}",
        "space.learning_rate_multiplier: input should be a valid dictionary",
    ),
    "epochs_float": ("space: {n_epochs: 2.5}", "space.n_epochs.value: input should be a valid"),
    "epochs_huge": (
        "space: {n_epochs: {low: 1, high: 100000000000000000000}}",
        "space.n_epochs.high: input should be less than or equal to 1000000",
    ),
    "batch_pct_nan": (
        "space: {batch_size: {low_pct: .nan, high_pct: 1}}",
        "space.batch_size.low_pct: input should be a finite number",
    ),
    # seeds numpy and the APIs cannot take
    "sampler_seed_negative": ("sampler: {seed: -1}", "sampler.seed: input should be greater"),
    "sampler_seed_2_66": (
        f"sampler: {{seed: {2**66}}}",
        "sampler.seed: input should be less than or equal to 2147483647",
    ),
    "sampler_seed_2_32": (f"sampler: {{seed: {2**32}}}", "sampler.seed: input should be less"),
    "sampler_seed_string": ("sampler: {seed: '1'}", "sampler.seed: input should be a valid int"),
    "seed_negative": ("seed: -1", "seed: input should be greater than or equal to 0"),
    "seed_2_40": (f"seed: {2**40}", "seed: input should be less than or equal to 2147483647"),
    # strict types and sane counts
    "trials_true": ("trials: true", "trials: input should be a valid integer"),
    "trials_string": ("trials: '3'", "trials: input should be a valid integer"),
    "trials_float": ("trials: 3.0", "trials: input should be a valid integer"),
    "trials_zero": ("trials: 0", "trials: input should be greater than or equal to 1"),
    "trials_huge": ("trials: 1000000000", "trials: input should be less than or equal to 100000"),
    "parallel_true": ("parallel: true", "parallel: input should be a valid integer"),
    "parallel_huge": ("parallel: 100000", "parallel: input should be less than or equal to 1000"),
    "parallel_negative": ("parallel: -3", "parallel: input should be greater than or equal to 1"),
    "name_space": ("name: 'a b'", "name: string should match pattern"),
    "name_slash": ("name: ../../etc", "name: string should match pattern"),
    "name_newline": ('name: "a\\nb"', "name: string should match pattern"),
    "name_number": ("name: 7", "name: input should be a valid string"),
    "name_long": ("name: " + "a" * 101, "name: string should match pattern"),
    "train_not_a_path": ("data: {train: 5}", "data.train: expected a file path"),
    "model_empty": ("backend: {name: local, model: ''}", "backend.model: string should have"),
    "backend_name_list": ("backend: {name: [local], model: tiny}", "backend.name: input should"),
    "metric_number": ("objective: {metric: 1}", "objective.metric: input should be a valid str"),
    # enqueue and diagnosis
    "enqueue_nan": ("enqueue: [{n_epochs: .nan}]", "enqueue.0.n_epochs: input should be a finite"),
    "enqueue_inf": (
        "enqueue: [{learning_rate_multiplier: .inf}]",
        "enqueue.0.learning_rate_multiplier: input should be a finite number",
    ),
    "enqueue_bool": ("enqueue: [{n_epochs: true}]", "enqueue.0.n_epochs: input should be a valid"),
    "enqueue_unknown": ("enqueue: [{lr: 0.1}]", "enqueue.0: unknown parameters ['lr']"),
    "enqueue_not_a_list": ("enqueue: {n_epochs: 2}", "enqueue: input should be a valid list"),
    "diagnosis_nan": ("diagnosis: {overfit_rise: .nan}", "diagnosis.overfit_rise: input should"),
    "diagnosis_inf": ("diagnosis: {gap_growth: .inf}", "diagnosis.gap_growth: input should be a"),
    "diagnosis_bool": ("diagnosis: {low_accuracy: true}", "diagnosis.low_accuracy: input should"),
    # pruner options, as Optuna's constructors would refuse them
    "pruner_unknown_option": (
        "pruner: {name: median, options: {n_startup: 2}}",
        "pruner.options.n_startup: unknown field",
    ),
    "pruner_wrong_type": (
        "pruner: {name: median, options: {n_startup_trials: '2'}}",
        "pruner.options.n_startup_trials: input should be a valid integer",
    ),
    "pruner_bool": (
        "pruner: {name: median, options: {n_warmup_steps: true}}",
        "pruner.options.n_warmup_steps: input should be a valid integer",
    ),
    "pruner_negative": (
        "pruner: {name: median, options: {n_startup_trials: -1}}",
        "pruner.options.n_startup_trials: input should be greater than or equal to 0",
    ),
    "pruner_percentile_nan": (
        "pruner: {name: percentile, options: {percentile: .nan}}",
        "pruner.options.percentile: input should be a finite number",
    ),
    "pruner_percentile_101": (
        "pruner: {name: percentile, options: {percentile: 101}}",
        "pruner.options.percentile: input should be less than or equal to 100",
    ),
    "pruner_threshold_nothing": (
        "pruner: {name: threshold}",
        "pruner.options: give lower, upper or both",
    ),
    "pruner_threshold_inf": (
        "pruner: {name: threshold, options: {upper: .inf}}",
        "pruner.options.upper: input should be a finite number",
    ),
    "pruner_threshold_order": (
        "pruner: {name: threshold, options: {lower: 2, upper: 1}}",
        "pruner.options.upper: must be >= lower (2)",
    ),
    "pruner_hyperband_factor": (
        "pruner: {name: hyperband, options: {reduction_factor: 1}}",
        "pruner.options.reduction_factor: input should be greater than or equal to 2",
    ),
    "pruner_hyperband_min_resource": (
        "pruner: {name: hyperband, options: {min_resource: 10}}",
        "pruner.options.min_resource: must be <= the most epochs of the space (4)",
    ),
    "pruner_hyperband_max_below_min": (
        "pruner: {name: hyperband, options: {min_resource: 3, max_resource: 2}}",
        "pruner.options.max_resource: must be >= min_resource (3)",
    ),
    "pruner_halving_bootstrap": (
        "pruner: {name: successive_halving, options: {bootstrap_count: 2}}",
        "pruner.options.bootstrap_count: needs an integer min_resource",
    ),
    "pruner_none_with_options": (
        "pruner: {name: none, options: {x: 1}}",
        "pruner.options.x: unknown field",
    ),
    "pruner_options_list": (
        "pruner: {name: median, options: [1]}",
        "pruner.options: input should be a valid dictionary",
    ),
    # storage URLs
    "storage_number": ("storage: {optuna: 5}", "storage.optuna: input should be a valid string"),
    "storage_list": ("storage: {mlflow: [a]}", "storage.mlflow: input should be a valid string"),
    "storage_not_a_url": ("storage: {optuna: optuna.db}", "storage.optuna: expected a database"),
    "storage_empty": ("storage: {optuna: ''}", "storage.optuna: string should have at least 1"),
}


def _spec_text(extra: str) -> str:
    """The base spec with ``extra`` added, or in place of the base's line of that key."""
    lines = {
        "name": "name: hostile",
        "data": "data: {train: train.jsonl, valid: valid.jsonl}",
        "backend": BACKEND.strip(),
    }
    key = extra.split(":", 1)[0]
    lines[key if key in lines else "extra"] = extra
    return "\n".join(lines.values()) + "\n"


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("case", sorted(FIELD_CASES))
def test_hostile_field(cli, folder: Path, command: str, case: str) -> None:
    extra, expected = FIELD_CASES[case]
    _refused(cli, command, _write(folder, _spec_text(extra)), expected, folder)


# the backend refuses these when the space is resolved: after the file, before any store
BACKEND_CASES = {
    "lrm_zero": (
        "space: {learning_rate_multiplier: 0}",
        "space.learning_rate_multiplier: local accepts learning_rate_multiplier > 0, got 0",
    ),
    "lrm_low_zero": (
        "space: {learning_rate_multiplier: {low: 0, high: 0.2}}",
        "space.learning_rate_multiplier.low: local accepts learning_rate_multiplier > 0, got 0",
    ),
}


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("case", sorted(BACKEND_CASES))
def test_refused_by_the_backend(
    cli, folder: Path, tiny_model: Path, command: str, case: str
) -> None:
    extra, expected = BACKEND_CASES[case]
    _refused(cli, command, _write(folder, BASE + BACKEND + extra + "\n"), expected, folder)


@pytest.mark.parametrize("command", ["space", "estimate"])
def test_the_base_spec_is_valid(cli, folder: Path, tiny_model: Path, command: str) -> None:
    """So every refusal above is the hostile part's doing."""
    r = cli(command, _write(folder, BASE + BACKEND + "sampler: {seed: 2147483647}\n"))
    assert r.code == 0, r.err


def test_a_file_name_that_cannot_be_the_name(cli, folder: Path) -> None:
    spec = _write(folder, "data: {train: train.jsonl}\n" + BACKEND, name="my sweep.yaml")
    _refused(cli, "space", spec, "name: required when the file name ('my sweep')", folder)


def test_shipped_sweep_files_still_load(cli) -> None:
    for spec in sorted((ROOT / "sweeps").glob("*.yaml")):
        load_spec(spec)
        r = cli("space", spec)
        assert r.code == 0, (spec, r.err)


def test_anchors_and_merge_keys_still_work(folder: Path) -> None:
    text = BASE + (
        "backend: {name: local, model: tiny, options: &opts {torch_threads: 1}}\n"
        "pruner:\n  name: median\n  options: {<<: &p {n_startup_trials: 2}, n_warmup_steps: 1}\n"
        "sampler: {name: random, seed: &s 3}\nseed: *s\n"
    )
    spec = load_spec(_write(folder, text))
    assert spec.backend.options == {"torch_threads": 1}
    assert spec.pruner.options == {"n_startup_trials": 2, "n_warmup_steps": 1}
    assert spec.seed == spec.sampler.seed == 3


# -- the fuzz --------------------------------------------------------------------------------

keys = st.sampled_from(
    ["name", "data", "train", "valid", "backend", "model", "options", "space", "n_epochs",
     "batch_size", "low", "high", "low_pct", "log", "value", "choices", "trials", "parallel",
     "seed", "sampler", "pruner", "percentile", "enqueue", "prices", "storage", "optuna",
     "target", "budget_usd", "timeout_s", "diagnosis", "x", "<<"]
)  # fmt: skip
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
    | st.sampled_from(["local", "tiny", "median", "hyperband", "t.jsonl", "auto", ".inf"])
)
trees = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(keys, children, max_size=5),
    max_leaves=25,
)
specs = st.fixed_dictionaries(
    {"data": st.just({"train": "t.jsonl"}) | trees, "backend": trees},
    optional={k: trees for k in ("space", "pruner", "sampler", "enqueue", "trials", "storage")},
)
#: pieces of YAML syntax, tags and troublesome scalars, strung together at random
yamlish = st.lists(
    st.sampled_from(
        ["{", "}", "[", "]", ",", ": ", "- ", "? ", "\n", "  ", "\t", "#", "'", '"', "|\n  ",
         ">\n  ", "&a ", "*a ", "&b [*a, *a] ", "<<: ", "--- ", "...", "%YAML 1.1\n---\n",
         "!!binary ", "!!timestamp ", "!!set ", "!!omap ", "!!pairs ", "!!int ", "!!float ",
         "!!str ", "!!map ", "!!seq ", "!!python/name:os.system ", "!<tag:x> ", "name",
         "data", "train", "backend", "model", "space", "n_epochs", "trials: ", "seed: ",
         "pruner: {name: hyperband, options: {", "2024-02-30", "2024-13-45 10:00", "0x1F",
         "0o17", "1_000", ".inf", ".nan", "1.0e400", "yes", "~", "=", "\x00", "\x85",
         "\ufeff", "é", "\U0001f600"]
    ),
    max_size=30,
).map("".join)  # fmt: skip


def _dump(data: Any) -> str:
    return yaml.safe_dump(data, allow_unicode=True, sort_keys=False)


def _loads_or_refuses(path: Path) -> None:
    try:
        spec = load_spec(path)
    except SpecError as exc:
        message = str(exc)
        assert message.startswith(f"{path}: ")
        assert "\n" not in message and "\r" not in message
    else:
        assert isinstance(spec, SweepSpec)


FUZZ = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@FUZZ
@given(data=specs)
def test_fuzz_structures(tmp_path: Path, data: dict[str, Any]) -> None:
    _loads_or_refuses(_write(tmp_path, _dump({"name": "fuzz", **data})))


@FUZZ
@given(text=yamlish)
def test_fuzz_yamlish_text(tmp_path: Path, text: str) -> None:
    _loads_or_refuses(_write(tmp_path, text))


@FUZZ
@given(raw=st.binary(max_size=60), prefix=st.sampled_from(["", BASE, BASE + BACKEND]))
def test_fuzz_bytes(tmp_path: Path, raw: bytes, prefix: str) -> None:
    _loads_or_refuses(_write(tmp_path, prefix.encode() + raw))

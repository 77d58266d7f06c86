"""The trainer's speed and memory features on CPU, on the real tiny model: the losses of the
loop before them, packing, the loss at target positions, checkpointing, chunked loss, bf16
and fp16 autocast, torch.compile, throughput metrics, and QLoRA refused where it cannot run."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from orchestrator.backends.base import Hyperparameters, JobStatus, TrainingRequest
from orchestrator.backends.local import LocalBackend, LocalOptions, models
from orchestrator.backends.local.batches import lay_out
from orchestrator.backends.local.encoding import Encoded
from orchestrator.backends.local.loss import Forward, split_head
from orchestrator.backends.local.precision import resolve_precision
from orchestrator.backends.local.throughput import (
    ModelFlops,
    flops_per_token,
    mfu,
    peak_tflops,
)
from orchestrator.backends.local.trainer import (
    TrainingConfig,
    TrainingResult,
    default_valid_every,
    run_training,
)
from orchestrator.core.errors import UnsupportedParameterError
from tests.conftest import ROOT, Result
from tests.helpers import chat_rows, write_jsonl

#: per-step train_loss and epoch-end full_valid_loss of the loop before packing, the gathered
#: loss and the derived valid points (commit 9f995d2, torch 2.13.0 CPU, reverse_small, seed 0,
#: 2 epochs of batch 8, prompt_loss_weight 0.1 unless said)
BEFORE: dict[str, tuple[list[float], list[float]]] = {
    "full": (
        [
            *(5.523684969815341, 5.367759303042763, 5.260572580190805),
            *(5.0899311140471815, 5.138011011584052, 5.108372913707386),
        ],
        [5.160234412368463, 5.073135687380421],
    ),
    "lora": (
        [
            *(5.523684969815341, 5.526246187979715, 5.511339040902945),
            *(5.45254456763174, 5.522977105502425, 5.500245250355114),
        ],
        [5.489508804009885, 5.475455147879464],
    ),
}
#: valid_sample 3, valid_every 1: valid_loss at every step (epoch ends: from the full pass now)
BEFORE_SAMPLE = [
    5.315970611572266,
    5.230207824707032,
    5.173109817504883,
    5.1326549530029295,
    5.104492950439453,
    5.090033340454101,
]


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[int, dict[str, float]]] = []

    def emit(self, step: int, values: Mapping[str, float]) -> None:
        self.events.append((step, dict(values)))

    def series(self, name: str) -> list[float]:
        return [v[name] for _, v in self.events if name in v]


def _train(
    data: tuple[Path, Path],
    *,
    on_throughput: Callable[[int, Mapping[str, float]], None] | None = None,
    **options: Any,
) -> tuple[Recorder, TrainingResult]:
    recorder = Recorder()
    config = TrainingConfig(
        model="tiny",
        train_file=data[0],
        valid_file=data[1],
        hyperparameters=Hyperparameters(2, 8, 1.0, 0.1),
        options=LocalOptions.parse({"torch_threads": 1, "device": "cpu", **options}),
    )
    return recorder, run_training(config, recorder, on_throughput=on_throughput)


@pytest.mark.parametrize(("case", "options"), [("full", {}), ("lora", {"lora": {"r": 4}})])
def test_losses_equal_the_loop_before(
    tiny_model: Path, reverse_small: tuple[Path, Path], case: str, options: dict[str, Any]
) -> None:
    if "lora" in options:
        options["lora"]["alpha"] = 8
    recorder, _ = _train(reverse_small, **options)
    train, full = BEFORE[case]
    assert recorder.series("train_loss") == pytest.approx(train, abs=1e-5)
    assert recorder.series("full_valid_loss") == pytest.approx(full, abs=1e-5)


def test_epoch_end_valid_points_come_from_the_full_pass(
    tiny_model: Path, reverse_small: tuple[Path, Path]
) -> None:
    recorder, _ = _train(reverse_small, valid_sample=3, valid_every=1)
    assert recorder.series("valid_loss") == pytest.approx(BEFORE_SAMPLE, abs=1e-5)


@pytest.mark.parametrize(
    "options",
    [
        {"packing": False},
        {"gradient_checkpointing": True},
        {"loss_chunk": 5},
        {"attn_implementation": "eager"},
        {"compile": "eager"},
        {"max_device_batch": 3, "gradient_checkpointing": True, "loss_chunk": 7},
    ],
    ids=lambda o: ",".join(o),
)
def test_speed_options_leave_the_math_alone(
    tiny_model: Path, reverse_small: tuple[Path, Path], options: dict[str, Any]
) -> None:
    recorder, result = _train(reverse_small, **options)
    train, full = BEFORE["full"]
    assert result.status == "succeeded"
    assert recorder.series("train_loss") == pytest.approx(train, abs=1e-5)
    assert recorder.series("full_valid_loss") == pytest.approx(full, abs=1e-5)


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_half_precision_autocast_trains_on_cpu(
    tiny_model: Path, reverse_small: tuple[Path, Path], precision: str
) -> None:
    recorder, _ = _train(reverse_small, precision=precision)
    train, _ = BEFORE["full"]
    losses = recorder.series("train_loss")
    assert losses == pytest.approx(train, rel=2e-2)
    assert losses != pytest.approx(train, abs=1e-6)  # it really ran in half precision
    import torch

    resolved = resolve_precision(precision, torch.device("cpu"))
    assert (resolved.scaler() is not None) == (precision == "fp16")
    assert resolve_precision("auto", torch.device("cpu")).name == "fp32"


def _example(n: int, first: int = 10) -> Encoded:
    half = n // 2
    return Encoded(
        tuple(range(first, first + n)),
        (0.0,) * half + (1.0,) * (n - half),
        (False,) * half + (True,) * (n - half),
    )


def test_packed_rows_restart_positions_and_pad_less() -> None:
    examples = [_example(10), _example(4, 100), _example(6, 200), _example(3, 300)]
    packed = lay_out(examples, 0, packed=True)
    padded = lay_out(examples, 0, packed=False)
    assert packed.width == padded.width == 10
    assert packed.attention_mask is None and packed.position_ids is not None
    assert packed.input_ids[0] == list(range(10, 20))
    # 6 + 4 fill the second row; the 3 goes to a third, with a tail of pad tokens
    assert packed.input_ids[1] == [*range(200, 206), *range(100, 104)]
    assert packed.position_ids[1] == [*range(6), *range(4)]
    assert packed.input_ids[2][:3] == [300, 301, 302] and packed.position_ids[2][3:] == [*range(7)]
    assert (packed.n_slots, padded.n_slots, packed.n_tokens) == (30, 40, 23)
    for layout in (packed, padded):
        flat = [t for row in layout.input_ids for t in row]
        # every target is the next token of the same example, never the first of another
        assert [flat[p + 1] for p in layout.positions] == layout.targets
        wanted = [(t, w) for e in examples for t, w in zip(e.input_ids, e.weights, strict=True)]
        assert sorted(layout.targets) == sorted(t for t, w in wanted if w > 0)


def test_a_model_with_its_own_logits_keeps_its_forward(tiny_model: Path) -> None:
    import torch

    model = models.load(models.resolve(str(tiny_model))).model
    precision = resolve_precision("fp32", torch.device("cpu"))
    batch = [_example(12), _example(7, 50)]
    split = Forward(model, pad_id=0, device=torch.device("cpu"), precision=precision, packed=True)
    assert split.split is not None
    model.config.final_logit_softcapping = 30.0  # Llama ignores it; the loss must not assume
    whole = Forward(model, pad_id=0, device=torch.device("cpu"), precision=precision, packed=True)
    assert split_head(model) is None and whole.split is None
    with torch.no_grad():
        a, sa = split(batch)
        b, sb = whole(batch)
    assert float(a) == pytest.approx(float(b), abs=1e-5)
    assert (sa.count, sa.correct) == (sb.count, sb.correct)


def test_throughput_reaches_the_callback_and_the_result(
    tiny_model: Path, reverse_small: tuple[Path, Path]
) -> None:
    seen: list[tuple[int, dict[str, float]]] = []
    recorder, result = _train(reverse_small, on_throughput=lambda s, v: seen.append((s, dict(v))))
    assert [step for step, _ in seen] == [3, 6]
    assert all(v["tokens_per_second"] > 0 and v["peak_memory_mb"] > 100 for _, v in seen)
    assert all("mfu" not in v for _, v in seen)  # no peak known on a CPU
    assert result.tokens_per_second and result.mfu is None
    assert result.train_slots >= result.trained_tokens
    assert all("tokens_per_second" not in v for _, v in recorder.events)  # sink stays exact

    seen.clear()
    _, result = _train(
        reverse_small, peak_tflops=1.0, on_throughput=lambda s, v: seen.append((s, dict(v)))
    )
    assert result.mfu is not None and 0 < result.mfu < 1
    assert all(0 < v["mfu"] < 1 for _, v in seen)


def test_model_flops_count_six_n_for_a_full_fine_tune_and_four_n_with_lora(
    tiny_model: Path,
) -> None:
    from peft import LoraConfig, get_peft_model

    model = models.load(models.resolve(str(tiny_model))).model
    full = ModelFlops.of(model)
    n = sum(p.numel() for p in model.parameters())  # tied embeddings: the head is a matmul
    assert (full.matmul_params, full.trainable_params, full.layers, full.hidden) == (n, n, 2, 64)
    assert flops_per_token(full, 10.0) == 6 * n + 12 * 2 * 64 * 10
    lora = ModelFlops.of(get_peft_model(model, LoraConfig(r=4, target_modules="all-linear")))
    assert 0 < lora.trainable_params < n // 10
    assert flops_per_token(lora, 0.0) == 4 * lora.matmul_params + 2 * lora.trainable_params
    assert mfu(1000.0, 1e9, 989.0) == pytest.approx(1e12 / 989e12)
    assert mfu(1000.0, 1e9, None) is None


@pytest.mark.parametrize(
    ("name", "peak"),
    [
        ("NVIDIA H100 80GB HBM3", 989.0),
        ("NVIDIA H100 PCIe", 756.0),
        ("NVIDIA H200", 989.0),
        ("NVIDIA A100-SXM4-80GB", 312.0),
        ("NVIDIA L40S", 362.0),
        ("NVIDIA A10G", 125.0),
        ("NVIDIA L4", 121.0),
        ("NVIDIA GeForce RTX 4090", 165.0),
        ("Tesla T4", 65.0),
        ("NVIDIA L40", None),
        ("Quadro P1000", None),
    ],
)
def test_peak_tflops_by_device_name(name: str, peak: float | None) -> None:
    assert peak_tflops(name) == peak
    assert peak_tflops(name, 500.0) == 500.0


def test_default_validation_is_a_tenth_of_the_training() -> None:
    assert default_valid_every(1000, 16, 8) == 50  # ~20 points
    assert default_valid_every(32, 16, 4) == 20  # 5 training examples per sample example
    assert default_valid_every(8, 16, 8) == 10  # longer than the run: only the last step
    for total, sample, batch in ((40, 16, 1), (200, 16, 16), (64, 3, 2)):
        every = default_valid_every(total, sample, batch)
        assert (total // every) * sample <= total * batch / 5


def test_qlora_is_refused_where_it_cannot_run() -> None:
    with pytest.raises(UnsupportedParameterError, match="'load_in_4bit' needs lora"):
        LocalOptions.parse({"load_in_4bit": True})
    with pytest.raises(UnsupportedParameterError, match=r"'load_in_4bit' needs a CUDA device"):
        LocalOptions.parse({"load_in_4bit": True, "lora": True, "device": "cpu"})
    import importlib.util

    import torch

    if importlib.util.find_spec("bitsandbytes") is None or not torch.cuda.is_available():
        with pytest.raises(UnsupportedParameterError, match="'load_in_4bit' needs"):
            LocalOptions.parse({"load_in_4bit": True, "lora": True})


def test_qlora_is_refused_at_plan_time_naming_the_option(
    cli: Callable[..., Result], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib.util

    import torch

    if importlib.util.find_spec("bitsandbytes") is not None and torch.cuda.is_available():
        pytest.skip("this machine can run QLoRA")
    monkeypatch.setenv("FTSWEEP_RUNS_DIR", str(tmp_path / "mlruns"))
    train = write_jsonl(tmp_path / "train.jsonl", chat_rows(20))
    valid = write_jsonl(tmp_path / "valid.jsonl", chat_rows(5, start=500))
    spec = tmp_path / "qlora.yaml"
    options = {"lora": True, "load_in_4bit": True}
    sweep = {
        "name": "qlora",
        "data": {"train": str(train), "valid": str(valid)},
        "backend": {"name": "local", "model": "tiny", "options": options},
        "trials": 2,
    }
    spec.write_text(yaml.safe_dump(sweep))
    for command in ("space", "run"):
        r = cli(command, spec)
        assert r.code == 2, r.err
        assert r.err.startswith(f"error: {spec}: backend.options.load_in_4bit: needs ")
        assert r.err.count("\n") == 1 and r.out == ""


def test_a_job_reports_its_throughput(
    tiny_model: Path, local_workdir: Path, reverse_small: tuple[Path, Path]
) -> None:
    backend = LocalBackend(local_workdir, LocalOptions(torch_threads=1))
    request = TrainingRequest(
        "speed", "tiny", Hyperparameters(2, 8, 1.0, 0.1), reverse_small[0], reverse_small[1]
    )
    handle = backend.submit(request)
    points, deadline = [], time.monotonic() + 120
    cursor: str | None = None
    while time.monotonic() < deadline:
        update = backend.poll(handle, cursor)
        points += update.points
        cursor = update.cursor
        if update.status.terminal:
            break
        time.sleep(0.2)
    assert update.status is JobStatus.SUCCEEDED, update.error
    speed = [(p.step, p.name) for p in points if p.name in ("tokens_per_second", "peak_memory_mb")]
    assert sorted(speed) == [
        (3, "peak_memory_mb"),
        (3, "tokens_per_second"),
        (6, "peak_memory_mb"),
        (6, "tokens_per_second"),
    ]


def test_gpu_check_dry_runs_without_the_package_dependencies(tmp_path: Path) -> None:
    """The same code path as on a bare CUDA machine: no pydantic, optuna, mlflow or trl."""
    out = tmp_path / "dry.json"
    blocked = ["pydantic", "optuna", "mlflow", "sqlalchemy", "trl", "datasets", "tiktoken"]
    code = (
        "import sys, runpy; "
        f"sys.modules.update(dict.fromkeys({blocked!r})); "
        f"sys.argv = ['gpu_check.py', '--dry', '--json', {str(out)!r}]; "
        "runpy.run_path('benchmarks/gpu_check.py', run_name='__main__')"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**env, "OMP_NUM_THREADS": "1"},
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = json.loads(out.read_text())["lines"]
    ours = [line for line in lines if line["trainer"] == "ftsweep"]
    assert [line["checkpointing"] for line in ours] == [False, True]
    assert all(line["tokens_per_second"] > 0 and line["peak_gb"] > 0 for line in ours)
    assert {line["note"] for line in lines if line["trainer"] in ("qlora", "TRL")} == {
        "not run: needs CUDA and bitsandbytes",
        "not run: trl is not installed",
    }
    assert re.search(r"^tiny \(dry run\)\s+ftsweep\s+off\s+[\d,]+\s", proc.stdout, re.M)

"""The local trainer's GPU paths on one CUDA device: tokens/s, MFU and peak memory.

Runs on a bare CUDA machine with only torch, transformers, peft and accelerate installed and
no network: ftsweep's own step code (:mod:`orchestrator.backends.local.steps`, ``loss``,
``batches``, ``precision``, ``prepare``, ``throughput``, ``models.load`` for QLoRA) is
imported from this checkout without the package's other dependencies (pydantic and the
rest), and the models are Llama-shaped configs with random weights, built on the device:

* **~1B**: Llama-3.2-1B's shape (16 layers, hidden 2048, vocabulary 128,256, tied; 1.24B),
  8 sequences of 2048 tokens per step;
* **~8B**: Llama-3.1-8B's shape (32 layers, hidden 4096; 8.0B), 4 sequences of 2048.

Each sequence is random token ids, the first half prompt (weight 0), the second completion.
For each size: ftsweep's trainer with LoRA (r 16, all linear layers, bf16 autocast, packed,
loss at completion positions only) with gradient checkpointing off and on; QLoRA (4-bit NF4
base through ftsweep's ``models.load``) for the 1B where bitsandbytes is installed; and TRL's
``SFTTrainer`` (same model, LoRA, batch, bf16, completion-only loss) with checkpointing off and
on where trl is installed. Each line: tokens/s over the measured steps (after warm-up), MFU
against the device's dense bf16 peak (``--peak-tflops`` overrides the table), peak allocated
memory.

Size: 2 warm-up + 4 measured steps a configuration, each model built once (random init on the
device) and shared by its configurations: about 4-6 minutes on one H100 by this arithmetic
(not yet timed on one); ``--budget-s`` (450) skips what would start after it, and a
configuration that fails (out of memory, a missing kernel) prints its error and the rest go on.
``--dry`` runs the same code on CPU with tiny shapes (2 layers, hidden 64, 4 x 32 tokens,
1 + 2 steps) in seconds: CI runs it.

    python benchmarks/gpu_check.py [--dry] [--only 1b|8b] [--json results.json]
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import tempfile
import time
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def _trainer_modules() -> types.SimpleNamespace:
    """ftsweep's step modules, imported without running the package ``__init__`` files above
    them (those load the whole backend: pydantic, the job runner, ...)."""
    for name in ("orchestrator", "orchestrator.backends", "orchestrator.backends.local"):
        if name not in sys.modules:
            module = types.ModuleType(name)
            module.__path__ = [str(ROOT.joinpath(*name.split(".")))]
            sys.modules[name] = module
    from orchestrator.backends.local import (
        encoding,
        loss,
        models,
        precision,
        prepare,
        steps,
        throughput,
    )

    return types.SimpleNamespace(
        encoding=encoding,
        loss=loss,
        models=models,
        precision=precision,
        prepare=prepare,
        steps=steps,
        throughput=throughput,
    )


@dataclass(frozen=True)
class Shape:
    """A Llama-shaped model and the batch it is measured with."""

    name: str
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    vocab: int
    tied: bool
    batch: int
    seq: int
    warmup: int = 2
    measured: int = 4

    def config(self) -> Any:
        from transformers import LlamaConfig

        return LlamaConfig(
            hidden_size=self.hidden,
            intermediate_size=self.intermediate,
            num_hidden_layers=self.layers,
            num_attention_heads=self.heads,
            num_key_value_heads=self.kv_heads,
            vocab_size=self.vocab,
            max_position_embeddings=max(4096, self.seq),
            tie_word_embeddings=self.tied,
            rope_theta=500000.0,
        )


SHAPES = {
    "1b": Shape("~1B (Llama-3.2-1B shape)", 2048, 8192, 16, 32, 8, 128256, True, 8, 2048),
    "8b": Shape("~8B (Llama-3.1-8B shape)", 4096, 14336, 32, 32, 8, 128256, False, 4, 2048),
}
DRY = Shape("tiny (dry run)", 64, 128, 2, 4, 2, 512, True, 4, 32, warmup=1, measured=2)
LORA = types.SimpleNamespace(r=16, alpha=32, dropout=0.0, target_modules="all-linear")


@dataclass
class Line:
    """One measured configuration."""

    model: str
    trainer: str
    checkpointing: bool
    tokens_per_second: float | None = None
    mfu: float | None = None
    peak_gb: float | None = None
    seconds_per_step: float | None = None
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def row(self) -> str:
        def num(v: float | None, fmt: str) -> str:
            return "-" if v is None else format(v, fmt)

        return (
            f"{self.model:<26} {self.trainer:<8} {'on' if self.checkpointing else 'off':<5} "
            f"{num(self.tokens_per_second, ',.0f'):>10} {num(self.mfu, '.1%'):>7} "
            f"{num(self.peak_gb, '.1f'):>8} {num(self.seconds_per_step, '.3f'):>8}  {self.note}"
        )


HEADER = (
    f"{'model':<26} {'trainer':<8} {'ckpt':<5} {'tokens/s':>10} {'MFU':>7} {'peak GB':>8} "
    f"{'s/step':>8}"
)


class Check:
    """Runs the configurations of one device (see the module docstring)."""

    def __init__(self, dry: bool, peak: float | None, budget_s: float) -> None:
        import torch

        self.m = _trainer_modules()
        self.dry = dry
        self.device = torch.device("cpu" if dry else "cuda")
        self.precision = self.m.precision.resolve_precision("auto", self.device)
        name = torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else None
        self.device_name = name or "cpu"
        self.peak = self.m.throughput.peak_tflops(name, peak)
        self.started = time.monotonic()
        self.budget_s = budget_s
        self.lines: list[Line] = []

    # -- helpers ---------------------------------------------------------------------------

    def _examples(self, shape: Shape) -> list[Any]:
        import torch

        gen = torch.Generator().manual_seed(0)
        half = shape.seq // 2
        out = []
        for _ in range(shape.batch):
            ids = torch.randint(3, shape.vocab, (shape.seq,), generator=gen).tolist()
            out.append(
                self.m.encoding.Encoded(
                    tuple(ids),
                    (0.0,) * half + (1.0,) * (shape.seq - half),
                    (False,) * half + (True,) * (shape.seq - half),
                )
            )
        return out

    def _reset(self) -> None:
        import torch

        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)

    def _peak_gb(self) -> float:
        return float(self.m.throughput.peak_memory_mb(self.device)) / 1024

    def _sync(self) -> None:
        import torch

        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def _over_budget(self, line: Line) -> bool:
        if time.monotonic() - self.started > self.budget_s:
            line.note = f"skipped: past --budget-s {self.budget_s:.0f}"
            self._emit(line)
            return True
        return False

    def _emit(self, line: Line) -> None:
        self.lines.append(line)
        print(line.row(), flush=True)

    def _score(self, line: Line, shape: Shape, flops: Any, seconds: float) -> None:
        tokens = shape.batch * shape.seq * shape.measured
        line.tokens_per_second = tokens / seconds
        line.seconds_per_step = seconds / shape.measured
        per_token = self.m.throughput.flops_per_token(flops, float(shape.seq))
        line.mfu = self.m.throughput.mfu(line.tokens_per_second, per_token, self.peak)
        line.peak_gb = self._peak_gb()

    def build(self, shape: Shape) -> Any:
        """The random-weight model, on the device, in the autocast type (a LoRA base)."""
        import torch
        from transformers import AutoModelForCausalLM

        torch.manual_seed(0)
        with torch.device(self.device):
            model = AutoModelForCausalLM.from_config(
                shape.config(), dtype=self.precision.frozen_dtype(True)
            )
        return model

    # -- ftsweep ---------------------------------------------------------------------------

    def ftsweep(self, shape: Shape, base: Any, checkpointing: bool, qlora: bool = False) -> Any:
        """ftsweep's steps on ``base`` (LoRA added, then removed again); its FLOPs counts."""
        import torch

        line = Line(shape.name, "qlora" if qlora else "ftsweep", checkpointing)
        if self._over_budget(line):
            return None
        self._reset()
        opts = types.SimpleNamespace(
            load_in_4bit=qlora, lora=LORA, gradient_checkpointing=checkpointing, compile=False
        )
        model = self.m.prepare.prepare_model(base, opts)
        model.train()
        flops = self.m.throughput.ModelFlops.of(model)
        forward = self.m.loss.Forward(
            model, pad_id=0, device=self.device, precision=self.precision, packed=True
        )
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=2e-4, weight_decay=0.0)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
        stepper = self.m.steps.Stepper(
            forward,
            optimizer,
            scheduler,
            micro=shape.batch,
            scaler=self.precision.scaler(),
            checkpointing=checkpointing,
        )
        batch = self._examples(shape)
        for _ in range(shape.warmup):
            stepper.step(batch)
        self._sync()
        t0 = time.monotonic()
        losses = [stepper.step(batch) for _ in range(shape.measured)]
        self._sync()
        self._score(line, shape, flops, time.monotonic() - t0)
        line.note = f"micro-batch {stepper.micro}, loss {losses[-1].loss:.3f}" if losses[-1] else ""
        self._emit(line)
        if checkpointing:
            model.get_base_model().gradient_checkpointing_disable()
        if not qlora:
            model.unload()
        del optimizer, stepper, forward, model
        return flops

    def qlora(self, shape: Shape, base: Any) -> None:
        """QLoRA through ``models.load`` from a saved copy of ``base`` (CUDA + bitsandbytes)."""
        import importlib.util

        line = Line(shape.name, "qlora", False)
        if self.device.type != "cuda" or importlib.util.find_spec("bitsandbytes") is None:
            line.note = "not run: needs CUDA and bitsandbytes"
            self._emit(line)
            return
        if self._over_budget(line):
            return
        with tempfile.TemporaryDirectory() as tmp:
            base.save_pretrained(tmp)
            _tokenizer(shape.vocab).save_pretrained(tmp)
            source = self.m.models.ModelSource("random", "dir", tmp)
            loaded = self.m.models.load(
                source, dtype=self.precision.dtype, load_in_4bit=True, device=self.device
            )
            self.ftsweep(shape, loaded.model, False, qlora=True)
            del loaded

    # -- TRL -------------------------------------------------------------------------------

    def trl(self, shape: Shape, base: Any, checkpointing: bool, flops: Any) -> None:
        """TRL's SFTTrainer on ``base`` with the same LoRA, batch and loss (where installed)."""
        import importlib.util

        line = Line(shape.name, "TRL", checkpointing)
        if importlib.util.find_spec("trl") is None or flops is None:
            line.note = "not run: trl is not installed" if flops is not None else "not run"
            self._emit(line)
            return
        if self._over_budget(line):
            return
        from datasets import Dataset
        from peft import LoraConfig
        from transformers import TrainerCallback
        from trl import SFTConfig, SFTTrainer

        self._reset()
        batch = self._examples(shape)
        steps = shape.warmup + shape.measured
        rows = [batch[i % shape.batch] for i in range(shape.batch * steps)]
        data = Dataset.from_dict(
            {
                "input_ids": [list(e.input_ids) for e in rows],
                "completion_mask": [[int(c) for c in e.completion] for e in rows],
            }
        )
        stamps: list[float] = []
        sync = self._sync

        class Stamp(TrainerCallback):  # type: ignore[misc]
            def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
                sync()
                stamps.append(time.monotonic())

        with tempfile.TemporaryDirectory() as tmp:
            args = SFTConfig(
                output_dir=tmp,
                max_steps=steps,
                per_device_train_batch_size=shape.batch,
                learning_rate=2e-4,
                weight_decay=0.0,
                completion_only_loss=True,
                max_length=None,
                bf16=self.precision.name == "bf16",
                fp16=self.precision.name == "fp16",
                use_cpu=self.device.type == "cpu",
                gradient_checkpointing=checkpointing,
                gradient_checkpointing_kwargs={"use_reentrant": False},
                logging_steps=10,
                save_strategy="no",
                report_to="none",
                disable_tqdm=True,
                dataloader_num_workers=0,
                seed=0,
            )
            lora = LoraConfig(
                r=LORA.r,
                lora_alpha=LORA.alpha,
                lora_dropout=LORA.dropout,
                target_modules=LORA.target_modules,
                task_type="CAUSAL_LM",
            )
            trainer = SFTTrainer(
                model=base,
                args=args,
                train_dataset=data,
                processing_class=_tokenizer(shape.vocab),
                peft_config=lora,
            )
            trainer.add_callback(Stamp())
            trainer.train()
        measured = stamps[shape.warmup - 1 :]
        self._score(line, shape, flops, measured[-1] - measured[0])
        self._emit(line)
        model = trainer.model
        if checkpointing:
            model.get_base_model().gradient_checkpointing_disable()
        model.unload()
        del trainer, model

    # -- all -------------------------------------------------------------------------------

    def _guard(self, shape: Shape, trainer: str, ckpt: bool, fn: Any, *args: Any) -> Any:
        """``fn(*args)``; a failure becomes a line saying so, and the check goes on."""
        try:
            return fn(*args)
        except Exception as exc:  # one configuration's failure must not end the check
            first = (str(exc).strip().splitlines() or [""])[0][:160]
            self._emit(
                Line(shape.name, trainer, ckpt, note=f"failed: {type(exc).__name__}: {first}")
            )
            self._reset()
            return None

    def run(self, shapes: list[Shape]) -> list[Line]:
        import torch
        import transformers

        print(
            f"device {self.device_name}, peak {self.peak or '-'} TFLOP/s (dense bf16), "
            f"precision {self.precision.name}, torch {torch.__version__}, "
            f"transformers {transformers.__version__}",
            flush=True,
        )
        print(HEADER, flush=True)
        for shape in shapes:
            base = self.build(shape)
            flops = self._guard(shape, "ftsweep", False, self.ftsweep, shape, base, False)
            self._guard(shape, "ftsweep", True, self.ftsweep, shape, base, True)
            if shape is not SHAPES["8b"]:
                self._guard(shape, "qlora", False, self.qlora, shape, base)
            self._guard(shape, "TRL", False, self.trl, shape, base, False, flops)
            self._guard(shape, "TRL", True, self.trl, shape, base, True, flops)
            del base
            self._reset()
        print(f"{time.monotonic() - self.started:.0f} s", flush=True)
        return self.lines


def _tokenizer(vocab: int) -> Any:
    """A word-level tokenizer over ``vocab`` made-up tokens (models.load wants one)."""
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    words = {"<pad>": 0, "</s>": 1, "<unk>": 2, **{f"t{i}": i for i in range(3, vocab)}}
    core = Tokenizer(WordLevel(vocab=words, unk_token="<unk>"))
    fast: Any = PreTrainedTokenizerFast
    return fast(tokenizer_object=core, eos_token="</s>", pad_token="<pad>", unk_token="<unk>")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry", action="store_true", help="CPU, tiny shapes, seconds")
    parser.add_argument("--only", choices=sorted(SHAPES), help="one model size")
    parser.add_argument("--peak-tflops", type=float, help="the device's dense bf16 peak")
    parser.add_argument("--budget-s", type=float, default=450.0, help="start nothing after it")
    parser.add_argument("--json", type=Path, help="also write the lines here")
    args = parser.parse_args(argv)
    import warnings

    warnings.filterwarnings("ignore")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    if not args.dry:
        import torch

        if not torch.cuda.is_available():
            print("error: no CUDA device (use --dry for the CPU run)", file=sys.stderr)
            return 2
    shapes = [DRY] if args.dry else [SHAPES[args.only]] if args.only else list(SHAPES.values())
    check = Check(args.dry, args.peak_tflops, args.budget_s)
    lines = check.run(shapes)
    if args.json:
        payload = {"device": check.device_name, "peak_tflops": check.peak}
        payload["lines"] = [line.__dict__ for line in lines]
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

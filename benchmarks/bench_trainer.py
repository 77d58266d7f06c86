"""ftsweep's local trainer against TRL's ``SFTTrainer``: tokens/s, peak memory, validation loss.

Both train the same model with the same LoRA (r 8, alpha 16, all linear layers), learning
rate (``2e-4``, linear decay to 0, AdamW without weight decay, clipping at 1.0), batch,
epochs and seed, on the same token ids: ftsweep's encoder writes them once, with
``prompt_loss_weight`` 0 (completion tokens only), and TRL gets them pre-tokenized
(``input_ids`` + ``completion_mask``, ``completion_only_loss=True``) in ftsweep's batch
order (its per-epoch permutations, sampled sequentially), so every step sees the same
examples. TRL runs as its users run it (padded batches, its own loss and logging). Each
trainer runs in a fresh process (peak memory is that process's), one CPU thread each
(``--threads``), ftsweep first.

* **tokens/s**: tokens of the training examples per second of training (ftsweep: its
  optimizer steps; TRL: ``trainer.train()``), without validation. On CPU the figure is per
  CPU-second (wall time is noise on a shared machine); on CUDA per wall second.
* **peak memory**: peak RSS of the process on CPU, ``torch.cuda.max_memory_allocated`` on CUDA.
* **valid loss**: mean cross-entropy per completion token on the whole validation file at
  the end, computed for both models by the same evaluator (ftsweep's).
* **validation share**: ftsweep's default ``valid_loss`` points in % of its training time,
  against the previous default ``valid_every`` (a third ftsweep run); the epoch-end full
  passes, which pruning reads, are in the note.
* **padding**: token slots the model computes for the training passes, packed (the default
  for Llama-type models) against padded, on this data and on a mixed-length set (prompts of
  10 to 400 characters), counted by laying out the passes (no training).

``--quick``: SmolLM2-135M-Instruct (the built-in ``smollm2-135m``, pulled on first use), the
chat ``reverse`` task, 32 training and 16 validation examples, batch 8, 2 epochs (8 steps), on
CPU and, when present, on CUDA (bf16 for both); 6 to 14 minutes on this project's shared 2-core
machine. Without ``--quick``: 128 training examples (32 steps). ``--model tiny`` takes a
minute or two. ``run_all.py`` runs the quick setup, with ``tiny`` under its ``--quick``. Needs
``trl`` (the ``dev`` extra)::

    python benchmarks/bench_trainer.py --quick [--model tiny] [--device cpu|cuda|all]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import Figure

LORA = {"r": 8, "alpha": 16, "dropout": 0.0, "target_modules": "all-linear"}
BATCH, EPOCHS, SEED = 8, 2, 0


# -- in the worker process ---------------------------------------------------------------


def _encode(spec: dict[str, Any]) -> tuple[Any, list[Any], list[Any]]:
    from orchestrator.backends.local import models
    from orchestrator.backends.local.encoding import encode_file

    tokenizer = models.load_tokenizer(models.resolve(spec["model"]))[0]
    train = encode_file(Path(spec["train"]), tokenizer, 0.0).examples
    valid = encode_file(Path(spec["valid"]), tokenizer, 0.0).examples
    return tokenizer, train, valid


def _peak_mb(device: Any) -> float:
    from orchestrator.backends.local.throughput import peak_memory_mb

    return peak_memory_mb(device)


def _evaluate(model: Any, valid: list[Any], pad_id: int, device: Any) -> float:
    """Mean CE per completion token over ``valid``: the evaluator both trainers share."""
    import torch

    from orchestrator.backends.local.loss import BatchStats, Forward
    from orchestrator.backends.local.precision import resolve_precision

    forward = Forward(
        model,
        pad_id=pad_id,
        device=device,
        precision=resolve_precision("auto", device),
        packed=False,
    )
    total = BatchStats()
    model.eval()
    with torch.no_grad():
        for i in range(0, len(valid), BATCH):
            for one in forward.per_example(valid[i : i + BATCH]):
                total.add(one)
    return total.loss


def run_ftsweep(spec: dict[str, Any]) -> dict[str, Any]:
    """ftsweep's trainer, in-process, with its default validation."""
    from orchestrator.backends.base import Hyperparameters
    from orchestrator.backends.local import LocalOptions
    from orchestrator.backends.local.trainer import TrainingConfig, run_training

    losses: list[float] = []

    class Sink:
        def emit(self, step: int, values: Any) -> None:
            if "full_valid_loss" in values:
                losses.append(float(values["full_valid_loss"]))

    from orchestrator.backends.local.options import LORA_LR

    options = {"lora": LORA, "device": spec["device"], "save_model": False}
    options["torch_threads"] = spec["threads"]
    options["base_learning_rate"] = LORA_LR  # TRL's too (tiny alone would default to 1e-3)
    if spec.get("valid_every"):
        options["valid_every"] = spec["valid_every"]
    config = TrainingConfig(
        model=spec["model"],
        train_file=Path(spec["train"]),
        valid_file=Path(spec["valid"]),
        hyperparameters=Hyperparameters(EPOCHS, BATCH, 1.0, 0.0),
        seed=SEED,
        options=LocalOptions.parse(options),
    )
    result = run_training(config, Sink())
    seconds = result.train_cpu_seconds if spec["device"] == "cpu" else result.train_seconds
    return {
        "tokens": result.trained_tokens,
        "seconds": seconds,
        "peak_mb": result.peak_memory_mb,
        "valid_loss": losses[-1],
        "valid_share": result.valid_seconds / result.train_seconds,
        "full_valid_share": result.full_valid_seconds / result.train_seconds,
    }


def run_trl(spec: dict[str, Any]) -> dict[str, Any]:
    """TRL's ``SFTTrainer`` on ftsweep's token ids, in ftsweep's batch order."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from trl import SFTConfig, SFTTrainer

    from orchestrator.backends.local import models
    from orchestrator.backends.local.options import LORA_LR
    from orchestrator.backends.local.precision import resolve_precision

    torch.set_num_threads(spec["threads"])
    tokenizer, train, valid = _encode(spec)
    device = torch.device(spec["device"])
    precision = resolve_precision("auto", device)
    order = torch.Generator().manual_seed(SEED)
    rows = [i for _ in range(EPOCHS) for i in torch.randperm(len(train), generator=order).tolist()]
    data = Dataset.from_dict(
        {
            "input_ids": [list(train[i].input_ids) for i in rows],
            "completion_mask": [[int(c) for c in train[i].completion] for i in rows],
        }
    )
    torch.manual_seed(SEED)
    source = models.resolve(spec["model"])
    model = models.load(source, dtype=precision.frozen_dtype(True)).model
    args = SFTConfig(
        output_dir=spec["out"],
        num_train_epochs=1,  # the rows are already EPOCHS passes in ftsweep's order
        per_device_train_batch_size=BATCH,
        learning_rate=LORA_LR,
        lr_scheduler_type="linear",
        warmup_steps=0,
        weight_decay=0.0,
        max_grad_norm=1.0,
        train_sampling_strategy="sequential",
        completion_only_loss=True,
        max_length=None,
        bf16=precision.name == "bf16",
        fp16=precision.name == "fp16",
        use_cpu=device.type == "cpu",
        gradient_checkpointing=False,
        logging_steps=1,
        save_strategy="no",
        eval_strategy="no",
        report_to="none",
        disable_tqdm=True,
        dataloader_num_workers=0,
        seed=SEED,
    )
    lora = LoraConfig(
        r=LORA["r"],
        lora_alpha=LORA["alpha"],
        lora_dropout=LORA["dropout"],
        target_modules=LORA["target_modules"],
        task_type="CAUSAL_LM",
    )
    trainer = SFTTrainer(
        model=model, args=args, train_dataset=data, processing_class=tokenizer, peft_config=lora
    )
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    c0, t0 = time.process_time(), time.monotonic()
    trainer.train()
    seconds = time.process_time() - c0 if device.type == "cpu" else time.monotonic() - t0
    peak = _peak_mb(device)
    pad_id = int(tokenizer.pad_token_id)
    loss = _evaluate(trainer.model, valid, pad_id, next(trainer.model.parameters()).device)
    tokens = sum(len(train[i]) for i in rows)
    return {"tokens": tokens, "seconds": seconds, "peak_mb": peak, "valid_loss": loss}


def padding(spec: dict[str, Any]) -> dict[str, Any]:
    """Token slots of the training passes, packed and padded, on this data and mixed lengths."""
    import random

    from orchestrator.backends.local.batches import lay_out
    from orchestrator.backends.local.encoding import encode_prompt_completion

    tokenizer, train, _ = _encode(spec)
    rng = random.Random(SEED)
    mixed = [
        encode_prompt_completion(
            tokenizer,
            "".join(rng.choice("abcdefgh ") for _ in range(rng.randint(10, 400))),
            " done",
            0.0,
        )
        for _ in range(64)
    ]
    pad_id = int(tokenizer.pad_token_id)
    out: dict[str, Any] = {}
    for name, examples in (("data", train), ("mixed", mixed)):
        passes = [examples[i : i + BATCH] for i in range(0, len(examples), BATCH)]
        tokens = sum(len(e) for e in examples)
        out[name] = {
            "tokens": tokens,
            "packed": sum(lay_out(p, pad_id, packed=True).n_slots for p in passes),
            "padded": sum(lay_out(p, pad_id, packed=False).n_slots for p in passes),
        }
    return out


def _worker(kind: str, spec: dict[str, Any]) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import warnings

    warnings.filterwarnings("ignore")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    run = {"ftsweep": run_ftsweep, "trl": run_trl, "padding": padding}[kind]
    print("RESULT " + json.dumps(run(spec)), flush=True)


# -- in the benchmark process ------------------------------------------------------------


def _spawn(kind: str, spec: dict[str, Any]) -> dict[str, Any]:
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": str(spec["threads"])}
    proc = subprocess.run(
        [sys.executable, __file__, "--worker", kind, json.dumps(spec)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            result: dict[str, Any] = json.loads(line[len("RESULT ") :])
            return result
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
    raise RuntimeError(f"{kind} run failed (exit {proc.returncode}): {' | '.join(tail)}")


def _devices(choice: str) -> list[str]:
    if choice != "all":
        return [choice]
    try:
        import torch

        return ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]
    except ImportError:
        return ["cpu"]


def measure(
    model: str, quick: bool, devices: list[str], threads: int = 1
) -> tuple[list[Figure], str]:
    """Run both trainers on each device; the figures and the side-by-side table."""
    from orchestrator.backends.local.tasks import write_task

    n_train = 32 if quick else 128
    figures: list[Figure] = []
    lines = [
        f"model {model}, LoRA r{LORA['r']} all-linear, {n_train} examples, batch {BATCH}, "
        f"{EPOCHS} epochs, completion-only loss",
        f"{'device':<6} {'trainer':<8} {'tokens/s':>10} {'peak MB':>9} {'valid loss':>11}",
    ]
    with tempfile.TemporaryDirectory() as tmp:
        train, valid = write_task("reverse", Path(tmp), n_train=n_train, n_valid=16, fmt="chat")
        base = {"model": model, "train": str(train), "valid": str(valid), "threads": threads}
        for device in devices:
            spec = {**base, "device": device, "out": str(Path(tmp) / f"trl-{device}")}
            ours, theirs = _spawn("ftsweep", spec), _spawn("trl", spec)
            # the previous default valid_every: ~20 points, sample <= training in between
            steps = EPOCHS * -(-n_train // BATCH)
            before = max(-(-steps // 20), -(-16 // BATCH))
            old = _spawn("ftsweep", {**spec, "valid_every": before})
            unit = "tokens/CPU-s" if device == "cpu" else "tokens/s"
            rate = {n: r["tokens"] / r["seconds"] for n, r in (("ours", ours), ("trl", theirs))}
            for name, r in (("ftsweep", ours), ("TRL", theirs)):
                key = "ours" if name == "ftsweep" else "trl"
                lines.append(
                    f"{device:<6} {name:<8} {rate[key]:>10.1f} {r['peak_mb']:>9.0f} "
                    f"{r['valid_loss']:>11.4f}"
                )
            speed = rate["ours"] / rate["trl"]
            gap = ours["valid_loss"] / theirs["valid_loss"] - 1
            memory = ours["peak_mb"] / theirs["peak_mb"]
            lines.append(f"{device:<6} {'ratio':<8} {speed:>9.2f}x {memory:>8.2f}x {gap:>+10.1%}")
            figures += [
                Figure(
                    f"trainer ({device}): ftsweep vs TRL SFTTrainer, {unit}",
                    round(rate["ours"], 1),
                    round(rate["trl"], 1),
                    unit,
                    ">= 1.0x",
                    speed >= 1.0,
                    note=f"{model}, LoRA r8, {n_train} examples x {EPOCHS} epochs, batch {BATCH}",
                ),
                Figure(
                    f"trainer ({device}): final valid loss, ftsweep vs TRL",
                    round(ours["valid_loss"], 4),
                    round(theirs["valid_loss"], 4),
                    "nats",
                    "within 2 %",
                    abs(gap) <= 0.02,
                    note="mean CE per completion token, one evaluator for both",
                ),
                Figure(
                    f"trainer ({device}): peak memory, ftsweep vs TRL",
                    round(ours["peak_mb"]),
                    round(theirs["peak_mb"]),
                    "MB",
                    "(reported)",
                    None,
                    note="peak RSS" if device == "cpu" else "max_memory_allocated",
                ),
                Figure(
                    f"trainer ({device}): default valid_loss points, % of training time",
                    round(100 * ours["valid_share"], 1),
                    round(100 * old["valid_share"], 1),
                    "%",
                    "<= 10 %",
                    ours["valid_share"] <= 0.10,
                    note=f"baseline: the previous default valid_every; epoch-end full passes "
                    f"(16 valid vs {n_train} train, what pruning reads) "
                    f"{ours['full_valid_share']:.1%} more",
                ),
            ]
        pad = _spawn("padding", {**base, "device": "cpu"})
    for name, label, target in (("data", "this data", "<= 1x"), ("mixed", "mixed lengths", "< 1x")):
        p = pad[name]
        figures.append(
            Figure(
                f"trainer: token slots per pass, packed vs padded ({label})",
                p["packed"],
                p["padded"],
                "slots",
                target,
                p["packed"] < p["padded"] if target == "< 1x" else p["packed"] <= p["padded"],
                note=f"{p['tokens']} tokens; padding {p['packed'] - p['tokens']} packed, "
                f"{p['padded'] - p['tokens']} padded",
            )
        )
        lines.append(
            f"padding ({label}): {p['tokens']} tokens in {p['packed']} slots packed, "
            f"{p['padded']} padded"
        )
    return figures, "\n".join(lines)


def run(quick: bool = False) -> list[Figure]:
    """``run_all.py``'s entry, on CPU (and CUDA when present): the quick setup with the tiny
    model under ``--quick`` (about a minute; SmolLM2 takes 6 or more here), with SmolLM2
    otherwise."""
    figures, table = measure("tiny" if quick else "smollm2-135m", True, _devices("all"))
    print(table, file=sys.stderr)
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="32 examples (8 steps)")
    parser.add_argument("--model", default="smollm2-135m", help="smollm2-135m (default) or tiny")
    parser.add_argument("--device", default="all", choices=["all", "cpu", "cuda"])
    parser.add_argument("--threads", type=int, default=1, help="torch threads per trainer")
    parser.add_argument("--worker", nargs=2, metavar=("KIND", "SPEC"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        _worker(args.worker[0], json.loads(args.worker[1]))
        return 0
    started = time.monotonic()
    figures, table = measure(args.model, args.quick, _devices(args.device), args.threads)
    print(table)
    print()
    for f in figures:
        ratio = f.ratio_or_computed()
        met = {True: "yes", False: "NO", None: "-"}[f.met]
        shown = f"{ratio:.2f}x" if ratio is not None else "-"
        print(f"{f.name}: {f.value} vs {f.baseline} {f.unit} ({shown}; {f.target}: {met})")
        if f.note:
            print(f"    {f.note}")
    print(f"\n{time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

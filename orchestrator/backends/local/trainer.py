"""The training loop of one local job, callable in-process (tests) or from the worker.

A plain PyTorch loop over a transformers model rather than ``transformers.Trainer``: the
weighted loss must be normalised by the whole batch's weight across gradient-accumulation
micro-batches (so ``max_device_batch`` never changes the result), cancellation must stop
within a step, and the metrics must be written as OpenAI names them. See
``docs/local-trainer.md`` for the trade-off.

* ``batch_size`` examples per optimizer step, split into micro-batches of at most
  ``max_device_batch`` (halved automatically on a CUDA out-of-memory error);
  ``ceil(n_train / batch_size)`` steps per epoch, reshuffled every epoch from ``seed``.
* AdamW (no weight decay), gradient clipping at 1.0, learning rate decaying linearly to 0.
* Each step emits ``train_loss``, ``train_mean_token_accuracy`` and ``epoch``; every
  ``valid_every`` steps (and at the last) ``valid_loss``/``valid_mean_token_accuracy`` on a
  fixed sample of the validation file (by default about 20 times per run, and at most as many
  validation examples as training examples in between); at each epoch's end ``full_valid_loss`` and
  ``full_valid_mean_token_accuracy`` on all of it (and, with option ``eval_generations``,
  ``full_valid_exact_match`` and ``full_valid_label_accuracy`` from greedy generations).
* CPU by default; CUDA when present (bf16 autocast where supported, fp32 master weights).
"""

from __future__ import annotations

import contextlib
import math
import random
import resource
import shutil
import sys
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from orchestrator.backends.base import Hyperparameters
from orchestrator.backends.local import models
from orchestrator.backends.local.distributed import OneProcess, StepShare
from orchestrator.backends.local.encoding import Encoded, encode_file
from orchestrator.backends.local.loss import BatchStats, forward, target_weight
from orchestrator.backends.local.options import DEFAULT_PROMPT_LOSS_WEIGHT, LocalOptions
from orchestrator.core.errors import BackendError, UsageError

__all__ = ["MetricSink", "TrainingConfig", "TrainingPlan", "TrainingResult", "run_training"]

MAX_PERIODIC_VALIDATIONS = 20


class MetricSink(Protocol):
    def emit(self, step: int, values: Mapping[str, float]) -> None: ...


@dataclass(frozen=True)
class TrainingConfig:
    """What to train: the worker builds it from the job's ``request.json``."""

    model: str
    train_file: Path
    hyperparameters: Hyperparameters
    valid_file: Path | None = None
    seed: int = 0
    options: LocalOptions = field(default_factory=LocalOptions)
    #: where the final model (or LoRA adapter) goes; None keeps nothing
    output_dir: Path | None = None
    #: where epoch checkpoints go (``epoch-N`` folders), when ``options.checkpoints`` > 0
    checkpoint_dir: Path | None = None


@dataclass(frozen=True)
class TrainingPlan:
    """The run's shape, known before the first step."""

    total_steps: int
    steps_per_epoch: int
    n_train: int
    n_valid: int
    learning_rate: float
    device: str
    trained_tokens: int


@dataclass(frozen=True)
class TrainingResult:
    """How the run ended (``succeeded`` or ``cancelled``)."""

    status: str
    steps: int
    trained_tokens: int
    model_dir: Path | None
    seconds_per_step: float | None
    peak_rss_mb: float


def _quiet(_: str) -> None:
    pass


def _never() -> bool:
    return False


def _device(option: str) -> Any:
    import torch

    if option == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(option)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError("local backend: device 'cuda' requested but no CUDA device is available")
    return device


def _last_completion(example: Encoded) -> tuple[list[int], tuple[int, ...]]:
    """The ids before the example's last run of completion tokens, and that run."""
    mask = example.completion
    end = max((i for i, c in enumerate(mask) if c), default=len(mask) - 1) + 1
    start = end
    while start > 0 and mask[start - 1]:
        start -= 1
    return list(example.input_ids[:start]), example.input_ids[start:end]


def _chunks(items: Sequence[Encoded], size: int) -> list[Sequence[Encoded]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def peak_rss_mb() -> float:
    """This process's peak resident memory in MB."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024


class _Run:
    def __init__(
        self, config: TrainingConfig, progress: Callable[[str], None], share: StepShare
    ) -> None:
        source = models.resolve(config.model, progress=progress)
        import torch

        opts, hp = config.options, config.hyperparameters
        if opts.torch_threads:
            torch.set_num_threads(opts.torch_threads)
        random.seed(config.seed)
        torch.manual_seed(config.seed)
        self.device = _device(opts.device)
        bf16 = self.device.type == "cuda" and torch.cuda.is_bf16_supported()
        self.autocast: Any = (
            torch.autocast("cuda", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
        )
        progress(f"loading {source.name} ({source.kind}: {source.location})")
        frozen_bf16 = bf16 and opts.lora is not None
        loaded = models.load(source, dtype=torch.bfloat16 if frozen_bf16 else torch.float32)
        self.tokenizer = loaded.tokenizer
        self.pad_id = int(self.tokenizer.pad_token_id)
        max_length = opts.max_length or getattr(
            loaded.model.config, "max_position_embeddings", None
        )
        plw = hp.prompt_loss_weight
        plw = DEFAULT_PROMPT_LOSS_WEIGHT if plw is None else plw
        self.train = encode_file(config.train_file, self.tokenizer, plw, max_length)
        self.valid = (
            encode_file(config.valid_file, self.tokenizer, plw, max_length).examples
            if config.valid_file
            else []
        )
        for name, n in (("training", self.train.n_truncated),):
            if n:
                progress(f"{n} {name} examples longer than {max_length} tokens were truncated")
        sample_rng = random.Random(config.seed)
        sample = sorted(
            sample_rng.sample(range(len(self.valid)), min(len(self.valid), opts.valid_sample))
        )
        self.valid_sample = [self.valid[i] for i in sample]

        model = loaded.model
        if opts.lora is not None:
            from peft import LoraConfig, get_peft_model

            lora = opts.lora
            targets = lora.target_modules
            with warnings.catch_warnings():  # peft calls a transformers API deprecated in v5
                warnings.simplefilter("ignore", FutureWarning)
                model = get_peft_model(
                    model,
                    LoraConfig(
                        r=lora.r,
                        lora_alpha=lora.alpha,
                        lora_dropout=lora.dropout,
                        target_modules=targets if isinstance(targets, str) else list(targets),
                        task_type="CAUSAL_LM",
                    ),
                )
        model.config.use_cache = False
        self.model = model.to(self.device)
        self.model.train()
        self.share = share  # this process's part of each step (data-parallel ranks)
        self.trained = share.wrap(self.model)
        self.params = [p for p in self.model.parameters() if p.requires_grad]

        n = len(self.train.examples)
        self.steps_per_epoch = math.ceil(n / hp.batch_size)
        total = self.steps_per_epoch * hp.n_epochs
        lr = opts.learning_rate(hp.learning_rate_multiplier, tiny=source.tiny)
        self.optimizer = torch.optim.AdamW(self.params, lr=lr, weight_decay=0.0)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: max(0.0, 1.0 - step / total)
        )
        self.micro = opts.max_device_batch or hp.batch_size
        self.eval_batch = opts.max_device_batch or max(hp.batch_size, 8)
        # ~20 points per run, but never more validation examples than training ones in between
        self.valid_every = opts.valid_every or max(
            math.ceil(total / MAX_PERIODIC_VALIDATIONS),
            math.ceil(len(self.valid_sample) / hp.batch_size),
            1,
        )
        self.plan = TrainingPlan(
            total_steps=total,
            steps_per_epoch=self.steps_per_epoch,
            n_train=n,
            n_valid=len(self.valid),
            learning_rate=lr,
            device=str(self.device),
            trained_tokens=self.train.n_tokens * hp.n_epochs,
        )

    def step(self, batch: Sequence[Encoded], stop: Callable[[], bool]) -> BatchStats | None:
        """One optimizer step; None when ``stop`` turned true before it finished."""
        import torch

        total_weight = max(target_weight(batch), 1e-12)
        while True:
            stats = BatchStats()
            try:
                for micro, factor, sync in self.share.split(batch, self.micro):
                    if stop():
                        self.optimizer.zero_grad(set_to_none=True)
                        return None
                    with sync:
                        weighted, part = forward(
                            self.trained, micro, self.pad_id, self.device, self.autocast
                        )
                        (weighted * factor / total_weight).backward()
                    if factor:
                        stats.add(part)
                break
            except torch.cuda.OutOfMemoryError as exc:
                self.optimizer.zero_grad(set_to_none=True)
                torch.cuda.empty_cache()
                if self.micro == 1:
                    raise BackendError("out of GPU memory even with one example per pass") from exc
                self.micro = max(1, self.micro // 2)
                self.eval_batch = min(self.eval_batch, self.micro)
        torch.nn.utils.clip_grad_norm_(self.params, 1.0)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return self.share.reduce(stats)

    def evaluate(self, examples: Sequence[Encoded]) -> BatchStats:
        import torch

        stats = BatchStats()
        self.model.eval()
        with torch.no_grad():
            for micro in _chunks(sorted(examples, key=len), self.eval_batch):
                stats.add(forward(self.model, micro, self.pad_id, self.device, self.autocast)[1])
        self.model.train()
        return stats

    def generate_eval(self, examples: Sequence[Encoded]) -> tuple[float, float]:
        """Greedy generations of each example's last completion: (exact match, label accuracy).

        Exact match compares token ids, the stop token included; label accuracy compares the
        decoded texts, stripped and case-folded, without special tokens.
        """
        import torch

        exact = label = 0
        self.model.eval()
        with torch.no_grad():
            for example in examples:
                prompt, reference = _last_completion(example)
                ids = torch.tensor([prompt], device=self.device)
                with self.autocast:
                    out = self.model.generate(
                        input_ids=ids,
                        attention_mask=torch.ones_like(ids),
                        max_new_tokens=len(reference),
                        do_sample=False,
                        use_cache=True,
                        pad_token_id=self.pad_id,
                    )
                generated = [int(t) for t in out[0, len(prompt) :]]
                exact += generated == list(reference)
                decode = self.tokenizer.decode
                said = decode(generated, skip_special_tokens=True).strip().casefold()
                label += (
                    said == decode(list(reference), skip_special_tokens=True).strip().casefold()
                )
        self.model.train()
        n = max(1, len(examples))
        return exact / n, label / n

    def save(self, out: Path) -> None:
        out.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(out)
        self.tokenizer.save_pretrained(out)


def run_training(
    config: TrainingConfig,
    sink: MetricSink,
    *,
    should_stop: Callable[[], bool] = _never,
    progress: Callable[[str], None] = _quiet,
    on_plan: Callable[[TrainingPlan], None] | None = None,
    on_checkpoints: Callable[[list[dict[str, Any]]], None] | None = None,
    share: StepShare | None = None,
) -> TrainingResult:
    """Train as ``config`` says, emitting step metrics to ``sink``.

    ``should_stop`` is checked before every forward pass; when it turns true the run ends
    with status ``cancelled`` after the last completed step (nothing is saved).
    ``on_checkpoints`` receives the kept epoch checkpoints (``step``, ``epoch``, ``metrics``,
    ``model_id``: the folder) each time they change. ``share`` is this process's part of each
    step when it is one rank of a data-parallel job (:mod:`.distributed`); alone by default.
    """
    import torch

    run = _Run(config, progress, share or OneProcess())
    plan = run.plan
    if on_plan is not None:
        on_plan(plan)
    progress(
        f"training: {plan.n_train} examples, {plan.total_steps} steps, lr {plan.learning_rate:g}, "
        f"device {plan.device}, {sum(p.numel() for p in run.params):,} trainable parameters"
    )
    hp = config.hyperparameters
    order = torch.Generator().manual_seed(config.seed)
    step, tokens, started = 0, 0, time.monotonic()
    report_every = max(1, plan.total_steps // 10)
    kept: list[dict[str, Any]] = []
    for epoch in range(hp.n_epochs):
        perm = torch.randperm(plan.n_train, generator=order).tolist()
        for i in range(plan.steps_per_epoch):
            batch = [
                run.train.examples[j] for j in perm[i * hp.batch_size : (i + 1) * hp.batch_size]
            ]
            stats = run.step(batch, should_stop)
            if stats is None:
                return _ended("cancelled", step, tokens, None, started)
            step += 1
            tokens += sum(len(e) for e in batch)
            values = {
                "train_loss": stats.loss,
                "train_mean_token_accuracy": stats.accuracy,
                "epoch": epoch + (i + 1) / plan.steps_per_epoch,
            }
            if run.valid and (step % run.valid_every == 0 or step == plan.total_steps):
                sample = run.evaluate(run.valid_sample)
                values["valid_loss"] = sample.loss
                values["valid_mean_token_accuracy"] = sample.accuracy
            if run.valid and i == plan.steps_per_epoch - 1:
                full = run.evaluate(run.valid)
                values["full_valid_loss"] = full.loss
                values["full_valid_mean_token_accuracy"] = full.accuracy
                if config.options.eval_generations:
                    chosen = run.valid[: config.options.eval_generations]
                    exact, label = run.generate_eval(chosen)
                    values["full_valid_exact_match"] = exact
                    values["full_valid_label_accuracy"] = label
            sink.emit(step, {k: v for k, v in values.items() if not math.isnan(v) or "loss" in k})
            if i == plan.steps_per_epoch - 1 and epoch < hp.n_epochs - 1:
                _checkpoint(run, config, kept, step, epoch + 1, values, on_checkpoints)
            if step % report_every == 0:
                rate = (time.monotonic() - started) / step
                progress(
                    f"step {step}/{plan.total_steps}: train_loss {stats.loss:.4f} "
                    f"({rate:.3f} s/step)"
                )
    out = config.output_dir
    if out is not None and config.options.save_model:
        progress(f"saving the {'adapter' if config.options.lora else 'model'} to {out}")
        run.save(out)
    else:
        out = None
    return _ended("succeeded", step, tokens, out, started)


def _checkpoint(
    run: _Run,
    config: TrainingConfig,
    kept: list[dict[str, Any]],
    step: int,
    epoch: int,
    values: Mapping[str, float],
    report: Callable[[list[dict[str, Any]]], None] | None,
) -> None:
    """Save this epoch's model and drop the oldest beyond ``options.checkpoints``."""
    keep = config.options.checkpoints
    if not keep or config.checkpoint_dir is None:
        return
    path = config.checkpoint_dir / f"epoch-{epoch}"
    run.save(path)
    kept.append({"step": step, "epoch": epoch, "metrics": dict(values), "model_id": str(path)})
    dropped = kept[:-keep]
    del kept[:-keep]
    if report is not None:
        report(list(kept))
    for old in dropped:
        shutil.rmtree(old["model_id"], ignore_errors=True)


def _ended(
    status: str, steps: int, tokens: int, out: Path | None, started: float
) -> TrainingResult:
    per_step = (time.monotonic() - started) / steps if steps else None
    return TrainingResult(status, steps, tokens, out, per_step, peak_rss_mb())

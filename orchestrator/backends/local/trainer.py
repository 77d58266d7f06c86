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
  fixed sample of the validation file (by default at most about 20 times per run, and at
  least :data:`TRAIN_PER_VALID_EXAMPLE` training examples per sample example in between, so
  the sample costs about a tenth of the training); at each epoch's end ``full_valid_loss``
  and ``full_valid_mean_token_accuracy`` on all of it (and, with option ``eval_generations``,
  ``full_valid_exact_match`` and ``full_valid_label_accuracy`` from greedy generations; with
  option ``evaluate``, the held-out scores ``eval_<scorer>``: :mod:`.taskeval`). A
  sample point that falls on an epoch's end is read from that epoch's full pass.
* At each epoch's end, ``tokens_per_second``, ``mfu`` (where the GPU's peak is known) and
  ``peak_memory_mb`` go to ``on_throughput`` (:mod:`.throughput`).
* CPU by default; CUDA when present (bf16 autocast where supported, fp16 with loss scaling
  where not, fp32 master weights; :mod:`.precision`). Passes are packed without padding
  where the model allows (:mod:`.batches`), the loss is computed at target positions only
  (:mod:`.loss`), and the model is prepared by :mod:`.prepare`.
* One rank of a data-parallel job (``share``, :mod:`.distributed`) runs its share of each
  step's passes through DDP and reports the whole step's statistics.
"""

from __future__ import annotations

import contextlib
import math
import random
import shutil
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from orchestrator.backends.base import Hyperparameters
from orchestrator.backends.local import models
from orchestrator.backends.local.distributed import OneProcess, StepShare
from orchestrator.backends.local.encoding import Encoded, encode_file
from orchestrator.backends.local.loss import BatchStats, Forward
from orchestrator.backends.local.options import DEFAULT_PROMPT_LOSS_WEIGHT, LocalOptions
from orchestrator.backends.local.precision import resolve_precision
from orchestrator.backends.local.prepare import packs, prepare_model
from orchestrator.backends.local.steps import Stepper, chunks
from orchestrator.backends.local.throughput import (
    ModelFlops,
    flops_per_token,
    mfu,
    peak_memory_mb,
    peak_rss_mb,
    peak_tflops,
)
from orchestrator.core.errors import UsageError

__all__ = [
    "MetricSink",
    "TrainingConfig",
    "TrainingPlan",
    "TrainingResult",
    "default_valid_every",
    "peak_rss_mb",
    "run_training",
]

MAX_PERIODIC_VALIDATIONS = 20
#: training examples per validation-sample example between two ``valid_loss`` points by
#: default: a forward pass costs about half a LoRA training step and a third of a full one,
#: so the sample costs at most about 10 % of the training between points
TRAIN_PER_VALID_EXAMPLE = 5


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
    """How the run ended (``succeeded`` or ``cancelled``), and where its time went."""

    status: str
    steps: int
    trained_tokens: int
    model_dir: Path | None
    seconds_per_step: float | None
    peak_rss_mb: float
    #: seconds in optimizer steps, in ``valid_loss`` points, in epoch-end full validations
    train_seconds: float = 0.0
    valid_seconds: float = 0.0
    full_valid_seconds: float = 0.0
    #: trained tokens per training second; MFU where the device's peak is known
    tokens_per_second: float | None = None
    mfu: float | None = None
    #: CUDA peak allocated memory on a GPU, else peak RSS
    peak_memory_mb: float = 0.0
    #: token slots the model computed in training passes (tokens + padding)
    train_slots: int = 0
    #: CPU seconds of this process (all threads) in optimizer steps
    train_cpu_seconds: float = 0.0


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


def _sum(stats: Sequence[BatchStats]) -> BatchStats:
    total = BatchStats()
    for one in stats:
        total.add(one)
    return total


def default_valid_every(total_steps: int, sample: int, batch_size: int) -> int:
    """Steps between ``valid_loss`` points without option ``valid_every``: at most about
    :data:`MAX_PERIODIC_VALIDATIONS` points, and :data:`TRAIN_PER_VALID_EXAMPLE` training
    examples per sample example between two of them."""
    return max(
        math.ceil(total_steps / MAX_PERIODIC_VALIDATIONS),
        math.ceil(TRAIN_PER_VALID_EXAMPLE * sample / batch_size),
        1,
    )


class _Run:
    def __init__(
        self, config: TrainingConfig, progress: Callable[[str], None], share: StepShare
    ) -> None:
        source = models.resolve(config.model, progress=progress)
        import torch

        opts, hp = config.options, config.hyperparameters
        self.opts = opts
        if opts.torch_threads:
            torch.set_num_threads(opts.torch_threads)
        random.seed(config.seed)
        torch.manual_seed(config.seed)
        self.device = _device(opts.device)
        self.precision = resolve_precision(opts.precision, self.device)
        progress(f"loading {source.name} ({source.kind}: {source.location})")
        loaded = models.load(
            source,
            dtype=self.precision.frozen_dtype(opts.lora is not None or opts.load_in_4bit),
            attn_implementation=opts.attn_implementation,
            load_in_4bit=opts.load_in_4bit,
            device=self.device,
        )
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
        self.sample_index = sorted(
            sample_rng.sample(range(len(self.valid)), min(len(self.valid), opts.valid_sample))
        )
        self.valid_sample = [self.valid[i] for i in self.sample_index]
        self.task: Any = None  # a .taskeval.TaskEval with option evaluate
        if opts.evaluate is not None:
            from orchestrator.backends.local.taskeval import TaskEval
            from orchestrator.data.checks import check_file

            stop = check_file(config.train_file)[0].stop_sequence
            self.task = TaskEval(opts.evaluate, self.tokenizer, stop)

        model = prepare_model(loaded.model, opts)
        self.model = model if opts.load_in_4bit else model.to(self.device)
        self.model.train()
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.forward = Forward(
            self.model,
            pad_id=self.pad_id,
            device=self.device,
            precision=self.precision,
            packed=packs(self.model, opts.packing),
            loss_chunk=opts.loss_chunk,
            through=share.wrap(self.model),  # a data-parallel rank's passes go through DDP
        )
        self.flops = ModelFlops.of(self.model)
        gpu = torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else None
        peak = peak_tflops(gpu, opts.peak_tflops)
        self.peak_tflops = peak * share.world if peak is not None else None  # every rank's GPU

        n = len(self.train.examples)
        self.steps_per_epoch = math.ceil(n / hp.batch_size)
        total = self.steps_per_epoch * hp.n_epochs
        lr = opts.learning_rate(hp.learning_rate_multiplier, tiny=source.tiny)
        self.optimizer = torch.optim.AdamW(self.params, lr=lr, weight_decay=0.0)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: max(0.0, 1.0 - step / total)
        )
        self.stepper = Stepper(
            self.forward,
            self.optimizer,
            self.scheduler,
            micro=opts.max_device_batch or hp.batch_size,
            scaler=self.precision.scaler(),
            checkpointing=opts.gradient_checkpointing,
            share=share,
        )
        self.eval_batch = opts.max_device_batch or max(hp.batch_size, 8)
        self.valid_every = opts.valid_every or default_valid_every(
            total, len(self.valid_sample), hp.batch_size
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

    def evaluate(self, examples: Sequence[Encoded]) -> list[BatchStats]:
        """Each example's statistics, in the order given."""
        import torch

        order = sorted(range(len(examples)), key=lambda i: len(examples[i]))
        out: list[BatchStats] = [BatchStats() for _ in examples]
        self.model.eval()
        with torch.no_grad():
            for chunk in chunks(order, min(self.eval_batch, self.stepper.micro)):
                got = self.forward.per_example([examples[i] for i in chunk])
                for i, stats in zip(chunk, got, strict=True):
                    out[i] = stats
        self.model.train()
        return out

    def throughput(self, tokens: int, seconds: float) -> dict[str, float]:
        """``tokens_per_second``, ``mfu`` (where a peak is known) and ``peak_memory_mb``."""
        rate = tokens / seconds if seconds > 0 else 0.0
        values = {"tokens_per_second": rate, "peak_memory_mb": peak_memory_mb(self.device)}
        context = self.stepper.context_sum / tokens if tokens else 0.0
        used = mfu(rate, flops_per_token(self.flops, context), self.peak_tflops)
        if used is not None:
            values["mfu"] = used
        return values

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
                with self.precision.autocast():
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
    on_throughput: Callable[[int, Mapping[str, float]], None] | None = None,
    share: StepShare | None = None,
) -> TrainingResult:
    """Train as ``config`` says, emitting step metrics to ``sink``.

    ``should_stop`` is checked before every forward pass; when it turns true the run ends
    with status ``cancelled`` after the last completed step (nothing is saved).
    ``on_checkpoints`` receives the kept epoch checkpoints (``step``, ``epoch``, ``metrics``,
    ``model_id``: the folder) each time they change. ``on_throughput`` receives, at each
    epoch's last step, the run's ``tokens_per_second``, ``mfu`` (where known) and
    ``peak_memory_mb`` so far (timings, so apart from the deterministic ``sink``). ``share``
    is this process's part of each step when it is one rank of a data-parallel job
    (:mod:`.distributed`); alone by default.
    """
    import torch

    run = _Run(config, progress, share or OneProcess())
    plan = run.plan
    if on_plan is not None:
        on_plan(plan)
    progress(
        f"training: {plan.n_train} examples, {plan.total_steps} steps, lr {plan.learning_rate:g}, "
        f"device {plan.device} ({run.precision.name}"
        f"{', packed' if run.forward.packed else ''}), "
        f"{sum(p.numel() for p in run.params):,} trainable parameters"
    )
    hp = config.hyperparameters
    order = torch.Generator().manual_seed(config.seed)
    clock = _Clock()
    step, tokens = 0, 0
    report_every = max(1, plan.total_steps // 10)
    kept: list[dict[str, Any]] = []
    for epoch in range(hp.n_epochs):
        perm = torch.randperm(plan.n_train, generator=order).tolist()
        for i in range(plan.steps_per_epoch):
            batch = [
                run.train.examples[j] for j in perm[i * hp.batch_size : (i + 1) * hp.batch_size]
            ]
            with clock.timing("train"):
                stats = run.stepper.step(batch, should_stop)
            if stats is None:
                return _ended("cancelled", step, tokens, None, run, clock)
            step += 1
            tokens += sum(len(e) for e in batch)
            values = {
                "train_loss": stats.loss,
                "train_mean_token_accuracy": stats.accuracy,
                "epoch": epoch + (i + 1) / plan.steps_per_epoch,
            }
            epoch_end = i == plan.steps_per_epoch - 1
            sample_point = step % run.valid_every == 0 or step == plan.total_steps
            if run.valid and epoch_end:
                with clock.timing("full_valid"):
                    each = run.evaluate(run.valid)
                full = _sum(each)
                values["full_valid_loss"] = full.loss
                values["full_valid_mean_token_accuracy"] = full.accuracy
                if sample_point:  # the sample is part of the full pass
                    sample = _sum([each[j] for j in run.sample_index])
                    values["valid_loss"] = sample.loss
                    values["valid_mean_token_accuracy"] = sample.accuracy
                if config.options.eval_generations:
                    chosen = run.valid[: config.options.eval_generations]
                    with clock.timing("full_valid"):
                        exact, label = run.generate_eval(chosen)
                    values["full_valid_exact_match"] = exact
                    values["full_valid_label_accuracy"] = label
            elif run.valid and sample_point:
                with clock.timing("valid"):
                    sample = _sum(run.evaluate(run.valid_sample))
                values["valid_loss"] = sample.loss
                values["valid_mean_token_accuracy"] = sample.accuracy
            if epoch_end and run.task is not None:  # the evaluate: block's scores
                with clock.timing("full_valid"):
                    values.update(run.task.score(run.model, run.tokenizer, run.device, run.pad_id))
            if epoch_end and on_throughput is not None:  # before the line a sink may wait at
                on_throughput(step, run.throughput(tokens, clock.seconds["train"]))
            sink.emit(step, {k: v for k, v in values.items() if not math.isnan(v) or "loss" in k})
            if epoch_end and epoch < hp.n_epochs - 1:
                _checkpoint(run, config, kept, step, epoch + 1, values, on_checkpoints)
            if step % report_every == 0:
                rate = clock.elapsed() / step
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
    return _ended("succeeded", step, tokens, out, run, clock)


class _Clock:
    """Wall seconds by phase since the first step."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.seconds = {"train": 0.0, "valid": 0.0, "full_valid": 0.0}
        self.cpu = {"train": 0.0, "valid": 0.0, "full_valid": 0.0}

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    @contextlib.contextmanager
    def timing(self, phase: str) -> Iterator[None]:
        t0, c0 = time.monotonic(), time.process_time()
        try:
            yield
        finally:
            self.seconds[phase] += time.monotonic() - t0
            self.cpu[phase] += time.process_time() - c0


#: what "best so far" means for a full fine-tune's kept epoch, in order of preference
_BEST_BY = ("full_valid_loss", "valid_loss", "train_loss")


def _checkpoint(
    run: _Run,
    config: TrainingConfig,
    kept: list[dict[str, Any]],
    step: int,
    epoch: int,
    values: Mapping[str, float],
    report: Callable[[list[dict[str, Any]]], None] | None,
) -> None:
    """Save this epoch's model as ``checkpoint_dir/epoch-N`` (the one layout of local
    checkpoints: ``docs/local-trainer.md``) and drop what ``options.checkpoints`` does not keep:
    beyond N the oldest; with ``auto`` nothing of a LoRA adapter (every earlier epoch kept),
    and of a full fine-tune all but the best epoch so far (lowest :data:`_BEST_BY` loss);
    ``auto`` keeps nothing when the job keeps no model (``save_model: false``)."""
    keep = config.options.checkpoints
    if (
        not keep
        or config.checkpoint_dir is None
        or (keep == "auto" and not config.options.save_model)
    ):
        return
    if keep == "auto" and config.options.lora is None and kept:
        name = next((n for n in _BEST_BY if n in values and n in kept[-1]["metrics"]), None)
        if name is None or not values[name] < kept[-1]["metrics"][name]:
            return  # the best so far stays
    path = config.checkpoint_dir / f"epoch-{epoch}"
    run.save(path)
    kept.append({"step": step, "epoch": epoch, "metrics": dict(values), "model_id": str(path)})
    every = len(kept) if config.options.lora is not None else 1
    limit = every if keep == "auto" else int(keep)
    dropped = kept[:-limit]
    del kept[:-limit]
    if report is not None:
        report(list(kept))
    for old in dropped:
        shutil.rmtree(old["model_id"], ignore_errors=True)


def _ended(
    status: str, steps: int, tokens: int, out: Path | None, run: _Run, clock: _Clock
) -> TrainingResult:
    per_step = clock.elapsed() / steps if steps else None
    speed = run.throughput(tokens, clock.seconds["train"]) if steps else {}
    return TrainingResult(
        status,
        steps,
        tokens,
        out,
        per_step,
        peak_rss_mb(),
        train_seconds=clock.seconds["train"],
        valid_seconds=clock.seconds["valid"],
        full_valid_seconds=clock.seconds["full_valid"],
        tokens_per_second=speed.get("tokens_per_second"),
        mfu=speed.get("mfu"),
        peak_memory_mb=speed.get("peak_memory_mb", peak_memory_mb(run.device)),
        train_slots=run.forward.train_slots,
        train_cpu_seconds=clock.cpu["train"],
    )

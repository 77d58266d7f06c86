"""The process behind one local job: ``python -m orchestrator.backends.local.worker JOB_DIR``.

It records its pid, reads ``request.json``, trains (:func:`.trainer.run_training`) while
appending metrics, and ends by writing a terminal status: ``succeeded`` (with the model
folder), ``cancelled`` (after SIGTERM), or ``failed`` (with a one-line error; the traceback
goes to ``worker.log``). Its stdout and stderr are the job's log.

SIGTERM during setup (model pull or load, data encoding) ends the job at once; once training
runs, it stops before the next forward pass, keeping every completed step's metrics.

At each epoch's end before the last it waits for the engine to read that epoch
(:mod:`.handshake`), so a pruned job stops at the epoch it was pruned at. It records the GPUs
it was given (``CUDA_VISIBLE_DEVICES``) in its status and frees their leases when it ends
(:func:`.devices.release_job`).

Started by ``torchrun`` (``gpus_per_trial`` > 1), it is one rank of a data-parallel job
(:mod:`.distributed`): rank ``r`` trains on ``cuda:LOCAL_RANK`` (CPU without CUDA), and only
rank 0 writes the job's files; the others log to the same ``worker.log``.
"""

from __future__ import annotations

import os
import signal
import sys
import time
import traceback
from dataclasses import replace
from pathlib import Path
from types import FrameType
from typing import Any

from orchestrator.backends.base import JobStatus, TrainingRequest
from orchestrator.backends.local.devices import release_job
from orchestrator.backends.local.distributed import DataParallel, Ranks
from orchestrator.backends.local.handshake import EpochGate
from orchestrator.backends.local.jobfiles import JobFolder, MetricsWriter, ProcessRecord
from orchestrator.backends.local.options import LocalOptions
from orchestrator.core.errors import OrchestratorError

__all__ = ["main"]


class _Cancelled(BaseException):
    """Raised by the SIGTERM handler while the job is still setting up."""


class _StopFlag:
    """Turns SIGTERM into a flag the training loop polls (or, before it runs, an exception)."""

    def __init__(self) -> None:
        self.requested = False
        self.training = False

    def handle(self, signum: int, frame: FrameType | None) -> None:
        self.requested = True
        if not self.training:
            raise _Cancelled

    def __call__(self) -> bool:
        self.training = True
        return self.requested


def _log(message: str) -> None:
    sys.stderr.write(f"{time.strftime('%H:%M:%S')} {message}\n")
    sys.stderr.flush()


def _config(record: dict[str, Any], folder: JobFolder, ranks: Ranks) -> Any:
    """The training config of ``request.json`` (:meth:`TrainingRequest.from_dict`), with a
    data-parallel rank's device and the output folders on rank 0 only."""
    from orchestrator.backends.local.trainer import TrainingConfig

    request = TrainingRequest.from_dict(record)
    options = LocalOptions.parse(request.options)
    if ranks.world > 1:
        import torch

        cuda = torch.cuda.is_available()
        options = replace(options, device=f"cuda:{ranks.local_rank}" if cuda else "cpu")
    return TrainingConfig(
        model=request.model,
        train_file=request.train_file,
        valid_file=request.valid_file,
        hyperparameters=request.hyperparameters,
        seed=request.seed,
        options=options,
        output_dir=folder.model_dir if ranks.main else None,
        checkpoint_dir=folder.checkpoint_dir if ranks.main else None,
    )


def run(folder: JobFolder) -> int:
    """Run the job in ``folder`` to a terminal status; the process exit code."""
    ranks = Ranks.from_env()
    if not ranks.main:
        return _run_rank(folder, ranks)
    stop = _StopFlag()
    signal.signal(signal.SIGTERM, stop.handle)
    if ranks.world == 1:  # under torchrun the launcher's record stays: it leads the group
        folder.write_pid(ProcessRecord.of(os.getpid()))
    metrics: MetricsWriter | None = None
    share: DataParallel | None = None
    try:
        if folder.cancel_requested():
            raise _Cancelled
        _quiet_libraries()
        from orchestrator.backends.local.trainer import TrainingPlan, run_training

        config = _config(folder.read_request(), folder, ranks)
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        folder.write_status(
            JobStatus.RUNNING,
            started=time.time(),
            cuda_visible_devices=visible,
            processes=ranks.world,
        )
        metrics = MetricsWriter(folder.metrics_file)
        gate = EpochGate(
            metrics,
            folder,
            n_epochs=config.hyperparameters.n_epochs,
            timeout_s=config.options.epoch_handshake_s,
            stopped=lambda: stop.requested,
            log=_log,
        )
        share = _share(ranks, config)

        def planned(plan: TrainingPlan) -> None:
            folder.write_status(
                JobStatus.RUNNING,
                total_steps=plan.total_steps,
                trained_tokens=plan.trained_tokens,
                learning_rate=plan.learning_rate,
                device=plan.device,
                n_train=plan.n_train,
                n_valid=plan.n_valid,
            )

        result = run_training(
            config,
            gate,
            should_stop=stop,
            progress=_log,
            on_plan=planned,
            on_checkpoints=folder.write_checkpoints,
            on_throughput=metrics.emit,
            share=share,
        )
    except _Cancelled:
        _finish(metrics, share)
        folder.write_status(JobStatus.CANCELLED)
        _log("cancelled before training started")
        release_job(folder)
        return 0
    except BaseException as exc:
        _finish(metrics, share)
        _log(traceback.format_exc())
        if folder.cancel_requested():  # e.g. a rank that stopped broke a collective call
            folder.write_status(JobStatus.CANCELLED)
        elif isinstance(exc, OrchestratorError):
            folder.write_status(JobStatus.FAILED, error=str(exc))
        else:
            folder.write_status(JobStatus.FAILED, error=f"{type(exc).__name__}: {exc}")
        release_job(folder)
        return 1
    _finish(metrics, share)
    status = JobStatus.SUCCEEDED if result.status == "succeeded" else JobStatus.CANCELLED
    folder.write_status(
        status,
        steps=result.steps,
        trained_tokens=result.trained_tokens,
        fine_tuned_model=str(result.model_dir) if result.model_dir else None,
        seconds_per_step=result.seconds_per_step,
        peak_rss_mb=round(result.peak_rss_mb, 1),
        epoch_wait_s=round(gate.waited_s, 3),
    )
    _log(
        f"{status.value}: {result.steps} steps, "
        f"{result.seconds_per_step or 0:.4f} s/step, peak RSS {result.peak_rss_mb:.0f} MB"
    )
    release_job(folder)
    return 0


def _quiet_libraries() -> None:
    """No progress bars and no tokenizer threads in the job's log."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    from transformers.utils import logging as hf_logging_module

    hf_logging: Any = hf_logging_module
    hf_logging.disable_progress_bar()


def _share(ranks: Ranks, config: Any) -> DataParallel | None:
    """This rank's part in a data-parallel job (None: the whole job in this process)."""
    if ranks.world == 1:
        return None
    import torch

    share = DataParallel(ranks)
    share.start(torch.device(config.options.device))
    return share


def _run_rank(folder: JobFolder, ranks: Ranks) -> int:
    """A rank other than 0: trains its share, writes no job file (errors go to the log)."""
    from orchestrator.backends.local.trainer import run_training

    stop = _StopFlag()
    signal.signal(signal.SIGTERM, stop.handle)
    share: DataParallel | None = None
    try:
        _quiet_libraries()
        config = _config(folder.read_request(), folder, ranks)
        share = _share(ranks, config)
        run_training(config, _NoMetrics(), should_stop=stop, share=share)
    except _Cancelled:
        return 0
    except BaseException:
        _log(f"rank {ranks.rank}: {traceback.format_exc()}")
        return 1
    finally:
        if share is not None:
            share.close()
    return 0


class _NoMetrics:
    def emit(self, step: int, values: Any) -> None:
        pass


def _finish(metrics: MetricsWriter | None, share: DataParallel | None) -> None:
    if metrics is not None:
        metrics.close()
    if share is not None:
        share.close()


def main(argv: list[str] | None = None) -> int:
    """Entry point: one argument, the job folder."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or not Path(args[0]).is_dir():
        sys.stderr.write("usage: python -m orchestrator.backends.local.worker JOB_DIR\n")
        return 2
    return run(JobFolder(Path(args[0])))


if __name__ == "__main__":
    raise SystemExit(main())

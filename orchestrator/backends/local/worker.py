"""The process behind one local job: ``python -m orchestrator.backends.local.worker JOB_DIR``.

It records its pid, reads ``request.json``, trains (:func:`.trainer.run_training`) while
appending metrics, and ends by writing a terminal status: ``succeeded`` (with the model
folder), ``cancelled`` (after SIGTERM), or ``failed`` (with a one-line error; the traceback
goes to ``worker.log``). Its stdout and stderr are the job's log.

SIGTERM during setup (model pull or load, data encoding) ends the job at once; once training
runs, it stops before the next forward pass, keeping every completed step's metrics.
"""

from __future__ import annotations

import os
import signal
import sys
import time
import traceback
from pathlib import Path
from types import FrameType
from typing import Any

from orchestrator.backends.base import JobStatus, TrainingRequest
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


def _config(record: dict[str, Any], folder: JobFolder) -> Any:
    from orchestrator.backends.local.trainer import TrainingConfig

    request = TrainingRequest.from_dict(record)
    return TrainingConfig(
        model=request.model,
        train_file=request.train_file,
        valid_file=request.valid_file,
        hyperparameters=request.hyperparameters,
        seed=request.seed,
        options=LocalOptions.parse(request.options),
        output_dir=folder.model_dir,
        checkpoint_dir=folder.checkpoint_dir,
    )


def run(folder: JobFolder) -> int:
    """Run the job in ``folder`` to a terminal status; the process exit code."""
    stop = _StopFlag()
    signal.signal(signal.SIGTERM, stop.handle)
    folder.write_pid(ProcessRecord.of(os.getpid()))
    metrics: MetricsWriter | None = None
    try:
        if folder.cancel_requested():
            raise _Cancelled
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        from transformers.utils import logging as hf_logging_module

        from orchestrator.backends.local.trainer import TrainingPlan, run_training

        hf_logging: Any = hf_logging_module
        hf_logging.disable_progress_bar()

        config = _config(folder.read_request(), folder)
        folder.write_status(JobStatus.RUNNING, started=time.time())
        metrics = MetricsWriter(folder.metrics_file)

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
            metrics,
            should_stop=stop,
            progress=_log,
            on_plan=planned,
            on_checkpoints=folder.write_checkpoints,
            on_throughput=metrics.emit,
        )
    except _Cancelled:
        _finish(metrics)
        folder.write_status(JobStatus.CANCELLED)
        _log("cancelled before training started")
        return 0
    except OrchestratorError as exc:
        _finish(metrics)
        _log(traceback.format_exc())
        folder.write_status(JobStatus.FAILED, error=str(exc))
        return 1
    except BaseException as exc:
        _finish(metrics)
        _log(traceback.format_exc())
        folder.write_status(JobStatus.FAILED, error=f"{type(exc).__name__}: {exc}")
        return 1
    _finish(metrics)
    status = JobStatus.SUCCEEDED if result.status == "succeeded" else JobStatus.CANCELLED
    folder.write_status(
        status,
        steps=result.steps,
        trained_tokens=result.trained_tokens,
        fine_tuned_model=str(result.model_dir) if result.model_dir else None,
        seconds_per_step=result.seconds_per_step,
        peak_rss_mb=round(result.peak_rss_mb, 1),
    )
    _log(
        f"{status.value}: {result.steps} steps, "
        f"{result.seconds_per_step or 0:.4f} s/step, peak RSS {result.peak_rss_mb:.0f} MB"
    )
    return 0


def _finish(metrics: MetricsWriter | None) -> None:
    if metrics is not None:
        metrics.close()


def main(argv: list[str] | None = None) -> int:
    """Entry point: one argument, the job folder."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or not Path(args[0]).is_dir():
        sys.stderr.write("usage: python -m orchestrator.backends.local.worker JOB_DIR\n")
        return 2
    return run(JobFolder(Path(args[0])))


if __name__ == "__main__":
    raise SystemExit(main())

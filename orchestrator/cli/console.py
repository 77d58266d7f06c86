"""The console listener: what ``ftsweep run`` prints while a sweep runs (one line an event,
on stderr)."""

from __future__ import annotations

from orchestrator.cli.output import Output
from orchestrator.engine.events import (
    EpochReported,
    Listener,
    Note,
    TrialFinished,
    TrialReused,
    TrialStarted,
    TrialSubmitted,
)

__all__ = ["ConsoleListener"]


def short_value(v: object) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


class ConsoleListener(Listener):
    """Prints trial progress and notes as plain lines."""

    name = "console"

    def __init__(self, out: Output, backend: str) -> None:
        self.out = out
        self.backend = backend
        self._reattached: set[int] = set()

    def trial_started(self, e: TrialStarted) -> None:
        if e.reattached:
            self._reattached.add(e.trial.number)

    def trial_submitted(self, e: TrialSubmitted) -> None:
        if e.trial.number in self._reattached:
            return
        hp = e.trial.request.hyperparameters.as_dict()
        self.out.info(
            f"trial {e.trial.number} started ({self.backend} job {e.job_id}): "
            + ", ".join(f"{k}={short_value(v)}" for k, v in hp.items())
        )

    def epoch_reported(self, e: EpochReported) -> None:
        n = e.trial.number
        self.out.info(f"trial {n} epoch {e.epoch}: {e.metric}={e.value:.4f}")
        if e.pruned:
            self.out.info(f"trial {n} pruned at epoch {e.epoch}: cancelling job {e.trial.job_id}")

    def trial_finished(self, e: TrialFinished) -> None:
        n, metric = e.trial.number, None
        if e.state == "COMPLETE":
            metric = f"{e.value:.4f}" if e.value is not None else "?"
            shown = f"COMPLETE, objective {metric}"
            if e.finished_despite_prune:
                shown += (
                    f" (pruned at epoch {e.pruned_at}, but its job had already finished; "
                    "nothing was cancelled)"
                )
        elif e.state == "PRUNED":
            shown = f"PRUNED at epoch {e.pruned_at} (job cancelled)"
        else:
            shown = f"FAILED: {e.error}"
        d = e.diagnosis
        self.out.info(f"trial {n} {shown} — {d.label}: {d.recommendation}")

    def trial_reused(self, e: TrialReused) -> None:
        if e.waiting:
            self.out.info(
                f"trial {e.number} repeats trial {e.twin}'s configuration: waiting for its result"
            )
        else:
            self.out.info(f"trial {e.number} repeats trial {e.twin}: result reused, not retrained")

    def note(self, e: Note) -> None:
        text = f"trial {e.trial}: {e.text}" if e.trial is not None else e.text
        if e.level == "warning":
            self.out.warn(text)
        else:
            self.out.info(text)

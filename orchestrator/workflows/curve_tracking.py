"""A learning curve in MLflow: the engine's MLflow listener, and what makes its runs a curve.

The curve's study is recorded like any study (:class:`~orchestrator.tracking.MlflowListener`:
one parent run, a child run per trial with its step metrics, points at or before the last
logged step skipped after a re-attach, child runs a crash left RUNNING closed at the next
start). :class:`CurveListener` adds what makes them a learning curve, all of it through the
listener's :class:`~orchestrator.tracking.Tracker`:

- the parent run tagged ``ftsweep.kind = learning-curve`` (and ``ftsweep.learning_curve``,
  the study and trial the configuration comes from, the fractions), the configuration's
  hyper-parameters as its parameters;
- each child run tagged with its fraction (``ftsweep.fraction``), named ``50% (80 examples)``,
  the fraction and its examples as parameters;
- the end: the engine runs once per fraction, so each run's ``SweepFinished`` is held, and
  :meth:`CurveListener.conclude` ends the parent once with the plot, the summary, the fit
  and the answer, then as the engine's listener ends a study (each child's loss-curve plot,
  the trials report, the run finished), registering no model: the curve trains the sweep's
  model again, it does not make a new one.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from orchestrator.core.attrs import StudyAttrs
from orchestrator.engine.events import Records, SweepFinished, SweepStarted, TrialStarted
from orchestrator.tracking import MlflowListener, Tracker
from orchestrator.tracking.client import TAG

__all__ = ["KIND", "CurveEnd", "CurveListener", "FractionLabel"]

#: the ``ftsweep.kind`` tag of a learning curve's runs
KIND = "learning-curve"


@dataclass(frozen=True)
class FractionLabel:
    """One fraction of the training data, as its run shows it."""

    fraction: float
    n_examples: int

    @property
    def title(self) -> str:
        """``50% (80 examples)``."""
        return f"{self.fraction * 100:g}% ({self.n_examples} examples)"


@dataclass(frozen=True)
class CurveEnd:
    """What the parent run gets at the end: the plot, the summary (JSON), the fit as
    metrics, the answer; ``succeeded``: some fraction trained (else the run is FAILED)."""

    plot: Path
    summary: str
    metrics: Mapping[str, float]
    answer: str
    succeeded: bool


class CurveListener(MlflowListener):
    """The MLflow listener of a learning curve's study (see the module docstring).

    ``fractions`` names each training file (``str(path)``) of the curve; ``tags`` and
    ``params`` go to the parent run."""

    def __init__(
        self,
        tracker: Tracker,
        fractions: Mapping[str, FractionLabel],
        *,
        tags: Mapping[str, str],
        params: Mapping[str, Any],
    ) -> None:
        super().__init__(tracker)
        self.fractions = dict(fractions)
        self.tags = {f"{TAG}kind": KIND, f"{TAG}learning_curve": "true", **tags}
        self.params = dict(params)
        #: the last run's end, held for :meth:`conclude`
        self.held: SweepFinished | None = None
        #: whether any run of this process started or finished a trial
        self.changed = False
        self.labelled = False

    def sweep_started(self, e: SweepStarted) -> Records | None:
        """The study's parent run (found, or made and tagged ``RUNNING``), labelled as the
        curve's once per process (the same values again: no error after a crash)."""
        known = e.study.user_attrs.get(StudyAttrs.MLFLOW_PARENT_RUN)
        records = super().sweep_started(e)
        if self.parent is None:
            return records
        made = known != self.parent
        if made or not self.labelled:
            tags = {**self.tags, f"{TAG}state": "RUNNING"} if made else self.tags
            self.tracker.log(self.parent, params=self.params, tags=tags)
            self.labelled = True
        return records

    def trial_started(self, e: TrialStarted) -> Records | None:
        """The trial's child run, labelled with its fraction."""
        records = super().trial_started(e)
        number = e.trial.number
        run_id = self.runs.get(number)
        label = self.fractions.get(str(e.trial.request.train_file))
        if run_id is None or label is None or number in self.closed:
            return records
        self.tracker.log(
            run_id,
            params={"fraction": label.fraction, "n_examples": label.n_examples},
            tags={
                f"{TAG}kind": KIND,
                f"{TAG}learning_curve": "true",
                f"{TAG}fraction": f"{label.fraction:g}",
                "mlflow.runName": label.title,
            },
        )
        return records

    def sweep_finished(self, e: SweepFinished) -> Records | None:
        """Held: the curve ends once, in :meth:`conclude`."""
        self.held = e
        self.changed = self.changed or e.changed
        return None

    def finals(self, names: Sequence[str]) -> dict[int, float]:
        """Per trial number, the last finite value its child run logged of the first of
        ``names`` it has."""
        if self.parent is None:
            return {}
        found: dict[int, float] = {}
        for run in self.tracker.children(self.parent):
            number = str(run.data.tags.get(f"{TAG}trial", ""))
            if not number.isdigit():
                continue
            history = self.tracker.history(run.info.run_id, names)
            for name in names:
                values = [v for _, v in history.get(name, []) if math.isfinite(v)]
                if values:
                    found[int(number)] = float(values[-1])
                    break
        return found

    def conclude(self, end: CurveEnd) -> Records | None:
        """End the parent run with ``end``; what to record on the curve's study (None:
        nothing was logged, a finished curve run again with nothing changed). Mends an end a
        crash cut short: values the parent has already are not logged again."""
        parent, held = self.parent, self.held
        if parent is None or held is None:
            return None
        if not self.changed and self.tracker.status(parent) == "FINISHED":
            return None
        metrics = dict(end.metrics)
        if not self.changed:  # an end cut short: what it logged stays as it is
            logged = self.tracker.last_steps(parent)
            metrics = {k: v for k, v in metrics.items() if k not in logged}
        self.tracker.log_file(parent, end.plot)
        self.tracker.log_text(parent, end.summary, "learning_curve.json")
        self.tracker.log(
            parent, metrics=metrics, tags={f"{TAG}state": "FINISHED", f"{TAG}answer": end.answer}
        )
        # the engine listener's end of a study (plots, report, the run finished); a curve
        # names no best trial, so no model is registered
        records = super().sweep_finished(replace(held, best=None, changed=True)) or {}
        if not end.succeeded:
            self.tracker.finish(parent, "FAILED")
        return records

"""Identical configurations are trained once per study.

A trial whose request has the configuration hash of an earlier trial is not trained: it takes
the earlier trial's result, or, while that one runs, waits for it (recording itself as its
owner's, with a heartbeat, so a dead worker's waiting trials are adopted like any other).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from orchestrator.core.attrs import TrialAttrs
from orchestrator.engine.events import Event, Records, TrialReused

if TYPE_CHECKING:
    import optuna

__all__ = ["Repeats"]

HEARTBEAT_EVERY_S = 10.0

Tell = Callable[["optuna.Trial", str, "float | Sequence[float] | None"], None]


@dataclass
class _Waiting:
    trial: optuna.Trial
    leader: int
    last_beat: float


class Repeats:
    """The repeats of one worker: reused results and trials waiting for a running twin."""

    def __init__(
        self,
        study: optuna.Study,
        emit: Callable[[Event], Records | None],
        worker: str,
        clock: Callable[[], float],
        wall: Callable[[], float],
    ) -> None:
        self.study, self.emit, self.worker, self.clock, self.wall = study, emit, worker, clock, wall
        self.waiting: dict[int, _Waiting] = {}

    def twin(
        self,
        config_hash: str,
        number: int,
        trials: list[optuna.trial.FrozenTrial] | None = None,
    ) -> optuna.trial.FrozenTrial | None:
        """The earliest other trial of the study with this configuration (among ``trials``,
        the study as the caller read it, else as it is now)."""
        for t in trials if trials is not None else self.study.get_trials(deepcopy=False):
            if t.number == number or t.user_attrs.get(TrialAttrs.CONFIG_HASH) != config_hash:
                continue
            if TrialAttrs.ENVIRONMENT_FAILURE in t.user_attrs:
                continue  # it never really ran: train it again
            return t
        return None

    def reuse(
        self, trial: optuna.Trial, config_hash: str, twin: optuna.trial.FrozenTrial, tell: Tell
    ) -> None:
        """``trial`` takes the result of ``twin``, which trained (or trains) its
        configuration (:meth:`twin`)."""
        trial.set_user_attr(TrialAttrs.CONFIG_HASH, config_hash)
        trial.set_user_attr(TrialAttrs.REUSED_FROM, twin.number)
        if twin.state.name == "RUNNING":
            trial.set_user_attr(TrialAttrs.SAME_AS, twin.number)
            self.adopt(trial, twin.number)
            self.emit(TrialReused(trial.number, twin.number, "RUNNING", waiting=True))
        else:
            self._copy(trial, twin, tell)

    def adopt(self, trial: optuna.Trial, leader: int) -> None:
        """This worker waits for ``leader`` on ``trial``'s behalf."""
        trial.set_user_attr(TrialAttrs.WORKER, self.worker)
        trial.set_user_attr(TrialAttrs.HEARTBEAT, self.wall())
        self.waiting[trial.number] = _Waiting(trial, leader, self.clock())

    def settle(self, tell: Tell) -> None:
        """Copy the results of twins that have finished; keep the others' heartbeats fresh."""
        if not self.waiting:
            return
        trials = {t.number: t for t in self.study.get_trials(deepcopy=False)}
        for number, w in list(self.waiting.items()):
            twin = trials.get(w.leader)
            if twin is None or twin.state.name != "RUNNING":
                del self.waiting[number]
                if twin is None:
                    tell(w.trial, "FAIL", None)
                else:
                    self._copy(w.trial, twin, tell)
            elif self.clock() - w.last_beat >= HEARTBEAT_EVERY_S:
                w.trial.set_user_attr(TrialAttrs.HEARTBEAT, self.wall())
                w.last_beat = self.clock()

    def _copy(self, trial: optuna.Trial, twin: optuna.trial.FrozenTrial, tell: Tell) -> None:
        copied = (
            TrialAttrs.DIAGNOSIS,
            TrialAttrs.RECOMMENDATION,
            TrialAttrs.BEST_EPOCH,
            TrialAttrs.OBJECTIVES,
        )
        for key in copied:
            if key in twin.user_attrs:
                trial.set_user_attr(key, twin.user_attrs[key])
        state = twin.state.name if twin.state.name in ("COMPLETE", "PRUNED") else "FAIL"
        if state == "COMPLETE":
            for key, violation in twin.constraints.items():
                trial.set_constraint(key, violation)
        values = list(twin.values or ())
        tell(
            trial,
            state,
            (values[0] if len(values) == 1 else values) if state == "COMPLETE" else None,
        )
        self.emit(TrialReused(trial.number, twin.number, state))

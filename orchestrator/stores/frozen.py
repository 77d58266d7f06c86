"""A study read whole into memory: the read-only storage over its rows, and the trials
built from them (what :mod:`.snapshot`'s and :mod:`.sqlite_reader`'s readers share).

:class:`SnapshotStorage` holds one study's rows as they were when read; every write raises.
:func:`trials_of` builds Optuna's :class:`~optuna.trial.FrozenTrial` objects from the rows of
the trial tables, as Optuna's RDB storage would.
"""

from __future__ import annotations

import datetime
import json
import time
from collections.abc import Callable, Container, Sequence
from typing import TYPE_CHECKING, Any

from optuna.storages import BaseStorage
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from orchestrator.stores import optuna_internals
from orchestrator.stores.optuna_internals import frozen_study

if TYPE_CHECKING:
    from optuna.distributions import BaseDistribution

__all__ = ["Head", "SnapshotStorage", "ToValue", "trials_of"]

#: a trial's head row: id, number, state, start and end (naive UTC, as stored)
Head = tuple[int, int, TrialState, "datetime.datetime | None", "datetime.datetime | None"]
#: a stored value and its kind's name (``FINITE``, ``INF_POS``...) -> the value
ToValue = Callable[[Any, str], float]


class SnapshotStorage(BaseStorage):
    """One study's rows as they were when read; every write raises."""

    def __init__(
        self,
        study_id: int,
        name: str,
        directions: list[StudyDirection],
        user_attrs: dict[str, Any],
        system_attrs: dict[str, Any],
        trials: list[FrozenTrial],
    ) -> None:
        self._id, self._name, self._directions = study_id, name, directions
        self._user_attrs, self._system_attrs = user_attrs, system_attrs
        self._trials = trials
        self._by_id = {optuna_internals.trial_id(t): t for t in trials}

    def _read_only(self, *_: Any, **__: Any) -> Any:
        raise RuntimeError(f"the study {self._name!r} was opened read-only")

    create_new_study = delete_study = set_study_user_attr = set_study_system_attr = _read_only
    create_new_trial = set_trial_param = set_trial_state_values = _read_only
    set_trial_intermediate_value = set_trial_user_attr = set_trial_system_attr = _read_only

    def _study(self, study_id: int) -> None:
        if study_id != self._id:
            raise KeyError(f"no study with id {study_id}")

    def get_study_id_from_name(self, study_name: str) -> int:
        if study_name != self._name:
            raise KeyError(f"no study named {study_name!r}")
        return self._id

    def get_study_name_from_id(self, study_id: int) -> str:
        self._study(study_id)
        return self._name

    def get_study_directions(self, study_id: int) -> list[StudyDirection]:
        self._study(study_id)
        return list(self._directions)

    def get_study_user_attrs(self, study_id: int) -> dict[str, Any]:
        self._study(study_id)
        return dict(self._user_attrs)

    def get_study_system_attrs(self, study_id: int) -> dict[str, Any]:
        self._study(study_id)
        return dict(self._system_attrs)

    def get_all_studies(self) -> list[Any]:
        """The one study, as Optuna's ``FrozenStudy`` (:func:`.optuna_internals.frozen_study`)."""
        return [
            frozen_study(
                self._name,
                dict(self._user_attrs),
                dict(self._system_attrs),
                self._id,
                self._directions,
            )
        ]

    def get_trial_id_from_study_id_trial_number(self, study_id: int, trial_number: int) -> int:
        self._study(study_id)
        for t in self._trials:
            if t.number == trial_number:
                return optuna_internals.trial_id(t)
        raise KeyError(f"no trial {trial_number}")

    def get_trial(self, trial_id: int) -> FrozenTrial:
        try:
            return self._by_id[trial_id]
        except KeyError:
            raise KeyError(f"no trial with id {trial_id}") from None

    def get_all_trials(
        self,
        study_id: int,
        deepcopy: bool = True,
        states: Container[TrialState] | None = None,
    ) -> list[FrozenTrial]:
        import copy

        self._study(study_id)
        found = self._trials if states is None else [t for t in self._trials if t.state in states]
        return copy.deepcopy(found) if deepcopy else list(found)


def trials_of(
    heads: Sequence[Head],
    rows: tuple[Sequence[Any], Sequence[Any], Sequence[Any], Sequence[Any], Sequence[Any]],
    to_value: ToValue,
    to_step: ToValue,
) -> list[FrozenTrial]:
    """The trials of ``heads`` as Optuna's :class:`FrozenTrial`, from the rows of their
    parameters, values, intermediate values, user and system attributes (as the tables hold
    them, in each table's order); ``to_value``/``to_step`` turn a stored value and its kind's
    name into the value."""
    params, values, steps, user, system = rows
    from optuna.distributions import json_to_distribution

    parts: dict[int, tuple[dict[Any, Any], ...]] = {h[0]: ({}, {}, {}, {}, {}, {}) for h in heads}
    known: dict[str, BaseDistribution] = {}  # a sweep's trials share a few distributions
    for trial_id, name, internal, blob in params:
        dist = known.get(blob)
        if dist is None:
            dist = known[blob] = json_to_distribution(blob)
        got, dists = parts[trial_id][0:2]
        got[name] = dist.to_external_repr(internal)
        dists[name] = dist
    for trial_id, objective, value, kind in values:
        parts[trial_id][2][objective] = to_value(value, _name(kind))
    for trial_id, step, value, kind in steps:
        parts[trial_id][3][step] = to_step(value, _name(kind))
    for where, attrs in ((4, user), (5, system)):
        # one parse for all of them: 170,000 attributes on a 10,000-trial study
        decoded = json.loads("[" + ",".join(a[2] for a in attrs) + "]")
        for (trial_id, key, _), value in zip(attrs, decoded, strict=True):
            parts[trial_id][where][key] = value

    trials = []
    for trial_id, number, state, start, complete in heads:
        got, dists, objectives, intermediate, user_attrs, system_attrs = parts[trial_id]
        trials.append(
            FrozenTrial(
                number=number,
                state=state,
                value=None,
                values=[objectives[k] for k in sorted(objectives)] if objectives else None,
                datetime_start=_local(start),
                datetime_complete=_local(complete),
                params=got,
                distributions=dists,
                user_attrs=user_attrs,
                system_attrs=system_attrs,
                intermediate_values=intermediate,
                trial_id=trial_id,
            )
        )
    return trials


def _name(kind: Any) -> str:
    """An enum column's value as read from the driver (its name), or the enum itself."""
    return kind if isinstance(kind, str) else str(kind.name)


def _local(utc: datetime.datetime | None) -> datetime.datetime | None:
    """A naive UTC time as Optuna's RDB storage stores it, as the naive local time its
    models return (a zone without daylight saving, as on most servers: by its one offset,
    a fifth of the time on 20,000 of them)."""
    if utc is None:
        return None
    if not time.daylight:
        return utc - datetime.timedelta(seconds=time.timezone)
    return utc.replace(tzinfo=datetime.UTC).astimezone().replace(tzinfo=None)

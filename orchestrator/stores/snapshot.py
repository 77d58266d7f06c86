"""A study read once, whole, into memory: what ``status``, ``report`` and ``best`` look at.

Optuna's RDB storage builds each trial through its ORM (an object per row, per parameter,
per attribute, per intermediate value); on a 10,000-trial study that is most of the 15 s a
``status`` took. :class:`StoreReader` reads the same tables with six plain queries (the
tables and columns Optuna's own models declare, so a schema this Optuna does not know fails
loudly instead of reading wrong) and builds the same :class:`~optuna.trial.FrozenTrial`
objects Optuna would. The result is an ordinary :class:`optuna.Study` over a read-only
storage: everything that reads a study (``best_trial``, ``get_trials``, the parameter
importances) works on it, and anything that would write raises.

A SQLite file of the schema version :mod:`.sqlite_reader` knows is read there: the same
queries in SQL through :mod:`sqlite3`, read-only, with neither SQLAlchemy nor Optuna's models
imported (a third of a second: most of what ``ftsweep run`` of a finished sweep took). Any
other store, or a SQLite file of another schema version, is read by :class:`StoreReader`
(which refuses a version it does not know).
"""

from __future__ import annotations

import datetime
import json
import time
from collections.abc import Callable, Container, Sequence
from typing import TYPE_CHECKING, Any

import optuna
from optuna.storages import BaseStorage
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from orchestrator.core.urls import sqlite_path
from orchestrator.stores import optuna_internals
from orchestrator.stores.optuna_internals import frozen_study, rdb_schema

if TYPE_CHECKING:
    from optuna.distributions import BaseDistribution

__all__ = ["Head", "SnapshotStorage", "StoreReader", "ToValue", "read_study", "reader", "trials_of"]

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


class StoreReader:
    """Plain queries on an Optuna RDB store (no ORM, no schema migration machinery): the
    part of :class:`optuna.storages.RDBStorage` that ``status``, ``report`` and the lineage
    read, much faster on large studies. Nothing is written. Needs this Optuna's tables as
    :func:`~.optuna_internals.rdb_schema` knows them (:func:`reader` falls back to Optuna's
    ``RDBStorage`` without)."""

    def __init__(self, url: str) -> None:
        import sqlalchemy as sa

        m = rdb_schema()
        if m is None:
            raise RuntimeError("this Optuna's RDB tables are not known to the plain reader")
        kwargs: dict[str, Any] = {} if url.startswith("sqlite") else {"pool_pre_ping": True}
        self.engine = sa.create_engine(url, **kwargs)
        self._m = m
        with self.engine.connect() as conn:
            info = m.VersionInfoModel.__table__.c
            schema = conn.execute(sa.select(info.schema_version)).scalar()
        if schema is not None and schema != m.SCHEMA_VERSION:
            raise RuntimeError(
                f"its schema is version {schema}, this Optuna reads {m.SCHEMA_VERSION} "
                "(`optuna storage upgrade --storage URL` upgrades an older store)"
            )

    def get_all_studies(self) -> list[Any]:
        """Every study, with its attributes and directions (as RDBStorage's)."""
        import sqlalchemy as sa

        m = self._m
        s, d = m.StudyModel.__table__.c, m.StudyDirectionModel.__table__.c
        with self.engine.connect() as conn:
            names = conn.execute(sa.select(s.study_id, s.study_name).order_by(s.study_id)).all()
            directions: dict[int, list[StudyDirection]] = {}
            query = sa.select(d.study_id, d.direction).order_by(d.study_id, d.objective)
            for row in conn.execute(query):
                directions.setdefault(row.study_id, []).append(row.direction)
            user = self._study_attrs(conn, m.StudyUserAttributeModel.__table__, None)
            system = self._study_attrs(conn, m.StudySystemAttributeModel.__table__, None)
        return [
            frozen_study(
                row.study_name,
                user.get(row.study_id, {}),
                system.get(row.study_id, {}),
                row.study_id,
                directions.get(row.study_id, [StudyDirection.MINIMIZE]),
            )
            for row in names
        ]

    @staticmethod
    def _study_attrs(conn: Any, table: Any, study_id: int | None) -> dict[int, dict[str, Any]]:
        import sqlalchemy as sa

        c = table.c
        query = sa.select(c.study_id, c.key, c.value_json)
        if study_id is not None:
            query = query.where(c.study_id == study_id)
        found: dict[int, dict[str, Any]] = {}
        for row in conn.execute(query):
            found.setdefault(row.study_id, {})[row.key] = json.loads(row.value_json)
        return found

    def study(self, name: str) -> optuna.Study:
        """The study ``name``, read whole in one transaction, as a read-only
        :class:`optuna.Study`. Raises ``KeyError`` when there is no such study (as Optuna's
        ``load_study`` does)."""
        import sqlalchemy as sa

        m = self._m
        s, d = m.StudyModel.__table__.c, m.StudyDirectionModel.__table__.c
        with self.engine.connect() as conn:
            sid = conn.execute(sa.select(s.study_id).where(s.study_name == name)).scalar()
            if sid is None:
                raise KeyError(f"no study named {name!r}")
            query = sa.select(d.direction).where(d.study_id == sid).order_by(d.objective)
            directions = list(conn.execute(query).scalars())
            user = self._study_attrs(conn, m.StudyUserAttributeModel.__table__, sid)
            system = self._study_attrs(conn, m.StudySystemAttributeModel.__table__, sid)
            trials = self._trials(conn, sid)
        snapshot = SnapshotStorage(
            sid, name, directions, user.get(sid, {}), system.get(sid, {}), trials
        )
        return optuna.Study(name, snapshot, sampler=optuna.samplers.RandomSampler())

    def get_all_trials(self, study_id: int, deepcopy: bool = False) -> list[FrozenTrial]:
        """The trials of the study with id ``study_id``, in trial order."""
        with self.engine.connect() as conn:
            return self._trials(conn, study_id)

    def _trials(self, conn: Any, sid: int) -> list[FrozenTrial]:
        import sqlalchemy as sa

        m = self._m
        tr = m.TrialModel.__table__.c
        ids = sa.select(tr.trial_id).where(tr.study_id == sid).scalar_subquery()

        def rows(model: Any, *columns: str, order: str) -> Sequence[Any]:
            """Plain tuples from the driver's cursor (SQLAlchemy's result rows cost as much
            again on 170,000 attributes); enum columns then come as their names."""
            c = model.__table__.c
            query = sa.select(*(c[n] for n in columns)).where(c.trial_id.in_(ids))
            sql = query.order_by(c[order]).compile(
                dialect=conn.dialect, compile_kwargs={"literal_binds": True}
            )
            cursor = conn.connection.cursor()
            try:
                cursor.execute(str(sql))
                found: Sequence[Any] = cursor.fetchall()
            finally:
                cursor.close()
            return found

        heads = conn.execute(
            sa.select(tr.trial_id, tr.number, tr.state, tr.datetime_start, tr.datetime_complete)
            .where(tr.study_id == sid)
            .order_by(tr.trial_id)
        ).all()
        params = rows(
            m.TrialParamModel,
            "trial_id",
            "param_name",
            "param_value",
            "distribution_json",
            order="param_id",
        )
        values = rows(
            m.TrialValueModel, "trial_id", "objective", "value", "value_type", order="objective"
        )
        steps = rows(
            m.TrialIntermediateValueModel,
            "trial_id",
            "step",
            "intermediate_value",
            "intermediate_value_type",
            order="step",
        )
        user = rows(
            m.TrialUserAttributeModel,
            "trial_id",
            "key",
            "value_json",
            order="trial_user_attribute_id",
        )
        system = rows(
            m.TrialSystemAttributeModel,
            "trial_id",
            "key",
            "value_json",
            order="trial_system_attribute_id",
        )
        value_kinds = m.TrialValueModel.TrialValueType
        step_kinds = m.TrialIntermediateValueModel.TrialIntermediateValueType
        to_value = m.TrialValueModel.stored_repr_to_value
        to_step = m.TrialIntermediateValueModel.stored_repr_to_intermediate_value
        return trials_of(
            [tuple(h) for h in heads],
            (params, values, steps, user, system),
            lambda value, kind: to_value(value, value_kinds[kind]),
            lambda value, kind: to_step(value, step_kinds[kind]),
        )


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


def reader(url: str) -> Any:
    """A reader of the RDB store at ``url`` (``get_all_studies``, ``get_all_trials``):
    :class:`StoreReader`'s plain queries, or, where this Optuna's tables are not known to
    them (:func:`~.optuna_internals.rdb_schema`), Optuna's own ``RDBStorage`` (its ORM,
    slower; it creates no table). A SQLite file of the schema :class:`SqliteReader` knows is
    read by it (:class:`~.sqlite_reader.SqliteReader`)."""
    from orchestrator.stores.sqlite_reader import SqliteReader

    path = sqlite_path(url)
    if path is not None:
        found = SqliteReader.open(path)
        if found is not None:
            return found
    if rdb_schema() is None:
        return optuna.storages.RDBStorage(url, skip_table_creation=True)
    return StoreReader(url)


def read_study(url: str, name: str) -> optuna.Study:
    """The study ``name`` of the RDB store at ``url``, read whole: read-only through
    :class:`StoreReader`, or loaded through Optuna's ``RDBStorage`` where :func:`reader`
    falls back to it. Raises ``KeyError`` when there is no such study."""
    from orchestrator.stores.sqlite_reader import SqliteReader

    found = reader(url)
    if isinstance(found, StoreReader | SqliteReader):
        return found.study(name)
    return optuna.load_study(
        study_name=name, storage=found, sampler=optuna.samplers.RandomSampler()
    )


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

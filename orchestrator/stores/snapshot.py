"""A study read once, whole, into memory: what ``status``, ``report`` and ``best`` look at.

Optuna's RDB storage builds each trial through its ORM (an object per row, per parameter,
per attribute, per intermediate value); on a 10,000-trial study that is most of the 15 s a
``status`` took. :class:`StoreReader` reads the same tables with six plain queries (the
tables and columns Optuna's own models declare, so a schema this Optuna does not know fails
loudly instead of reading wrong) and builds the same :class:`~optuna.trial.FrozenTrial`
objects Optuna would (:mod:`.frozen`). The result is an ordinary :class:`optuna.Study` over
a read-only storage (:class:`~.frozen.SnapshotStorage`): everything that reads a study
(``best_trial``, ``get_trials``, the parameter importances) works on it, and anything that
would write raises.

A SQLite file of the schema version :mod:`.sqlite_reader` knows is read there: the same
queries in SQL through :mod:`sqlite3`, read-only, with neither SQLAlchemy nor Optuna's models
imported (a third of a second: most of what ``ftsweep run`` of a finished sweep took). Any
other store, or a SQLite file of another schema version, is read by :class:`StoreReader`
(which refuses a version it does not know).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import optuna
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial

from orchestrator.core.urls import sqlite_path
from orchestrator.stores.frozen import SnapshotStorage, trials_of
from orchestrator.stores.optuna_internals import frozen_study, rdb_schema
from orchestrator.stores.sqlite_reader import SqliteReader, url_timeout

__all__ = ["SnapshotStorage", "StoreReader", "read_study", "reader"]


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


def reader(url: str) -> Any:
    """A reader of the RDB store at ``url`` (``get_all_studies``, ``get_all_trials``):
    :class:`StoreReader`'s plain queries, or, where this Optuna's tables are not known to
    them (:func:`~.optuna_internals.rdb_schema`), Optuna's own ``RDBStorage`` (its ORM,
    slower; it creates no table). A SQLite file of the schema :class:`SqliteReader` knows is
    read by it (:class:`~.sqlite_reader.SqliteReader`)."""
    path = sqlite_path(url)
    if path is not None:
        found = SqliteReader.open(path, url_timeout(url))
        if found is not None:
            return found
    if rdb_schema() is None:
        return optuna.storages.RDBStorage(url, skip_table_creation=True)
    return StoreReader(url)


def read_study(url: str, name: str) -> optuna.Study:
    """The study ``name`` of the RDB store at ``url``, read whole: read-only through
    :class:`StoreReader`, or loaded through Optuna's ``RDBStorage`` where :func:`reader`
    falls back to it. Raises ``KeyError`` when there is no such study."""
    found = reader(url)
    if isinstance(found, StoreReader | SqliteReader):
        return found.study(name)
    return optuna.load_study(
        study_name=name, storage=found, sampler=optuna.samplers.RandomSampler()
    )

"""Every use of Optuna's private API, in one place, each with its public fallback.

ftsweep leans on a few Optuna internals in hot paths: a trial's ledger write, the pruner's view
of a reported value, telling the study, reading a large study. Each is wrapped here in a small
function that takes the fast private path when this Optuna has the internal in the shape relied
on, and otherwise the public (slower) call. Nothing else in the package touches an Optuna
private name: ``tests/test_optuna_internals.py`` scans the package's source for one, and pins
every internal below to the installed Optuna (so a new Optuna that moves or reshapes one fails
a test instead of quietly taking the slow path). ``pyproject.toml`` bounds Optuna to the major
those tests ran on.

Each internal, the function that wraps it, and its public fallback:

- ``Trial._trial_id`` (:func:`trial_id`): the storage's id of the trial's number in its
  study (two reads). ``FrozenTrial._trial_id``: none, Optuna has no public id of a frozen
  trial (raises, naming it).
- ``FrozenStudy._study_id`` (:func:`study_id`): ``storage.get_study_id_from_name`` (one read).
- ``_CachedStorage._backend`` (:func:`rdb_storage`): the storage as given; the ledger then
  writes row by row.
- ``Trial._cached_frozen_trial`` (:func:`report_for_pruner`, :func:`remember`):
  ``Trial.report`` (a commit each); nothing to keep current.
- ``optuna.study._tell._tell_with_warning`` (:func:`tell`): ``Study.tell`` (which reads the
  trial back).
- ``optuna.storages._rdb.storage._create_scoped_session``, ``RDBStorage.
  _set_trial_attr_without_commit`` and ``._set_trial_intermediate_value_without_commit``,
  ``optuna.storages._rdb.models`` (:func:`write_in_one_transaction`): False, the caller
  writes through the public per-row calls (a commit each).
- ``Study._storage`` and ``RDBStorage._set_trial_param_without_commit`` (:func:`ask`, and
  the ``params`` of :func:`write_in_one_transaction`): ``Study.ask``, which writes each
  parameter in a transaction of its own.
- ``optuna.storages._rdb.models`` and ``optuna.study._frozen.FrozenStudy``
  (:func:`rdb_schema`, :func:`frozen_study`): None, the study is read through Optuna's
  ``RDBStorage`` (its ORM).
"""

from __future__ import annotations

import functools
import json
import sqlite3
import weakref
from collections.abc import Callable, Mapping, Sequence
from types import ModuleType
from typing import TYPE_CHECKING, Any, cast

from orchestrator.core.errors import OrchestratorError

if TYPE_CHECKING:
    import optuna
    from optuna.distributions import BaseDistribution
    from optuna.storages import BaseStorage
    from optuna.study import StudyDirection
    from optuna.trial import FrozenTrial, TrialState

__all__ = [
    "RDB_MODELS_USED",
    "Params",
    "ask",
    "frozen_study",
    "rdb_schema",
    "rdb_storage",
    "remember",
    "report_for_pruner",
    "study_id",
    "tell",
    "trial_id",
    "write_in_one_transaction",
]

#: what the plain-query reader (:mod:`.snapshot`) and the ledger's one-transaction write read
#: of ``optuna.storages._rdb.models``: each model with the columns used, and the helpers
RDB_MODELS_USED: Mapping[str, tuple[str, ...]] = {
    "VersionInfoModel": ("schema_version",),
    "StudyModel": ("study_id", "study_name"),
    "StudyDirectionModel": ("study_id", "direction", "objective"),
    "StudyUserAttributeModel": ("study_id", "key", "value_json"),
    "StudySystemAttributeModel": ("study_id", "key", "value_json"),
    "TrialModel": (
        "trial_id",
        "number",
        "study_id",
        "state",
        "datetime_start",
        "datetime_complete",
    ),
    "TrialParamModel": ("param_id", "trial_id", "param_name", "param_value", "distribution_json"),
    "TrialValueModel": ("trial_id", "objective", "value", "value_type"),
    "TrialIntermediateValueModel": (
        "trial_id",
        "step",
        "intermediate_value",
        "intermediate_value_type",
    ),
    "TrialUserAttributeModel": ("trial_user_attribute_id", "trial_id", "key", "value_json"),
    "TrialSystemAttributeModel": ("trial_system_attribute_id", "trial_id", "key", "value_json"),
}
_RDB_HELPERS = (
    ("TrialValueModel", "stored_repr_to_value"),
    ("TrialValueModel", "TrialValueType"),
    ("TrialIntermediateValueModel", "stored_repr_to_intermediate_value"),
    ("TrialIntermediateValueModel", "intermediate_value_to_stored_repr"),
    ("TrialIntermediateValueModel", "TrialIntermediateValueType"),
    ("TrialModel", "find_or_raise_by_id"),
)


def _changed(what: str) -> OrchestratorError:
    import optuna

    return OrchestratorError(
        f"this Optuna ({optuna.__version__}) has no {what}, which ftsweep needs: "
        "install the Optuna its pyproject.toml names"
    )


# -- ids -----------------------------------------------------------------------------------
def trial_id(trial: optuna.Trial | FrozenTrial) -> int:
    """The storage's id of ``trial`` (what the storage's trial calls take; not its number).

    Fast: the id the trial carries (``_trial_id``). Fallback for an :class:`optuna.Trial`:
    the storage's id for the trial's number in its study (public, two reads); a frozen trial
    has no public way to its id, so that raises (naming the missing internal)."""
    found = getattr(trial, "_trial_id", None)
    if isinstance(found, int):
        return found
    import optuna

    if isinstance(trial, optuna.Trial):
        storage = trial.storage
        sid = storage.get_study_id_from_name(trial.study.study_name)
        return int(storage.get_trial_id_from_study_id_trial_number(sid, trial.number))
    raise _changed("FrozenTrial._trial_id")


def study_id(study: Any, storage: BaseStorage) -> int:
    """The id in ``storage`` of ``study`` (a :class:`~optuna.Study` or a frozen study of
    ``storage.get_all_studies()``).

    Fast: the id it carries (``_study_id``). Fallback: ``storage.get_study_id_from_name``
    (public, one read)."""
    found = getattr(study, "_study_id", None)
    if isinstance(found, int):
        return found
    return int(storage.get_study_id_from_name(study.study_name))


# -- a trial's cached view -------------------------------------------------------------------
def _cache(trial: optuna.Trial) -> FrozenTrial | None:
    """The frozen trial an :class:`optuna.Trial` keeps and reads itself through (its
    ``user_attrs``, what ``should_prune`` hands the pruner), or None in an Optuna without it."""
    from optuna.trial import FrozenTrial

    cached = getattr(trial, "_cached_frozen_trial", None)
    return cached if isinstance(cached, FrozenTrial) else None


def report_for_pruner(trial: optuna.Trial, step: int, value: float) -> bool:
    """Make the objective ``value`` at ``step`` what the trial's pruner sees from now on;
    False when the trial has a value at that step already.

    Fast: into the trial's cached view (``_cached_frozen_trial``), which ``should_prune``
    reads; True: the value is the caller's to write (with the trial's next ledger write).
    Fallback: Optuna's ``Trial.report``, which writes it at once (a commit each); False:
    there is nothing left to write."""
    cached = _cache(trial)
    if cached is None:
        trial.report(value, step)
        return False
    if step in cached.intermediate_values:
        return False
    cached.intermediate_values[step] = float(value)
    return True


def remember(trial: optuna.Trial, attrs: Mapping[str, Any], steps: Mapping[int, float]) -> None:
    """Keep the trial's own view current after a write that went around it (what
    ``set_user_attr`` and ``report`` do to it after their writes).

    Fast: into its cached view (``_cached_frozen_trial``). Fallback: nothing; an Optuna
    without that cache reads the storage."""
    cached = _cache(trial)
    if cached is not None:
        cached.user_attrs.update(attrs)
        cached.intermediate_values.update(steps)


# -- telling --------------------------------------------------------------------------------
@functools.cache
def _tell_with_warning() -> Callable[..., Any] | None:
    try:
        from optuna.study._tell import _tell_with_warning as found
    except ImportError:
        return None
    return cast("Callable[..., Any]", found)


def tell(
    study: optuna.Study,
    trial: optuna.Trial,
    value: float | Sequence[float] | None = None,
    state: TrialState | None = None,
) -> None:
    """``study.tell(trial, value, state=state)``, without reading back the trial it returns.

    Fast: Optuna's ``_tell_with_warning`` (what ``Study.tell`` calls before it reads the
    trial back). Fallback: ``Study.tell``. Either raises as ``Study.tell`` does
    (``RuntimeError``/``ValueError`` for a trial finished already)."""
    fast = _tell_with_warning()
    if fast is None:
        study.tell(trial, value, state=state)
    else:
        fast(study, trial, value, state)


# -- the RDB storage's tables ---------------------------------------------------------------
def rdb_storage(storage: Any) -> Any:
    """The storage under Optuna's cache of an RDB storage (``_CachedStorage`` wraps every
    ``RDBStorage`` a study opens), else ``storage`` itself.

    Fast: the wrapped storage (``_backend``). Fallback: ``storage`` as given; it is then no
    ``RDBStorage``, and :func:`write_in_one_transaction` leaves it to the public writes."""
    return getattr(storage, "_backend", storage)


@functools.cache
def _rdb_models() -> ModuleType | None:
    try:
        from optuna.storages._rdb import models
    except ImportError:
        return None
    for name, columns in RDB_MODELS_USED.items():
        model = getattr(models, name, None)
        table = getattr(model, "__table__", None)
        if table is None or any(c not in table.c for c in columns):
            return None
    if any(not hasattr(getattr(models, m), h) for m, h in _RDB_HELPERS):
        return None
    if not isinstance(getattr(models, "SCHEMA_VERSION", None), int):
        return None
    return models


@functools.cache
def _frozen_study_class() -> type[Any] | None:
    try:
        from optuna.study._frozen import FrozenStudy
    except ImportError:
        return None
    return FrozenStudy


def rdb_schema() -> ModuleType | None:
    """Optuna's RDB models (``optuna.storages._rdb.models``: the tables, their columns
    (:data:`RDB_MODELS_USED`), the stored form of values, ``SCHEMA_VERSION``), for reading the
    tables with plain queries (:mod:`.snapshot`); None when this Optuna has them in another
    shape, or no frozen study to build: the caller then reads through Optuna's own
    ``RDBStorage`` (its ORM; the public, slower way)."""
    if _frozen_study_class() is None:
        return None
    return _rdb_models()


def frozen_study(
    name: str,
    user_attrs: dict[str, Any],
    system_attrs: dict[str, Any],
    study_id: int,
    directions: Sequence[StudyDirection],
) -> Any:
    """A study's summary as storages return it from ``get_all_studies`` (Optuna's
    ``FrozenStudy``, a private class). Only called where :func:`rdb_schema` gave the models,
    which it does only when this class is there (else: raises naming it)."""
    found = _frozen_study_class()
    if found is None:
        raise _changed("optuna.study._frozen.FrozenStudy")
    return found(
        name,
        None,
        user_attrs=user_attrs,
        system_attrs=system_attrs,
        study_id=study_id,
        directions=list(directions),
    )


@functools.cache
def _session_writes() -> tuple[Callable[..., Any], Callable[..., Any], Callable[..., Any]] | None:
    """Optuna's session context and its two writes without a commit, when present."""
    from optuna.storages import RDBStorage

    try:
        from optuna.storages._rdb.storage import _create_scoped_session
    except ImportError:
        return None
    set_attr = getattr(RDBStorage, "_set_trial_attr_without_commit", None)
    set_value = getattr(RDBStorage, "_set_trial_intermediate_value_without_commit", None)
    if set_attr is None or set_value is None:
        return None
    return _create_scoped_session, set_attr, set_value


@functools.cache
def _param_write() -> Callable[..., Any] | None:
    """Optuna's write of one parameter without a commit, when present."""
    from optuna.storages import RDBStorage

    return getattr(RDBStorage, "_set_trial_param_without_commit", None)


#: parameters :func:`ask` sampled and left to write: name to (internal value, distribution)
Params = dict[str, tuple[float, "BaseDistribution"]]


def ask(
    study: optuna.Study, distributions: Mapping[str, BaseDistribution]
) -> tuple[optuna.Trial, Params]:
    """``study.ask(distributions)``, the sampled parameters left for the trial's first
    ledger write (:func:`write_in_one_transaction`): one transaction for the trial's claim,
    its intent and its parameters, where Optuna's ``ask`` commits each parameter on its own.
    The trial's own view (``trial.params``, what the sampler and pruner read) has them at
    once; a reader of the storage sees the trial without them until that write, as it sees
    any trial between Optuna's ``create_new_trial`` and its first ``set_trial_param``.

    Fast: while Optuna asks, the study's storage (``Study._storage``) keeps each
    ``set_trial_param`` instead of writing it (an attribute of the instance over the
    method, removed after), when the storage is an RDB one that :func:`write_in_one_transaction`
    writes parameters to (``RDBStorage._set_trial_param_without_commit``). Fallback:
    ``study.ask``, the parameters written by it, and ``{}`` returned."""
    storage = getattr(study, "_storage", None)
    from optuna.storages import RDBStorage

    if (
        storage is None
        or not isinstance(rdb_storage(storage), RDBStorage)
        or _param_write() is None
        or _session_writes() is None
        or _rdb_models() is None
        or "set_trial_param" in vars(storage)  # already kept (a nested ask): not twice
    ):
        return study.ask(dict(distributions)), {}
    kept: Params = {}

    def keep(trial: int, name: str, internal: float, distribution: BaseDistribution) -> None:
        kept[name] = (internal, distribution)

    storage.set_trial_param = keep
    try:
        asked = study.ask(dict(distributions))
    finally:
        del storage.set_trial_param
    return asked, kept


def write_in_one_transaction(
    storage: Any,
    trial: int,
    values: Mapping[str, Any],
    steps: Mapping[int, float],
    params: Mapping[str, tuple[float, BaseDistribution]] | None = None,
) -> bool:
    """User attributes ``values``, intermediate values ``steps`` and parameters ``params``
    (as :func:`ask` left them: name to internal value and distribution) of the trial with id
    ``trial`` written in one transaction of an RDB ``storage`` (see :func:`rdb_storage`):
    exactly the rows ``set_trial_user_attr``, ``set_trial_intermediate_value`` and
    ``set_trial_param`` write, the first two in one upsert each on SQLite and PostgreSQL (as
    Optuna upserts each there), the parameters (and the rest elsewhere) through Optuna's own
    per-row writes without a commit, which check each distribution against the study's.

    Fast: Optuna's session (``_create_scoped_session``), its writes without a commit and its
    models. Fallback: False, nothing written: the caller writes through the public calls
    (a commit each), as it does for any storage that is not an ``RDBStorage``, and when
    another process wrote one of the rows meanwhile (the transaction is rolled back)."""
    from optuna.storages import RDBStorage

    models, session_writes = _rdb_models(), _session_writes()
    if not isinstance(storage, RDBStorage) or models is None or session_writes is None:
        return False
    scoped, set_attr, set_value = session_writes
    set_param = _param_write()
    if params and set_param is None:
        return False
    from sqlalchemy.exc import IntegrityError

    upsert = _upsert(storage.engine.name)
    try:
        with scoped(storage.scoped_session) as session:
            if upsert is not None:  # the attributes in one statement, the values in another
                row = models.TrialModel.find_or_raise_by_id(trial, session)
                storage.check_trial_is_updatable(trial, cast(Any, row.state))
                if values:
                    session.execute(upsert(*_attribute_rows(models, trial, values)))
                if steps:
                    session.execute(upsert(*_value_rows(models, trial, steps)))
                if params:  # one insert, each distribution checked as set_trial_param does
                    _check_distributions(storage, session, models, row.study_id, params)
                    session.execute(
                        models.TrialParamModel.__table__.insert().values(_param_rows(trial, params))
                    )
            else:
                for key, value in values.items():
                    set_attr(storage, session, models.TrialUserAttributeModel, trial, key, value)
                for step, value in steps.items():
                    set_value(storage, session, trial, step, value)
                for name, (internal, distribution) in (params or {}).items():
                    cast(Callable[..., Any], set_param)(
                        storage, session, trial, name, internal, distribution
                    )
    except IntegrityError:  # rolled back: written one by one (as Optuna does, which
        return False  # ignores that race)
    return True


def _attribute_rows(
    models: ModuleType, trial: int, values: Mapping[str, Any]
) -> tuple[Any, list[Any], str]:
    """User-attribute rows as ``set_trial_user_attr`` writes them, keyed by (trial, key)."""
    rows = [{"trial_id": trial, "key": k, "value_json": json.dumps(v)} for k, v in values.items()]
    return models.TrialUserAttributeModel, rows, "key"


def _value_rows(
    models: ModuleType, trial: int, steps: Mapping[int, float]
) -> tuple[Any, list[Any], str]:
    """Intermediate-value rows as ``set_trial_intermediate_value`` writes them (its stored
    representation of inf and NaN), keyed by (trial, step)."""
    table = models.TrialIntermediateValueModel
    rows = []
    for step, value in steps.items():
        stored, kind = table.intermediate_value_to_stored_repr(value)
        rows.append(
            {
                "trial_id": trial,
                "step": step,
                "intermediate_value": stored,
                "intermediate_value_type": kind,
            }
        )
    return table, rows, "step"


#: the distribution of each parameter checked in a study, by storage (what Optuna's cached
#: storage keeps for its ``set_trial_param``): the check reads the study once per name
_CHECKED: weakref.WeakKeyDictionary[Any, dict[tuple[int, str], BaseDistribution]] = (
    weakref.WeakKeyDictionary()
)


def _check_distributions(
    storage: Any, session: Any, models: ModuleType, study: int, params: Mapping[str, Any]
) -> None:
    """Raise as ``set_trial_param`` does (``ValueError``) when a parameter's distribution is
    incompatible with the one the study has for that name: the first time per name, read
    from one of its rows (as Optuna reads it); after that, as remembered."""
    from optuna.distributions import check_distribution_compatibility, json_to_distribution

    checked = _CHECKED.setdefault(storage, {})
    table = models.TrialParamModel
    for name, (_, distribution) in params.items():
        known = checked.get((study, name))
        if known is None:
            first = (
                session.query(table.distribution_json)
                .join(models.TrialModel)
                .filter(models.TrialModel.study_id == study, table.param_name == name)
                .first()
            )
            known = json_to_distribution(first[0]) if first is not None else distribution
        check_distribution_compatibility(known, distribution)
        checked[(study, name)] = known


def _param_rows(trial: int, params: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Parameter rows as ``set_trial_param`` writes them (internal value, distribution JSON)."""
    from optuna.distributions import distribution_to_json

    return [
        {
            "trial_id": trial,
            "param_name": name,
            "param_value": internal,
            "distribution_json": distribution_to_json(distribution),
        }
        for name, (internal, distribution) in params.items()
    ]


def _upsert(dialect: str) -> Callable[[Any, list[Any], str], Any] | None:
    """``upsert(table, rows, key)``: one statement inserting ``rows`` of one trial, or
    updating the row of the same (trial, ``key``), on the databases where Optuna itself
    upserts (SQLite 3.24+, PostgreSQL); None elsewhere."""
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    elif dialect == "sqlite" and sqlite3.sqlite_version_info >= (3, 24, 0):
        from sqlalchemy.dialects.sqlite import insert  # type: ignore[assignment]
    else:
        return None

    def statement(table: Any, rows: list[Any], key: str) -> Any:
        stmt = insert(table).values(rows)
        keys = {"trial_id", key}
        return stmt.on_conflict_do_update(
            index_elements=[table.trial_id, getattr(table, key)],
            set_={c: getattr(stmt.excluded, c) for c in rows[0] if c not in keys},
        )

    return statement

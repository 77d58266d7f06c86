"""Optuna's private API is used in one module only (orchestrator/stores/optuna_internals.py), and
each internal it relies on is pinned to the installed Optuna: these tests fail when a new Optuna
moves one or changes its shape, and when the fast path is not the one taken (real SQLite
stores; statements counted with SQLAlchemy's own events)."""

from __future__ import annotations

import ast
import inspect
import re
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import optuna
import pytest
from optuna.storages import RDBStorage

from orchestrator.stores.ledger import write
from orchestrator.stores.optuna_internals import (
    RDB_MODELS_USED,
    ask,
    frozen_study,
    rdb_schema,
    rdb_storage,
    remember,
    report_for_pruner,
    study_id,
    tell,
    trial_id,
    write_in_one_transaction,
)
from orchestrator.stores.snapshot import StoreReader, read_study, reader

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "orchestrator"
HOME = PACKAGE / "stores" / "optuna_internals.py"


@pytest.fixture
def url(tmp_path: Path) -> str:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return f"sqlite:///{tmp_path / 'o.db'}"


@pytest.fixture
def study(url: str) -> optuna.Study:
    return optuna.create_study(study_name="s", storage=url)


@contextmanager
def statements(storage: Any) -> Iterator[list[str]]:
    """The SQL statements ``storage``'s engine runs meanwhile."""
    import sqlalchemy

    engine = rdb_storage(storage).engine
    seen: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append(statement)

    sqlalchemy.event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        sqlalchemy.event.remove(engine, "before_cursor_execute", record)


# -- no module but the home touches an Optuna private name -----------------------------------


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _optuna_private_members() -> frozenset[str]:
    """The private attributes and methods Optuna's own classes define (``self._x = ...``,
    ``def _x``), read from the installed package's source."""
    names = set()
    for path in Path(optuna.__file__).parent.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.ClassDef):
                continue
            for item in ast.walk(node):
                if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef):
                    names.add(item.name)
                elif (
                    isinstance(item, ast.Attribute)
                    and isinstance(item.ctx, ast.Store)
                    and isinstance(item.value, ast.Name)
                    and item.value.id in ("self", "cls")
                ):
                    names.add(item.attr)
    return frozenset(n for n in names if _private(n))


OPTUNA_PRIVATE = _optuna_private_members()


def _root(node: ast.AST) -> str | None:
    while isinstance(node, ast.Attribute | ast.Subscript | ast.Call):
        node = node.func if isinstance(node, ast.Call) else node.value
    return node.id if isinstance(node, ast.Name) else None


def optuna_privates(source: str) -> list[str]:
    """Where ``source`` touches Optuna's private API, as ``line: text``: an import from a
    private Optuna module or of a private name; a private attribute of a name imported from
    Optuna (``optuna.storages._rdb``); a private attribute Optuna's classes define, read on
    anything but ``self``/``cls`` (``trial._trial_id``, ``getattr(s, "_backend")``) or on
    ``self`` in a subclass of an Optuna class that does not define it itself."""
    tree = ast.parse(source)
    bound: set[str] = set()  # names bound to Optuna
    found: list[tuple[int, str]] = []

    def hit(node: ast.stmt | ast.expr) -> None:
        found.append((node.lineno, f"{node.lineno}: {ast.unparse(node)}"))

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] == "optuna":
                    bound.add(a.asname or "optuna")
                    if any(_private(p) for p in a.name.split(".")):
                        hit(node)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "optuna":
            bound.update(a.asname or a.name for a in node.names)
            parts = (node.module or "").split(".")
            if any(_private(p) for p in parts) or any(_private(a.name) for a in node.names):
                hit(node)
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            bases = {_root(b) for b in node.bases}
            if not bases & bound:
                continue
            own = {i.name for i in node.body if isinstance(i, ast.FunctionDef)}
            own |= {
                t.attr
                for i in ast.walk(node)
                if isinstance(i, ast.Assign | ast.AnnAssign | ast.AugAssign)
                for target in (i.targets if isinstance(i, ast.Assign) else [i.target])
                for t in (target.elts if isinstance(target, ast.Tuple) else [target])
                if isinstance(t, ast.Attribute)
            }
            own |= {
                t.id
                for i in node.body
                if isinstance(i, ast.Assign)
                for t in i.targets
                if isinstance(t, ast.Name)
            }
            for i in ast.walk(node):
                if (
                    isinstance(i, ast.Attribute)
                    and _root(i) == "self"
                    and i.attr in OPTUNA_PRIVATE
                    and i.attr not in own
                ):
                    hit(i)
        elif isinstance(node, ast.Attribute) and _private(node.attr):
            root = _root(node)
            if root in bound or (root not in ("self", "cls") and node.attr in OPTUNA_PRIVATE):
                hit(node)
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ("getattr", "hasattr", "setattr")
            and len(node.args) >= 2
            and isinstance(node.args[1], ast.Constant)
            and node.args[1].value in OPTUNA_PRIVATE
        ):
            hit(node)
    return [text for _, text in sorted(set(found))]


def test_the_scan_finds_each_kind_of_use() -> None:
    source = """
import optuna
import optuna.storages._rdb.models as m
from optuna.study._tell import _tell_with_warning
from optuna.storages import _CachedStorage
from optuna.samplers import BaseSampler
x = optuna.storages._rdb
y = trial._trial_id
z = getattr(storage, "_backend", storage)
class S(BaseSampler):
    def f(self, t):
        self._mine = 1
        return self._rng, self._mine
w = parts._replace(a=1)
v = self._storage
"""
    lines = [int(t.split(":")[0]) for t in optuna_privates(source)]
    assert lines == [3, 4, 5, 7, 8, 9, 13]


@pytest.mark.parametrize(
    "path",
    sorted(str(p.relative_to(ROOT)) for p in PACKAGE.rglob("*.py") if p != HOME),
)
def test_no_module_but_the_home_touches_an_optuna_private_name(path: str) -> None:
    found = optuna_privates((ROOT / path).read_text(encoding="utf-8"))
    assert not found, (
        f"{path} uses Optuna's private API; wrap it in {HOME.relative_to(ROOT)}:\n"
        + "\n".join(found)
    )


def test_the_home_is_where_the_private_names_are() -> None:
    assert optuna_privates(HOME.read_text(encoding="utf-8"))  # the scan sees them there


# -- the bound in pyproject.toml is the Optuna these tests ran on ------------------------------


def test_pyproject_bounds_optuna_to_the_tested_major_and_the_constraints_agree() -> None:
    from packaging.requirements import Requirement
    from packaging.version import Version

    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    (spec,) = [Requirement(r) for r in project["project"]["dependencies"] if r.startswith("optuna")]
    installed = Version(optuna.__version__)
    assert installed in spec.specifier
    assert Version(f"{installed.major + 1}.0") not in spec.specifier  # the next major is not
    pins = re.findall(r"^optuna==(\S+)$", (ROOT / "constraints.txt").read_text(), re.MULTILINE)
    assert pins == [optuna.__version__]
    assert Version(pins[0]) in spec.specifier


# -- each internal, pinned -------------------------------------------------------------------


def test_trial_ids_are_carried_by_trials_and_frozen_trials(study: optuna.Study) -> None:
    study.ask()
    trial = study.ask()
    frozen = study.trials[1]
    assert isinstance(trial._trial_id, int) and isinstance(frozen._trial_id, int)
    storage = trial.storage
    with statements(storage) as seen:
        fast = trial_id(trial), trial_id(frozen)
    assert seen == []  # the fast path reads nothing
    public = storage.get_trial_id_from_study_id_trial_number(storage.get_study_id_from_name("s"), 1)
    assert fast == (public, public)


def test_a_trial_without_its_id_is_found_by_number(study: optuna.Study) -> None:
    study.ask()
    trial = study.ask()
    expected = trial._trial_id
    del trial._trial_id  # an Optuna that keeps it elsewhere: the public lookup
    assert trial_id(trial) == expected
    with pytest.raises(Exception, match=r"FrozenTrial\._trial_id"):
        trial_id(SimpleNamespace())  # type: ignore[arg-type]


def test_frozen_studies_carry_their_id(study: optuna.Study, url: str) -> None:
    storage = RDBStorage(url)
    (summary,) = storage.get_all_studies()
    assert isinstance(summary._study_id, int)
    with statements(storage) as seen:
        assert study_id(summary, storage) == storage.get_study_id_from_name("s")
    assert len(seen) == 1  # the public call's; the fast path read nothing
    assert study_id(SimpleNamespace(study_name="s"), storage) == summary._study_id


def test_the_cache_of_an_rdb_study_wraps_the_rdb_storage(study: optuna.Study) -> None:
    from optuna.storages._cached_storage import _CachedStorage

    trial = study.ask()
    assert type(trial.storage) is _CachedStorage
    assert isinstance(rdb_storage(trial.storage), RDBStorage)
    assert rdb_storage(trial.storage) is trial.storage._backend
    journal = object()
    assert rdb_storage(journal) is journal


def test_a_reported_value_reaches_the_pruner_through_the_trials_cache(url: str) -> None:
    seen: list[dict[int, float]] = []

    class Seen(optuna.pruners.BasePruner):
        def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
            seen.append(dict(trial.intermediate_values))
            return False

    study = optuna.create_study(study_name="s", storage=url, pruner=Seen())
    trial = study.ask()
    assert isinstance(trial._cached_frozen_trial, optuna.trial.FrozenTrial)
    with statements(trial.storage) as written:
        assert report_for_pruner(trial, 1, 0.5) is True  # the caller's to write
        assert report_for_pruner(trial, 1, 0.7) is False  # known already
    assert written == []
    trial.should_prune()
    assert seen == [{1: 0.5}]
    assert study.trials[0].intermediate_values == {}  # not written: the ledger writes it


def test_remember_keeps_the_trials_own_view_current(study: optuna.Study) -> None:
    trial = study.ask()
    with statements(trial.storage) as written:
        remember(trial, {"a": 1}, {2: 0.25})
    assert written == []
    assert trial.user_attrs == {"a": 1}
    assert trial._cached_frozen_trial.intermediate_values == {2: 0.25}


def test_tell_is_studys_tell_without_reading_the_trial_back(study: optuna.Study) -> None:
    from optuna.study._tell import _tell_with_warning

    parameters = list(inspect.signature(_tell_with_warning).parameters)
    assert parameters[:4] == ["study", "trial", "value_or_values", "state"]
    ours, theirs, failed = study.ask(), study.ask(), study.ask()
    with statements(ours.storage) as fast:
        tell(study, ours, 0.5)
    with statements(theirs.storage) as public:
        study.tell(theirs, 0.5)
    assert len(fast) < len(public)
    tell(study, failed, state=optuna.trial.TrialState.FAIL)
    a, b, c = study.trials
    assert (a.state, a.value) == (b.state, b.value) == (optuna.trial.TrialState.COMPLETE, 0.5)
    assert c.state is optuna.trial.TrialState.FAIL
    with pytest.raises(ValueError, match="Cannot tell a COMPLETE trial"):  # as Study.tell
        tell(study, ours, 0.25)


def test_one_transaction_writes_use_optunas_session_and_rows(study: optuna.Study) -> None:
    from optuna.storages._rdb.storage import _create_scoped_session

    assert list(inspect.signature(_create_scoped_session).parameters)[:1] == ["scoped_session"]
    attr = inspect.signature(RDBStorage._set_trial_attr_without_commit).parameters
    assert list(attr) == ["self", "session", "model_cls", "trial_id", "key", "value"]
    value = inspect.signature(RDBStorage._set_trial_intermediate_value_without_commit)
    assert list(value.parameters) == ["self", "session", "trial_id", "step", "intermediate_value"]
    trial = study.ask()
    with statements(trial.storage) as seen:
        assert write_in_one_transaction(
            rdb_storage(trial.storage), trial._trial_id, {"a": 1}, {1: 0.5}
        )
    assert sum(s.startswith("INSERT") for s in seen) == 2  # one upsert each
    assert (study.trials[0].user_attrs, study.trials[0].intermediate_values) == (
        {"a": 1},
        {1: 0.5},
    )
    assert not write_in_one_transaction(trial.storage, trial._trial_id, {"b": 1}, {})


SPACE = {
    "x": optuna.distributions.FloatDistribution(0.0, 1.0),
    "n": optuna.distributions.IntDistribution(1, 4),
}


def test_ask_leaves_the_parameters_to_the_trials_first_write(study: optuna.Study) -> None:
    param = inspect.signature(RDBStorage._set_trial_param_without_commit).parameters
    assert list(param)[:6] == [
        "self",
        "session",
        "trial_id",
        "param_name",
        "param_value_internal",
        "distribution",
    ]
    assert isinstance(study._storage, optuna.storages._CachedStorage)
    with statements(study._storage) as asking:
        trial, params = ask(study, SPACE)
    assert not any("trial_params" in s and s.startswith("INSERT") for s in asking)
    assert "set_trial_param" not in vars(study._storage)  # the storage is itself again
    assert set(params) == set(SPACE) == set(trial.params)  # the trial's own view has them
    assert study.trials[0].params == {}  # not in the storage yet
    import sqlalchemy

    commits: list[object] = []
    engine = rdb_storage(study._storage).engine
    count = commits.append
    sqlalchemy.event.listen(engine, "commit", count)
    try:
        write(trial, {"claimed": True}, params=params)
    finally:
        sqlalchemy.event.remove(engine, "commit", count)
    assert len(commits) == 1  # one transaction: attributes and parameters
    stored = study.trials[0]
    assert (stored.params, stored.user_attrs) == (trial.params, {"claimed": True})
    assert stored.distributions == SPACE
    study.tell(trial, 0.5)
    # the sampler reads them back as Optuna's own ask would have written them
    again, more = ask(study, SPACE)
    write(again, {}, params=more)
    assert study.trials[1].params == again.params


def test_ask_checks_the_distributions_on_the_write_as_optuna_does(study: optuna.Study) -> None:
    first, params = ask(study, SPACE)
    write(first, {}, params=params)
    changed = {**SPACE, "n": optuna.distributions.FloatDistribution(1.0, 4.0)}
    second, params = ask(study, changed)
    with pytest.raises(ValueError, match="Cannot set different distribution kind"):
        write(second, {"a": 1}, params=params)
    assert study.trials[1].user_attrs == {}  # nothing of that write landed


def test_ask_checks_against_what_another_process_wrote(url: str, study: optuna.Study) -> None:
    study.ask(SPACE)  # Optuna's own ask: its rows, in this storage
    changed = {**SPACE, "x": optuna.distributions.IntDistribution(0, 1)}
    elsewhere = optuna.load_study(study_name="s", storage=url)  # another storage, no memory
    trial, params = ask(elsewhere, changed)
    refused = pytest.raises(ValueError, match="Cannot set different distribution kind")
    with statements(elsewhere._storage) as seen, refused:
        write(trial, {}, params=params)
    assert any(s.startswith("SELECT trial_params.distribution_json") for s in seen)


def test_ask_on_a_storage_without_the_fast_write_is_optunas_ask() -> None:
    study = optuna.create_study()  # in memory
    trial, params = ask(study, SPACE)
    assert params == {}
    assert study.trials[0].params == trial.params


def test_the_rdb_models_have_every_table_and_column_read(url: str, study: optuna.Study) -> None:
    from optuna.storages._rdb import models

    assert rdb_schema() is models
    for name, columns in RDB_MODELS_USED.items():
        table = getattr(models, name).__table__
        assert set(columns) <= set(table.c.keys()), name
    assert isinstance(models.SCHEMA_VERSION, int)
    stored, kind = models.TrialIntermediateValueModel.intermediate_value_to_stored_repr(
        float("inf")
    )
    assert models.TrialIntermediateValueModel.stored_repr_to_intermediate_value(
        stored, kind
    ) == float("inf")
    # the plain queries (through sqlite3 on a SQLite file of this schema), not the ORM
    assert not isinstance(reader(url), RDBStorage)
    assert StoreReader(url).study("s").study_name == read_study(url, "s").study_name == "s"


def test_frozen_studies_are_built_as_optuna_builds_them(url: str, study: optuna.Study) -> None:
    from optuna.study._frozen import FrozenStudy

    parameters = inspect.signature(FrozenStudy).parameters
    names = ["study_name", "direction", "user_attrs", "system_attrs", "study_id"]
    assert list(parameters)[:5] == names
    assert "directions" in parameters
    (theirs,) = RDBStorage(url).get_all_studies()
    ours = frozen_study("s", {}, {}, theirs._study_id, theirs.directions)
    assert isinstance(ours, FrozenStudy)
    assert (ours.study_name, ours._study_id, ours.directions) == (
        theirs.study_name,
        theirs._study_id,
        theirs.directions,
    )

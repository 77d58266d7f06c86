"""``ftsweep retune``: redo a sweep only when what its result depends on changed.

A sweep's results depend on its data, its base model and a few settings (its
:class:`~orchestrator.plan.fingerprint.Fingerprint`). :func:`retune` compares the current
fingerprint with the one the latest generation of the sweep recorded:

- **nothing changed** and that generation produced a model: it says so and returns; nothing
  is trained, and the only provider call is listing models (to resolve an alias);
- **nothing changed** but that generation never finished: it is resumed;
- **something changed**: a new generation starts, a new study ``NAME.gN`` linked to the one
  before (study attributes and MLflow tags: the previous study, what changed). Its first
  trials are the previous generation's best configurations, the batch size rescaled to keep
  its share of the new number of examples; its space is the previous one, moved where that
  sweep's advice says (a parameter whose best values sat at an edge).

Only one retune of a sweep runs at a time, across machines: a lock held in the Optuna storage
(a study named ``NAME.retune-lock`` that exists while it is held, with its owner's heartbeat;
a lock whose owner died is broken). A second retune says who holds it and returns.

A generation that completes a trial moves the registered model's ``champion`` alias to its
best (the MLflow listener); one that fails leaves the previous generation's model current.
"""

from __future__ import annotations

import datetime as dt
import html
import json
import math
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from orchestrator.config import SpaceSpec, SweepSpec
from orchestrator.config.models import (
    MAX_SAMPLER_SEED,
    BatchSizeParam,
    FloatParam,
    IntParam,
)
from orchestrator.core.attrs import StudyAttrs, TrialAttrs
from orchestrator.core.errors import OrchestratorError
from orchestrator.plan.fingerprint import Fingerprint, changes, fingerprint
from orchestrator.plan.models import refuse_sunset, resolve_base_model
from orchestrator.plan.sweep import Generation, SweepPlan, plan_sweep, preflight, replan
from orchestrator.stores.ledger import owner_alive, worker_id
from orchestrator.stores.read import GenerationInfo, generation_study_name, generations
from orchestrator.stores.study import bound_mlflow_retries, check_stores, resolve_stores
from orchestrator.workflows.sweep import Overrides, SweepResult, run_sweep

if TYPE_CHECKING:
    import optuna

    from orchestrator.engine.events import Listener

__all__ = ["RetuneResult", "retune", "warm_start_configs"]

#: how many of the previous generation's best configurations start the next (at most half
#: of its trials)
WARM_START = 3
#: a lock whose heartbeat is older than this is taken to belong to a dead retune
LOCK_STALE_S = 600.0
_LOCK_BEAT_S = 30.0
_LOCK_ATTR = "ftsweep.lock"

Action = Literal["unchanged", "resumed", "started", "first", "locked"]


@dataclass(frozen=True)
class RetuneResult:
    action: Action
    #: one line for the user
    message: str
    #: the generation the retune ran (or found current)
    generation: int | None = None
    study_name: str | None = None
    changes: tuple[str, ...] = ()
    sweep: SweepResult | None = None
    previous: GenerationInfo | None = None
    report: Path | None = None

    @property
    def completed(self) -> bool:
        """Whether the retune left a working model (a sweep that completed a trial, or
        nothing to do)."""
        if self.action in ("unchanged", "locked"):
            return True
        return self.sweep is not None and self.sweep.completed > 0


def retune(
    spec_path: str | os.PathLike[str],
    overrides: Overrides | None = None,
    *,
    listeners: Sequence[Listener] = (),
    report: Path | None = None,
    today: dt.date | None = None,
    announce: Callable[[str], None] = lambda _: None,
    **loop: Any,
) -> RetuneResult:
    """Retune the sweep in ``spec_path`` if its data, base model or settings changed since
        its latest generation (see the module docstring). ``report``: also write the morning
        report (HTML) there. ``announce`` gets a line before a sweep starts (what and why); ``loop``
    goes to :func:`~orchestrator.engine.run_sweep` (its clock, sleep and wall clock)."""
    source = str(spec_path)
    overrides = overrides or Overrides()
    # first without counting tokens (loading a tokenizer can take seconds): when the files'
    # hashes, the model and the settings are as recorded, there is nothing to do
    plan = plan_sweep(spec_path)
    spec = plan.spec
    stores = resolve_stores(spec)
    backend = plan.make_backend(stores.workdir / "backends" / plan.backend.name)
    resolved = resolve_base_model(plan, backend, source, today)  # one provider call at most
    refuse_sunset(resolved, source, today)
    for text in resolved.warnings:
        announce(f"warning: {text}")
    counted = False

    def counting() -> None:  # the full plan, the data's tokens counted
        nonlocal resolved, counted
        if not counted:
            full = plan_sweep(spec_path, count_tokens=True)
            model = resolved.plan.spec.backend.model
            spec_model = full.spec.backend.model_copy(update={"model": model})
            full = replace(
                full,
                spec=full.spec.model_copy(update={"backend": spec_model}),
                requested_model=resolved.plan.requested_model,
            )
            resolved = replace(resolved, plan=full)
            counted = True

    current = fingerprint(resolved.plan)
    if not _nothing_to_do(generations(spec, details=False), current):
        # a sweep will run: the provider and the stores must answer before the lock (which
        # creates the study storage) exists, as for `ftsweep run`
        preflight(backend)
        bound_mlflow_retries()
        check_stores(stores)
    with _retune_lock(stores.optuna, spec.name) as holder:
        if holder is not None:
            message = f"another retune of {spec.name} is running ({holder}); nothing to do"
            return RetuneResult("locked", message)
        found = generations(spec, details=False)
        head = found[-1] if found else None
        if head is None:
            announce(f"{spec.name}: no sweep yet; running the first generation")
            counting()
            sweep = run_sweep(
                spec_path, overrides, listeners=listeners, plan=resolved.plan,
                models=resolved.models, **loop,
            )  # fmt: skip
            result = RetuneResult("first", _ran(sweep, 1), 1, spec.name, (), sweep)
            return _with_report(result, report, spec)
        was = _fingerprint_of(head)
        diffs = tuple(changes(was, current))
        if not diffs:
            if head.succeeded:
                when = _when(head.concluded)
                message = (
                    f"{spec.name}: nothing changed since generation {head.number} "
                    f"({head.study_name}{when}); nothing to do"
                )
                result = RetuneResult(
                    "unchanged", message, head.number, head.study_name, (), None, head
                )
                return _with_report(result, report, spec)
            announce(f"{spec.name}: resuming generation {head.number} ({head.study_name})")
            counting()
            gen = Generation(head.number, head.study_name, head.previous, head.changes)
            gen = replace(gen, file_space=head.attrs.get(StudyAttrs.FILE_SPACE))
            sweep = run_sweep(
                spec_path, overrides, listeners=listeners,
                plan=replace(resolved.plan, generation=gen if head.number > 1 else None),
                models=resolved.models, **loop,
            )  # fmt: skip
            previous = _previous(found, head)
            result = RetuneResult(
                "resumed", _ran(sweep, head.number), head.number, head.study_name,
                head.changes, sweep, previous,
            )  # fmt: skip
            return _with_report(result, report, spec)
        counting()
        diffs = tuple(changes(was, fingerprint(resolved.plan)))  # with the token counts
        base = next((g for g in reversed(found) if g.succeeded), None)
        number = head.number + 1
        name = generation_study_name(spec.name, number)
        next_plan = _next_plan(resolved.plan, source, base, name, number, diffs, overrides.trials)
        announce(
            f"{spec.name}: {'; '.join(diffs)}: starting generation {number} ({name})"
            + (f", warm-started from {base.study_name}" if base else "")
        )
        sweep = run_sweep(
            spec_path,
            overrides,
            listeners=listeners,
            plan=next_plan,
            models=resolved.models,
            **loop,
        )
        result = RetuneResult("started", _ran(sweep, number), number, name, diffs, sweep, base)
        return _with_report(result, report, spec)


def _nothing_to_do(found: Sequence[GenerationInfo], current: Fingerprint) -> bool:
    """Whether the latest generation produced a model on what ``current`` describes."""
    head = found[-1] if found else None
    return head is not None and head.succeeded and not changes(_fingerprint_of(head), current)


def _ran(sweep: SweepResult, number: int) -> str:
    done = sweep.completed
    best = sweep.study.best_value if done else None
    tail = f", best {sweep.plan.spec.objective.metric}={best:.4f}" if best is not None else ""
    return f"generation {number} ({sweep.plan.study_name}): {done} trial(s) completed{tail}"


def _when(concluded: Mapping[str, Any] | None) -> str:
    at = (concluded or {}).get("at")
    if not isinstance(at, int | float):
        return ""
    return ", " + dt.datetime.fromtimestamp(at, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def _fingerprint_of(info: GenerationInfo) -> Fingerprint | None:
    if not info.fingerprint:
        return None
    try:
        return Fingerprint.from_json(info.fingerprint)
    except (ValueError, KeyError, TypeError):
        return None


def _previous(found: Sequence[GenerationInfo], head: GenerationInfo) -> GenerationInfo | None:
    return next((g for g in found if g.study_name == head.previous), None)


# -- the next generation ---------------------------------------------------------------------
def _next_plan(
    plan: SweepPlan,
    source: str,
    base: GenerationInfo | None,
    name: str,
    number: int,
    diffs: tuple[str, ...],
    overrides_trials: int | None = None,
) -> SweepPlan:
    """The plan of generation ``number``: the space moved by the previous sweep's advice,
    its best configurations first."""
    spec = plan.spec
    file_space = spec.space.model_dump(mode="json", exclude_none=True)
    space_spec = spec.space
    warm: list[tuple[dict[str, Any], str]] = []
    if base is not None:
        space_spec = _moved_space(plan, base, file_space)
    derived = spec.model_copy(update={"space": space_spec})
    if spec.sampler.seed is not None:  # a seeded sampler would replay the last generation's
        seed = (spec.sampler.seed + 7919 * (number - 1)) % MAX_SAMPLER_SEED
        derived = derived.model_copy(
            update={"sampler": spec.sampler.model_copy(update={"seed": seed})}
        )
    if space_spec is not spec.space and spec.enqueue:  # keep the entries the moved space holds
        from orchestrator.plan.space import resolve_space

        space = resolve_space(space_spec, plan.train.n_examples, plan.backend, source)
        kept = [e for e in spec.enqueue if all(space[k].contains(v) for k, v in e.items())]
        derived = derived.model_copy(update={"enqueue": kept})
    moved = replan(plan, derived, source)
    if base is not None:  # at most half the trials: the rest search around them
        trials = overrides_trials or spec.trials
        warm = warm_start_configs(base, moved, spec, min(WARM_START, max(1, trials // 2)))
    generation = Generation(
        number, name, base.study_name if base else None, diffs, file_space,
        tuple((config, {TrialAttrs.WARM_START: origin}) for config, origin in warm),
    )  # fmt: skip
    return replace(moved, generation=generation)


def _load(info: GenerationInfo, spec: SweepSpec) -> optuna.Study:
    from orchestrator.core.errors import SweepNotStartedError
    from orchestrator.core.urls import masked_url
    from orchestrator.stores.read import load_study, optuna_url

    url = optuna_url(spec)
    shown = masked_url(url)
    return load_study(
        info.study_name, url, shown, SweepNotStartedError(info.study_name, shown, info.study_name)
    )


def _base_space(base: GenerationInfo, file_space: Mapping[str, Any], spec: SweepSpec) -> SpaceSpec:
    """The space to move: the previous generation's, unless the sweep file's space changed
    since (then the user's edit wins)."""
    ran = base.attrs.get(StudyAttrs.SPACE)
    was_file = base.attrs.get(StudyAttrs.FILE_SPACE)
    if isinstance(ran, dict) and was_file == dict(file_space):
        try:
            return SpaceSpec.model_validate(ran, strict=False)
        except ValueError:
            pass
    return spec.space


def _moved_space(plan: SweepPlan, base: GenerationInfo, file_space: Mapping[str, Any]) -> SpaceSpec:
    """The base space with each parameter whose best values sat at an edge moved past it
    (:func:`orchestrator.analysis.diagnosis.advise`), within what the backend accepts."""
    from orchestrator.analysis.diagnosis import advise
    from orchestrator.plan.space import resolve_space

    space_spec = _base_space(base, file_space, plan.spec)
    was = _fingerprint_of(base)
    n_old = was.train.n_examples if was else plan.train.n_examples
    try:
        old_space = resolve_space(space_spec, n_old, plan.backend, "previous generation")
    except OrchestratorError:
        return space_spec
    study = _load(base, plan.spec)
    done = [t for t in study.get_trials(deepcopy=False) if t.value is not None]
    if not done:
        return space_spec
    sign = 1.0 if study.direction.name == "MINIMIZE" else -1.0
    ranked = sorted(done, key=lambda t: sign * float(t.value or 0.0))
    fixed = old_space.fixed()
    best = {**fixed, **ranked[0].params}
    labels = [
        str(t.user_attrs[TrialAttrs.DIAGNOSIS])
        for t in done
        if TrialAttrs.DIAGNOSIS in t.user_attrs
    ]
    advice = advise(old_space, best, labels, [t.params for t in ranked[:3]])
    caps = plan.backend.capabilities.parameters
    updates: dict[str, Any] = {}
    for param, (low, high) in advice.next_ranges.items():
        accepted = caps.get(param)
        if accepted is not None:
            if accepted.low is not None:
                low = max(low, accepted.low) if not accepted.low_exclusive else low
            if accepted.high is not None:
                high = min(high, accepted.high)
        if not low < high:
            continue
        current = getattr(space_spec, param)
        if param == "batch_size":
            low_pct = min(100.0, max(1e-6, low / n_old * 100))
            high_pct = min(100.0, max(low_pct, high / n_old * 100))
            updates[param] = BatchSizeParam(
                low_pct=round(low_pct, 6), high_pct=round(high_pct, 6), log=current.log
            )
        elif param == "n_epochs":
            updates[param] = IntParam(low=int(low), high=int(high), log=current.log)
        else:
            log = bool(getattr(current, "log", True))
            updates[param] = FloatParam(low=float(low), high=float(high), log=log)
    return space_spec.model_copy(update=updates) if updates else space_spec


def warm_start_configs(
    base: GenerationInfo, plan: SweepPlan, spec: SweepSpec, k: int = WARM_START
) -> list[tuple[dict[str, Any], str]]:
    """The ``k`` best configurations of ``base``, as the new space takes them: the batch size
    rescaled by new/old examples (so it keeps its share of the data), every value clamped into
    the new space; with ``"STUDY#TRIAL"`` they came from."""
    from orchestrator.results.table import trial_hyperparameters

    study = _load(base, spec)
    done = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
    sign = 1.0 if study.direction.name == "MINIMIZE" else -1.0
    ranked = sorted(done, key=lambda t: sign * float(t.value or 0.0))
    was = _fingerprint_of(base)
    n_old = was.train.n_examples if was else None
    n_new = plan.train.n_examples
    found: list[tuple[dict[str, Any], str]] = []
    seen: set[str] = set()
    for trial in ranked:
        if len(found) >= k:
            break
        hp = trial_hyperparameters(trial)
        if "batch_size" in hp and n_old:
            hp["batch_size"] = max(1, round(float(hp["batch_size"]) * n_new / n_old))
        config: dict[str, Any] = {}
        for dim in plan.space.dimensions:
            if dim.kind == "fixed":
                continue
            value = hp.get(dim.name)
            if value is None:
                value = _middle(dim)
            config[dim.name] = _clamp(dim, value)
        key = json.dumps(config, sort_keys=True)
        if key in seen:
            continue
        seen.add(key)
        found.append((config, f"{base.study_name}#{trial.number}"))
    return found


def _middle(dim: Any) -> float:
    if dim.kind == "choice":
        return float(dim.choices[len(dim.choices) // 2])
    lo, hi = float(dim.low), float(dim.high)
    mid = math.sqrt(lo * hi) if dim.log and lo > 0 else (lo + hi) / 2
    return round(mid) if dim.kind == "int" else mid


def _clamp(dim: Any, value: float) -> float:
    if dim.kind == "choice":
        return min(dim.choices, key=lambda c: abs(float(c) - float(value)))  # type: ignore[no-any-return]
    lo, hi = float(dim.low), float(dim.high)
    x = min(max(float(value), lo), hi)
    return round(x) if dim.kind == "int" else x


# -- the lock --------------------------------------------------------------------------------
@contextmanager
def _retune_lock(url: str, sweep: str) -> Iterator[str | None]:
    """Hold the sweep's retune lock; yields None when held, else who holds it."""
    lock = _StorageLock(url, f"{sweep}.retune-lock")
    holder = lock.acquire()
    try:
        yield holder
    finally:
        if holder is None:
            lock.release()


class _StorageLock:
    """A lock that is a study in the Optuna storage: creating a study is atomic in every
    storage (a unique name), so exactly one process across machines holds it."""

    def __init__(self, url: str, name: str, stale_s: float = LOCK_STALE_S) -> None:
        self.url, self.name, self.stale_s = url, name, stale_s
        self.owner = worker_id()
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None
        self._study_id: int | None = None

    def _storage(self) -> Any:
        from orchestrator.stores.study import storage

        return storage(self.url)

    def acquire(self) -> str | None:
        import optuna
        from optuna.exceptions import DuplicatedStudyError

        from orchestrator.stores.locks import create_aside, sqlite_init_lock

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        with sqlite_init_lock(self.url):  # the storage may be created here (PostgreSQL too)
            from orchestrator.stores.study import new_rdb

            create_aside(self.url, new_rdb)
            storage = self._storage()
        for attempt in range(3):
            try:
                sid = storage.create_new_study([optuna.study.StudyDirection.MINIMIZE], self.name)
            except DuplicatedStudyError:
                holder = self._holder(storage, attempt)
                if holder is not None:
                    return holder
                continue  # broken: try again
            now = time.time()
            storage.set_study_user_attr(
                sid, _LOCK_ATTR, {"owner": self.owner, "since": now, "heartbeat": now}
            )
            self._study_id = sid
            self._beat = threading.Thread(target=self._heartbeat, daemon=True)
            self._beat.start()
            return None
        return "a lock that could not be taken"

    def _holder(self, storage: Any, attempt: int) -> str | None:
        """Who holds the lock; None after breaking a dead holder's lock."""
        try:
            sid = storage.get_study_id_from_name(self.name)
        except KeyError:
            return None  # released meanwhile
        info = storage.get_study_user_attrs(sid).get(_LOCK_ATTR)
        if not isinstance(info, dict):
            if attempt == 0:
                time.sleep(1.0)  # just created: its owner is writing who it is
                return self._holder_again(storage, sid)
            info = {}
        owner = str(info.get("owner", "?"))
        beat = float(info.get("heartbeat", 0) or 0)
        if owner_alive(owner) is False or time.time() - beat > self.stale_s:
            with suppress(KeyError):
                storage.delete_study(sid)
            return None
        since = dt.datetime.fromtimestamp(float(info.get("since", beat)), dt.UTC)
        return f"{owner}, since {since:%Y-%m-%d %H:%M} UTC"

    def _holder_again(self, storage: Any, sid: int) -> str | None:
        info = storage.get_study_user_attrs(sid).get(_LOCK_ATTR)
        if isinstance(info, dict):
            return f"{info.get('owner', '?')}"
        with suppress(KeyError):  # created and never claimed: its owner died at once
            storage.delete_study(sid)
        return None

    def _heartbeat(self) -> None:
        storage = self._storage()
        while not self._stop.wait(_LOCK_BEAT_S):
            try:
                info = storage.get_study_user_attrs(self._study_id).get(_LOCK_ATTR) or {}
                info = {**info, "heartbeat": time.time()}
                storage.set_study_user_attr(self._study_id, _LOCK_ATTR, info)
            except Exception:  # a missed beat is not fatal; LOCK_STALE_S is many beats
                continue

    def release(self) -> None:
        self._stop.set()
        if self._beat is not None:
            self._beat.join(timeout=5)
        if self._study_id is None:
            return
        with suppress(Exception):  # gone already; a stale lock is broken by the next retune
            self._storage().delete_study(self._study_id)


# -- the morning report ----------------------------------------------------------------------
def _with_report(result: RetuneResult, path: Path | None, spec: SweepSpec) -> RetuneResult:
    """Write the morning report to the generation's parent run and to ``path``."""
    text = retune_report(result, spec)
    if result.sweep is not None:
        _log_report(result.sweep, text)
    if path is None:
        return result
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return replace(result, report=path)


def _log_report(sweep: SweepResult, text: str) -> None:
    from orchestrator.tracking import Tracker

    parent = sweep.study.user_attrs.get(StudyAttrs.MLFLOW_PARENT_RUN)
    if not parent:
        return
    tracker = Tracker(sweep.stores.mlflow, sweep.plan.spec.name, sweep.stores.artifacts)
    tracker.log_text(str(parent), text, "report/retune.html")


def _best_of(info: GenerationInfo | None, spec: SweepSpec) -> dict[str, Any] | None:
    if info is None or not info.succeeded:
        return None
    from orchestrator.results.table import trial_hyperparameters

    concluded = dict(info.concluded or {})
    try:
        study = _load(info, spec)
        trial = study.trials[int(concluded["best_trial"])]
        concluded["params"] = trial_hyperparameters(trial)
    except (OrchestratorError, KeyError, IndexError, ValueError, TypeError):
        pass
    concluded["study"] = info.study_name
    concluded["generation"] = info.number
    return concluded


_CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,sans-serif;margin:2rem auto;max-width:60rem;
color:#1d2433;padding:0 1rem}h1{font-size:1.4rem;margin-bottom:.2rem}h2{font-size:1.1rem;
margin-top:1.8rem}.sub{color:#5b6478}table{border-collapse:collapse;margin:.6rem 0;width:100%}
th,td{border-bottom:1px solid #e2e5eb;padding:.3rem .5rem;text-align:left;font-variant-numeric:
tabular-nums}th{background:#f4f6f9}.verdict{padding:.7rem 1rem;border-radius:6px;
background:#eef6ee;border:1px solid #b9dbb9}.verdict.bad{background:#fbeeee;border-color:#e3b5b5}
.verdict.same{background:#f4f6f9;border-color:#d6dae2}ul{padding-left:1.2rem}
"""


def retune_report(result: RetuneResult, spec: SweepSpec) -> str:
    """The morning report of a retune: what changed, the new best against the old, the
    trials, and what to try next. One self-contained HTML page."""
    from orchestrator.results.table import TABLE_COLUMNS, render

    esc = html.escape
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    metric = spec.objective.metric
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>ftsweep retune: {esc(spec.name)}</title><style>{_CSS}</style></head><body>",
        f"<h1>Retune of {esc(spec.name)}</h1>",
        f"<div class='sub'>{esc(now)} · objective: {esc(spec.objective.direction)} "
        f"{esc(metric)}</div>",
    ]
    kind = {"unchanged": "same", "locked": "same"}.get(result.action, "")
    if result.action in ("started", "resumed", "first") and not result.completed:
        kind = "bad"
    verdict = result.message
    if kind == "bad":
        verdict += " — no trial completed; the previous model stays current"
    parts.append(f"<p class='verdict {kind}'>{esc(verdict)}</p>")
    parts.append("<h2>What changed</h2>")
    if result.action == "first":
        parts.append(f"<p>The first sweep of {esc(spec.name)}: nothing to compare with yet.</p>")
    elif result.changes:
        parts.append("<ul>" + "".join(f"<li>{esc(c)}</li>" for c in result.changes) + "</ul>")
    else:
        parts.append("<p>Nothing: the data, the base model and the settings are as before.</p>")
    old = _best_of(result.previous, spec)
    new = None
    if result.sweep is not None and result.sweep.completed:
        best = result.sweep.study.best_trial
        from orchestrator.results.table import trial_hyperparameters

        new = {
            "study": result.sweep.plan.study_name,
            "generation": result.generation,
            "best_trial": best.number,
            "best_value": best.value,
            "model": best.user_attrs.get(TrialAttrs.FINE_TUNED_MODEL),
            "completed": result.sweep.completed,
            "params": trial_hyperparameters(best),
        }
    if old or new:
        parts.append("<h2>Best: new against old</h2><table><tr><th></th>")
        if result.action == "unchanged":
            cols = [("current", old)]
        elif old is None:
            cols = [("new", new)]
        else:
            cols = [("previous", old), ("new", new)]
        parts += [f"<th>{esc(label)}</th>" for label, _ in cols]
        parts.append("</tr>")
        rows: list[tuple[str, Callable[[dict[str, Any]], str]]] = [
            ("generation", lambda b: f"{b.get('generation')} ({b.get('study')})"),
            (metric, lambda b: _num(b.get("best_value"))),
            ("trial", lambda b: str(b.get("best_trial", ""))),
            ("trials completed", lambda b: str(b.get("completed", ""))),
            ("model", lambda b: str(b.get("model") or "")),
            ("hyper-parameters", lambda b: _params(b.get("params"))),
        ]
        for label, cell in rows:
            parts.append(f"<tr><th>{esc(label)}</th>")
            parts += [f"<td>{esc(cell(b)) if b else '—'}</td>" for _, b in cols]
            parts.append("</tr>")
        parts.append("</table>")
        if old and new and old.get("best_value") is not None and new.get("best_value") is not None:
            parts.append(
                "<p class='sub'>The data changed between the two, so the values are not "
                "strictly comparable: the new model is the current one.</p>"
                if result.changes
                else ""
            )
    if result.sweep is not None:
        parts.append("<h2>Trials</h2><div style='overflow-x:auto'>")
        frame = result.sweep.frame
        shown = [c for c in TABLE_COLUMNS if c in frame.columns]
        parts.append(render(frame[shown], "html") + "</div>")
        if result.sweep.advice is not None and result.sweep.advice.notes:
            parts.append("<h2>Next</h2><ul>")
            parts += [f"<li>{esc(n)}</li>" for n in result.sweep.advice.notes]
            parts.append("</ul>")
    parts.append("</body></html>")
    return "".join(parts) + "\n"


def _num(v: Any) -> str:
    return f"{v:.4f}" if isinstance(v, int | float) else ""


def _params(p: Any) -> str:
    if not isinstance(p, Mapping):
        return ""
    return ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in p.items())

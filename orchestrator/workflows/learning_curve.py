"""Would more data help? The sweep's best configuration trained on growing fractions of the
training data, and a power law fitted to the validation loss.

:func:`learning_curve` reads the best trial of the sweep's study (a sweep that never ran, or
has no completed trial, is an error telling to run it first), writes nested random subsets of
the training file (12.5, 25, 50 and 100 % by default; the batch size keeps its share of the
examples, at least 1; the validation file is the sweep's), estimates what the jobs cost and
refuses, before anything is uploaded, when that is over the sweep's budget, then trains them
and tracks them in the sweep's MLflow experiment: one parent run tagged ``ftsweep.kind =
learning-curve`` with the plot and the fit, one child run per fraction with its step metrics
(:mod:`.curve_tracking`). The fit and the answer: :mod:`.power_law`.

**The jobs run through the sweep engine** (:func:`orchestrator.engine.run_sweep`), as trials
of the curve's own study ``STUDY.curve.tN`` (the sweep's study, its best trial ``N``), so a
learning curve has what a sweep has: one trial's error stays in that trial (its job is
cancelled), the ledger, re-attaching to the jobs of a killed run (``ftsweep learning-curve``
again: nothing is trained or paid twice), the budget, the MLflow listener. A curve whose
fractions all trained, run again, trains nothing and logs nothing new.

**One derived plan per fraction.** A plan owns its training file and that file's statistics
(:meth:`~orchestrator.plan.sweep.SweepPlan.request` puts ``spec.data.train`` into every
request; the engine prices each trial on ``plan.train``, and resolves the space against its
examples). A request override per trial would train the right file but price it, and budget
it, on the whole file's statistics. So each fraction gets a plan of its own: the sweep's plan
with the subset as its training file and statistics, its space fixed at the fraction's
configuration (:func:`~orchestrator.plan.sweep.replan`), the loss as its objective, no
pruner; and the engine runs each plan in turn against the one study (one study, so one
parent run with a child run per fraction: the MLflow listener knows a trial by its number
in the study). Each run is allowed one trial more than the study counts for the other
fractions (:func:`orchestrator.engine.loop.counted`, the engine's own count), so a fraction
whose job is still running is re-attached, not trained again. The largest fraction runs
first (the parent run then describes the whole data); the cost of this choice is that the
fractions train one after another, not ``parallel`` at a time.
"""

from __future__ import annotations

import json
import random
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestrator.core.attrs import TrialAttrs
from orchestrator.core.errors import OrchestratorError
from orchestrator.engine.events import (
    Listener,
    Note,
    TrialFinished,
    TrialStarted,
    TrialSubmitted,
    TrialView,
)
from orchestrator.tracking.client import TAG
from orchestrator.workflows.curve_tracking import KIND, CurveEnd, CurveListener, FractionLabel
from orchestrator.workflows.power_law import Fit, fit_power_law, plot_curve

if TYPE_CHECKING:
    import optuna

    from orchestrator.backends.base import Hyperparameters
    from orchestrator.config import SweepSpec
    from orchestrator.engine import SweepResult
    from orchestrator.plan.sweep import SweepPlan
    from orchestrator.stores.study import Stores

__all__ = [
    "FRACTIONS",
    "BudgetExceededError",
    "Fit",
    "LearningCurve",
    "Point",
    "fit_power_law",
    "learning_curve",
]

FRACTIONS = (0.125, 0.25, 0.5, 1.0)


class BudgetExceededError(OrchestratorError):
    """The learning curve's estimated cost is over the sweep's budget: nothing was started."""


@dataclass(frozen=True)
class Point:
    """One fraction's run: examples trained on and its final validation metrics."""

    fraction: float
    n_examples: int
    batch_size: int
    loss: float | None
    accuracy: float | None = None
    status: str = "succeeded"
    job_id: str | None = None
    run_id: str | None = None
    cost_usd: float | None = None


@dataclass(frozen=True)
class LearningCurve:
    """The result of :func:`learning_curve`."""

    sweep: str
    trial: int
    metric: str
    points: tuple[Point, ...]
    fit: Fit | None
    answer: str
    plot: Path
    parent_run_id: str
    experiment_id: str
    notes: tuple[str, ...] = field(default=())

    def as_dict(self) -> dict[str, Any]:
        """The curve as JSON-ready values (``ftsweep learning-curve --json``)."""
        return {
            "sweep": self.sweep,
            "trial": self.trial,
            "metric": self.metric,
            "points": [asdict(p) for p in self.points],
            "fit": None if self.fit is None else asdict(self.fit),
            "answer": self.answer,
            "plot": str(self.plot),
            "mlflow_run_id": self.parent_run_id,
        }


@dataclass(frozen=True)
class _Fraction:
    """One fraction of the training data and the plan that trains it."""

    share: float
    plan: SweepPlan
    estimate: float | None

    @property
    def path(self) -> Path:
        return Path(self.plan.spec.data.train)

    @property
    def label(self) -> FractionLabel:
        return FractionLabel(self.share, self.plan.train.n_examples)

    @property
    def batch_size(self) -> int:
        return int(self.plan.space["batch_size"].value)


def learning_curve(
    spec_path: str | Path,
    *,
    fractions: Sequence[float] = FRACTIONS,
    out: Path | None = None,
    budget_usd: float | None = None,
    progress: Callable[[str], None] = lambda _: None,
    sleep: Callable[[float], None] = time.sleep,
) -> LearningCurve:
    """Train the best configuration of the sweep in ``spec_path`` on ``fractions`` of its
    training data, fit, plot (to ``out``, by default beside the subsets) and track it.

    ``progress`` gets a line per job submitted and finished (and each note about one);
    ``sleep`` is the engine's wait between polls."""
    from orchestrator.backends.base import Hyperparameters
    from orchestrator.core.errors import UsageError
    from orchestrator.plan.sweep import plan_sweep
    from orchestrator.results.read import open_results
    from orchestrator.stores.study import resolve_stores

    if not fractions or any(not 0 < f <= 1 for f in fractions):
        raise UsageError("--fractions: each must be > 0 and <= 1")
    results = open_results(spec_path, current=True)
    best = results.best()
    if best is None:
        raise OrchestratorError(
            f"sweep {results.spec.name!r} has no completed trial yet: run it first "
            f"(`ftsweep run {spec_path}`)"
        )
    plan = plan_sweep(spec_path, count_tokens=True)
    spec = plan.spec
    hp = Hyperparameters.from_dict(results.hyperparameters(best))
    stores = resolve_stores(spec)
    folder = stores.workdir / KIND / spec.name
    shares = sorted(set(fractions))
    study_name = f"{results.study.study_name}.curve.t{best.number}"
    cap = budget_usd if budget_usd is not None else spec.budget_usd
    loss_names, acc_names = _metric_names(spec.objective.metric)
    subsets = _subsets(Path(spec.data.train), shares, spec.seed, folder / "data")
    derive = _Deriver(plan, study_name, hp, loss_names[0], cap, len(shares), str(spec_path))
    parts = [derive(f, path, stores) for f, path in zip(shares, subsets, strict=True)]
    trials = _trials(stores, study_name)
    _check_budget(parts, trials, cap, progress)
    labels = {str(p.path): p.label for p in parts}
    recorder = _Recorder(
        spec.name,
        labels,
        tags={
            f"{TAG}source_study": results.study.study_name,
            f"{TAG}source_trial": str(best.number),
            f"{TAG}fractions": ",".join(f"{f:g}" for f in shares),
        },
        params=hp.as_dict(),
    )
    runner = _Runner(str(spec_path), recorder, [_Progress(progress, labels)], progress, sleep)
    for part in sorted(parts, key=lambda p: -p.share):  # the whole data first
        trials = runner.run(part, trials)
    if runner.last is None:  # every fraction trained already: one pass mends what a crash left
        trials = runner.run(max(parts, key=lambda p: p.share), trials, again=True)
    listener = recorder.listener
    assert listener is not None, "the engine built the tracking listener"
    accuracy = listener.finals(acc_names)
    points = [_point(p, trials, accuracy) for p in parts]
    metric = loss_names[0]
    fit = fit_power_law([(p.n_examples, p.loss) for p in points if p.loss is not None])
    answer = (
        fit.verdict(metric)
        if fit is not None
        else "more data: cannot say: fewer than two fractions finished with a validation loss"
    )
    logged = folder / "learning_curve.png"
    plot_curve(points, fit, metric, logged, f"{spec.name}: trial {best.number} on more data")
    plot = logged
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(logged, out)
        plot = out
    curve = LearningCurve(
        spec.name,
        best.number,
        metric,
        tuple(points),
        fit,
        answer,
        plot,
        listener.parent or "",
        listener.tracker.experiment_id,
    )
    metrics: dict[str, float] = {}
    if fit is not None:
        metrics = {"power_law_a": fit.a, "power_law_b": fit.b, "power_law_floor": fit.c}
        metrics["doubling_gain"] = fit.doubling_gain
    summary = json.dumps(curve.as_dict(), indent=2)
    ok = any(p.status == "succeeded" for p in points)
    records = listener.conclude(CurveEnd(logged, summary, metrics, answer, ok))
    if records and listener.held is not None:  # the listener reads the study; this writes
        for key, value in records.items():
            listener.held.study.set_user_attr(key, value)
    return curve


def _metric_names(objective: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The validation loss (the objective's when it is one) and token accuracy, each with
    what stands in for it."""
    loss: tuple[str, ...] = ("full_valid_loss", "valid_loss")
    if objective in loss:
        loss = (objective, *(n for n in loss if n != objective))
    return loss, ("full_valid_mean_token_accuracy", "valid_mean_token_accuracy")


def _subsets(train: Path, fractions: Sequence[float], seed: int, folder: Path) -> list[Path]:
    """Nested random subsets of the training file's examples (its non-blank lines)."""
    lines = [line for line in train.read_text(encoding="utf-8").splitlines() if line.strip()]
    order = list(range(len(lines)))
    random.Random(seed).shuffle(order)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for f in fractions:
        n = max(1, round(len(lines) * f))
        chosen = sorted(order[:n])  # file order, as the sweep saw it
        path = (folder / f"{train.stem}.{f * 100:g}pct.jsonl").resolve()
        path.write_text("".join(lines[i] + "\n" for i in chosen), encoding="utf-8")
        paths.append(path)
    return paths


@dataclass(frozen=True)
class _Deriver:
    """Builds each fraction's plan from the sweep's (see the module docstring)."""

    plan: SweepPlan
    study: str
    hp: Hyperparameters
    metric: str
    cap: float | None
    n_fractions: int
    shown: str

    def __call__(self, share: float, path: Path, stores: Stores) -> _Fraction:
        from orchestrator.config import (
            BatchSizeParam,
            FloatParam,
            IntParam,
            ObjectiveSpec,
            PrunerSpec,
            SamplerSpec,
            SpaceSpec,
        )
        from orchestrator.data.checks import check_file
        from orchestrator.plan.sweep import replan

        plan, hp = self.plan, self.hp
        stats, _, _ = check_file(path, plan.counter)
        batch = max(1, round(hp.batch_size * stats.n_examples / plan.train.n_examples))
        plw = hp.prompt_loss_weight
        space = SpaceSpec(
            n_epochs=IntParam(value=hp.n_epochs),
            batch_size=BatchSizeParam(value=batch),
            learning_rate_multiplier=FloatParam(value=float(hp.learning_rate_multiplier)),
            prompt_loss_weight=None if plw is None else FloatParam(value=float(plw)),
        )
        spec = plan.spec.model_copy(
            update={
                # the study's own name: its lineage is not the sweep's (no generation of it)
                "name": self.study,
                "data": plan.spec.data.model_copy(update={"train": path}),
                "space": space,
                "objective": ObjectiveSpec(metric=self.metric, direction="minimize"),
                "trials": self.n_fractions,
                "timeout_s": None,
                "target": None,
                "budget_usd": self.cap,
                "sampler": SamplerSpec(name="random", seed=plan.spec.sampler.seed),
                "pruner": PrunerSpec(),
                "enqueue": [],
            }
        )
        derived = replan(replace(plan, train=stats, generation=None), spec, self.shown)
        searched = [d.name for d in derived.space.dimensions if d.kind != "fixed"]
        if searched:  # the configuration is the sweep's best, whole: nothing is searched
            raise OrchestratorError(
                f"the best trial's hyper-parameters leave {', '.join(searched)} unset: "
                "it cannot be trained again as it was"
            )
        request = derived.request(derived.space.hyperparameters({}), trial=0)
        estimator = derived.make_backend(stores.backend_dir(derived.backend.name))
        estimator.check(request)
        return _Fraction(share, derived, estimator.estimate_cost(request, stats))


def _trials(stores: Stores, name: str) -> list[optuna.trial.FrozenTrial]:
    """The trials of the curve's study, read-only ([] before its first run)."""
    from orchestrator.core.errors import SweepNotStartedError
    from orchestrator.core.urls import masked_url
    from orchestrator.stores.read import load_study

    shown = masked_url(stores.optuna)
    try:
        study = load_study(name, stores.optuna, shown, SweepNotStartedError(name, shown, ""))
    except SweepNotStartedError:
        return []
    return list(study.get_trials(deepcopy=False))


def _train_file(trial: optuna.trial.FrozenTrial) -> str | None:
    """The training file of the trial's request (None: no request in its ledger)."""
    raw = trial.user_attrs.get(TrialAttrs.REQUEST)
    if raw is None:
        return None
    try:
        return str(json.loads(str(raw))["train_file"])
    except (ValueError, KeyError, TypeError):
        return None


def _mine(
    part: _Fraction, trials: Sequence[optuna.trial.FrozenTrial]
) -> list[optuna.trial.FrozenTrial]:
    """The trials that train ``part``'s file."""
    return [t for t in trials if _train_file(t) == str(part.path)]


def _done(trial: optuna.trial.FrozenTrial) -> bool:
    """Whether the trial is the fraction's result: completed, or failed in a way that counts
    (a job that failed; not one the provider or the budget kept from starting)."""
    from orchestrator.engine.limits import counted

    state = trial.state.name
    return state == "COMPLETE" or (state in ("FAIL", "PRUNED") and counted([trial]) == 1)


def _check_budget(
    parts: Sequence[_Fraction],
    trials: Sequence[optuna.trial.FrozenTrial],
    cap: float | None,
    progress: Callable[[str], None],
) -> None:
    """Refuse, before anything is uploaded, a curve whose cost (what its study spent, and the
    estimate of every fraction still to train) is over ``cap``."""
    todo = [p for p in parts if not any(_done(t) for t in _mine(p, trials))]
    priced = [p.estimate for p in todo if p.estimate is not None]
    if not priced:
        return
    spent = sum(float(t.user_attrs.get(TrialAttrs.COST, 0.0)) for t in trials)
    total = round(spent + sum(priced), 4)
    if cap is not None and total > cap:
        raise BudgetExceededError(
            f"the learning curve would cost about ${total:.2f} ({len(todo)} jobs), over "
            f"the budget of ${cap:.2f}: nothing was started (raise --budget, or fewer "
            "--fractions)"
        )
    progress(f"estimated cost: ${total:.2f} for {len(todo)} jobs")


@dataclass
class _Recorder:
    """The tracking factory handed to the engine: one :class:`CurveListener` for every run
    of this process, in the sweep's experiment."""

    experiment: str
    labels: dict[str, FractionLabel]
    tags: dict[str, str]
    params: dict[str, Any]
    listener: CurveListener | None = None

    def __call__(self, spec: SweepSpec, stores: Stores) -> Listener:
        from orchestrator.tracking import Tracker

        if self.listener is None:
            tracker = Tracker(stores.mlflow, self.experiment, stores.artifacts)
            self.listener = CurveListener(tracker, self.labels, tags=self.tags, params=self.params)
        return self.listener


@dataclass
class _Runner:
    """Runs one fraction's plan through the engine, allowed one trial more than the study
    counts for the other fractions."""

    spec_path: str
    recorder: _Recorder
    listeners: list[Listener]
    say: Callable[[str], None]
    sleep: Callable[[float], None]
    last: SweepResult | None = None

    def run(
        self, part: _Fraction, trials: list[optuna.trial.FrozenTrial], *, again: bool = False
    ) -> list[optuna.trial.FrozenTrial]:
        """The study's trials after ``part``'s run (none when it is done already, unless
        ``again``: a pass that trains nothing new)."""
        from orchestrator.engine import Overrides, run_sweep
        from orchestrator.engine.limits import counted

        mine = _mine(part, trials)
        if any(_done(t) for t in mine) and not again:
            return trials
        # a trial asked but never claimed (a kill in between) is started with this plan
        mine += [t for t in trials if t.state.name == "RUNNING" and _train_file(t) is None]
        limit = counted(trials) if again else counted(trials) - counted(mine) + 1
        result = run_sweep(
            self.spec_path,
            Overrides(trials=max(1, limit)),
            listeners=self.listeners,
            tracking=self.recorder,
            probe_tracking=True,
            sleep=self.sleep,
            plan=part.plan,
            resume=f"ftsweep learning-curve {self.spec_path}",
        )
        self.last = result
        trials = list(result.study.get_trials(deepcopy=False))
        if not again and result.stop_reason and not any(_done(t) for t in _mine(part, trials)):
            self.say(f"{part.share * 100:g}% of the data: not trained: {result.stop_reason}")
        return trials


def _point(
    part: _Fraction, trials: Sequence[optuna.trial.FrozenTrial], accuracy: dict[int, float]
) -> Point:
    """The fraction's result, from its trial in the study (the last that is its result, else
    its last) and its child run's token accuracy."""
    mine = _mine(part, trials)
    done = [t for t in mine if _done(t)]
    complete = [t for t in done if t.state.name == "COMPLETE"]
    chosen = complete or done or mine
    if not chosen:
        return Point(part.share, part.label.n_examples, part.batch_size, None, None, "not started")
    trial = chosen[-1]
    attrs = trial.user_attrs
    status = str(attrs.get(TrialAttrs.JOB_STATUS) or "")
    if not status:
        status = "not started" if TrialAttrs.NOT_STARTED in attrs else trial.state.name.lower()
    ok = status == "succeeded"
    cost = attrs.get(TrialAttrs.COST, attrs.get(TrialAttrs.ESTIMATE, part.estimate))
    return Point(
        part.share,
        part.label.n_examples,
        part.batch_size,
        trial.values[0] if trial.state.name == "COMPLETE" and trial.values else None,
        accuracy.get(trial.number) if ok else None,
        status,
        attrs.get(TrialAttrs.JOB_ID),
        attrs.get(TrialAttrs.MLFLOW_RUN),
        None if cost is None else float(cost),
    )


class _Progress(Listener):
    """The engine's events as ``progress`` lines, by fraction."""

    name = "progress"

    def __init__(self, say: Callable[[str], None], labels: dict[str, FractionLabel]) -> None:
        self.say = say
        self.labels = labels
        self.by_trial: dict[int, FractionLabel] = {}

    def _of(self, trial: TrialView) -> FractionLabel | None:
        label = self.labels.get(str(trial.request.train_file))
        if label is not None:
            self.by_trial[trial.number] = label
        return label

    def trial_started(self, e: TrialStarted) -> None:
        self._of(e.trial)

    def trial_submitted(self, e: TrialSubmitted) -> None:
        label = self._of(e.trial)
        if label is not None:
            self.say(f"{label.fraction * 100:g}% of the data ({label.n_examples} examples): "
                     f"job {e.job_id}")  # fmt: skip

    def trial_finished(self, e: TrialFinished) -> None:
        label = self._of(e.trial)
        if label is not None:
            shown = f"{e.value:.4f}" if e.value is not None else (e.error or e.state)
            self.say(f"{label.fraction * 100:g}% of the data: {shown}")

    def note(self, e: Note) -> None:
        label = self.by_trial.get(e.trial) if e.trial is not None else None
        if label is None:
            return  # the sweep-level notes of each fraction's run are the engine's business
        prefix = "warning: " if e.level == "warning" else ""
        self.say(f"{prefix}{label.fraction * 100:g}% of the data: {e.text}")

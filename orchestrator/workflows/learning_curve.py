"""Would more data help? The sweep's best configuration trained on growing fractions of the
training data, and a power law fitted to the validation loss.

:func:`learning_curve` reads the best trial of the sweep's study (a sweep that never ran, or
has no completed trial, is an error telling to run it first), writes nested random subsets of
the training file (12.5, 25, 50 and 100 % by default; the batch size keeps its share of the
examples, at least 1; the validation file is the sweep's), estimates what the jobs cost and
refuses, before anything is uploaded, when that is over the sweep's budget, then trains them
on the sweep's backend (``parallel`` at a time) and tracks them in the sweep's MLflow
experiment: one parent run tagged ``ftsweep.kind = learning-curve`` with the plot and the fit,
one child run per fraction with its step metrics.

The fit (:func:`fit_power_law`): ``loss(n) = a * n**-b + c`` by least squares on
``log(loss - c)`` against ``log n`` for a grid of floors ``0 <= c < min(loss)``, keeping the
floor whose curve is closest to the points; the answer (:meth:`Fit.verdict`) says whether a
doubling of the data is predicted to lower the validation loss by at least
:data:`WORTH_PCT` per cent.
"""

from __future__ import annotations

import json
import math
import random
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from orchestrator.core.errors import OrchestratorError

__all__ = ["Fit", "LearningCurve", "Point", "fit_power_law", "learning_curve"]

FRACTIONS = (0.125, 0.25, 0.5, 1.0)
#: a doubling must lower the validation loss by this much (per cent) to be worth it
WORTH_PCT = 2.0
KIND = "learning-curve"


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
class Fit:
    """``loss(n) = a * n**-b + c`` (``c`` the floor)."""

    a: float
    b: float
    c: float
    n_max: int
    rmse: float

    def predict(self, n: float) -> float:
        return float(self.a * n**-self.b + self.c)

    @property
    def doubling_gain(self) -> float:
        """How much lower the loss is predicted at twice the largest size."""
        return self.predict(self.n_max) - self.predict(2 * self.n_max)

    def verdict(self, metric: str) -> str:
        now = self.predict(self.n_max)
        gain = self.doubling_gain
        pct = 100 * gain / now if now > 0 else 0.0
        n2 = 2 * self.n_max
        law = f"{metric} ~ {self.a:.3g}*n^-{self.b:.3g} + {self.c:.3g}"
        if self.b <= 0 or gain <= 0:
            return f"more data: not worth it: {metric} does not fall with more examples ({law})"
        worth = "worth it" if pct >= WORTH_PCT else "not worth it"
        return (
            f"more data: {worth}: doubling to {n2} examples would lower {metric} by about "
            f"{gain:.3g} ({pct:.1f} %), from {now:.4g} to {now - gain:.4g} ({law})"
        )


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
        return {
            "sweep": self.sweep,
            "trial": self.trial,
            "metric": self.metric,
            "points": [p.__dict__ for p in self.points],
            "fit": None if self.fit is None else self.fit.__dict__,
            "answer": self.answer,
            "plot": str(self.plot),
            "mlflow_run_id": self.parent_run_id,
        }


def fit_power_law(points: Sequence[tuple[float, float]]) -> Fit | None:
    """The power law with a floor closest to ``(n, loss)`` points (None for fewer than 2
    usable points). With 2 points the floor is 0."""
    usable = sorted((n, y) for n, y in points if n > 0 and y is not None and math.isfinite(y))
    if len(usable) < 2 or len({n for n, _ in usable}) < 2:
        return None
    low = min(y for _, y in usable)
    floors = [0.0] if len(usable) < 3 or low <= 0 else [low * i / 50 for i in range(50)]
    best: Fit | None = None
    xs = [math.log(n) for n, _ in usable]
    for c in floors:
        if any(y - c <= 0 for _, y in usable):
            continue
        ys = [math.log(y - c) for _, y in usable]
        mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
        sxx = sum((x - mx) ** 2 for x in xs)
        slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx
        a = math.exp(my - slope * mx)
        fit = Fit(a, -slope, c, int(max(n for n, _ in usable)), 0.0)
        rmse = math.sqrt(sum((fit.predict(n) - y) ** 2 for n, y in usable) / len(usable))
        fit = replace(fit, rmse=rmse)
        if best is None or rmse < best.rmse - 1e-12:
            best = fit
    return best


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
        path = folder / f"{train.stem}.{f * 100:g}pct.jsonl"
        path.write_text("".join(lines[i] + "\n" for i in chosen), encoding="utf-8")
        paths.append(path)
    return paths


def _final(points: Sequence[Any], names: Sequence[str]) -> float | None:
    for name in names:
        values = [(p.step, p.value) for p in points if p.name == name and math.isfinite(p.value)]
        if values:
            return float(max(values)[1])
    return None


def _metric_names(objective: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    loss: tuple[str, ...] = ("full_valid_loss", "valid_loss")
    if objective in loss:
        loss = (objective, *(n for n in loss if n != objective))
    return loss, ("full_valid_mean_token_accuracy", "valid_mean_token_accuracy")


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
    training data, fit, plot (to ``out``, by default beside the job folders) and track it."""
    from orchestrator.backends.base import Hyperparameters, JobStatus, TrainingRequest
    from orchestrator.data.checks import check_file
    from orchestrator.plan.sweep import plan_sweep, preflight
    from orchestrator.results.read import open_results
    from orchestrator.stores.study import resolve_stores
    from orchestrator.tracking import Tracker
    from orchestrator.tracking.client import TAG

    if not fractions or any(not 0 < f <= 1 for f in fractions):
        from orchestrator.core.errors import UsageError

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
    fractions = sorted(set(fractions))
    subsets = _subsets(Path(spec.data.train), fractions, spec.seed, folder / "data")
    study = f"{results.study.study_name}.{KIND}"
    requests, estimates = [], []
    estimator = plan.make_backend(stores.workdir / "backends" / plan.backend.name)
    for i, (f, path) in enumerate(zip(fractions, subsets, strict=True)):
        stats, _, _ = check_file(path, plan.counter)
        share = max(1, round(hp.batch_size * stats.n_examples / plan.train.n_examples))
        base = plan.request(replace(hp, batch_size=share), trial=i)
        request = TrainingRequest.make(
            study=study,
            trial=i,
            model=base.model,
            hyperparameters=base.hyperparameters,
            train_file=path,
            valid_file=base.valid_file,
            seed=base.seed,
            options=base.options,
            metadata={"ftsweep_study": study, "ftsweep_trial": str(i)},
        )
        estimator.check(request)
        estimates.append(estimator.estimate_cost(request, stats))
        requests.append((f, stats.n_examples, request))
    cap = budget_usd if budget_usd is not None else spec.budget_usd
    priced = [e for e in estimates if e is not None]
    total = round(sum(priced), 4) if priced else None
    if cap is not None and total is not None and total > cap:
        raise BudgetExceededError(
            f"the learning curve would cost about ${total:.2f} ({len(requests)} jobs), over "
            f"the budget of ${cap:.2f}: nothing was started (raise --budget, or fewer "
            "--fractions)"
        )
    if total is not None:
        progress(f"estimated cost: ${total:.2f} for {len(requests)} jobs")
    backend = plan.make_backend(stores.workdir / "backends" / plan.backend.name)
    preflight(backend)
    tracker = Tracker(stores.mlflow, spec.name, stores.artifacts)
    loss_names, acc_names = _metric_names(spec.objective.metric)
    parent = tracker.new_run(
        f"{results.study.study_name}-{KIND}",
        {
            f"{TAG}kind": KIND,
            f"{TAG}learning_curve": "true",
            f"{TAG}study": study,
            f"{TAG}source_trial": str(best.number),
            f"{TAG}backend": plan.backend.name,
        },
    )
    tracker.log(
        parent,
        params={**hp.as_dict(), "fractions": ",".join(f"{f:g}" for f in fractions)},
        tags={f"{TAG}state": "RUNNING"},
    )
    points = _train_all(
        backend,
        tracker,
        parent,
        requests,
        spec.parallel,
        getattr(plan.options, "poll_interval", (1.0, 30.0)),
        (loss_names, acc_names, estimates),
        progress,
        sleep,
        JobStatus,
    )
    metric = loss_names[0]
    fit = fit_power_law([(p.n_examples, p.loss) for p in points if p.loss is not None])
    answer = (
        fit.verdict(metric)
        if fit is not None
        else "more data: cannot say: fewer than two fractions finished with a validation loss"
    )
    logged = folder / "learning_curve.png"
    _plot(points, fit, metric, logged, f"{spec.name}: trial {best.number} on more data")
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
        parent,
        tracker.experiment_id,
    )
    tracker.log_file(parent, logged)
    tracker.log_text(parent, json.dumps(curve.as_dict(), indent=2), "learning_curve.json")
    metrics: dict[str, float] = {}
    if fit is not None:
        metrics = {"power_law_a": fit.a, "power_law_b": fit.b, "power_law_floor": fit.c}
        metrics["doubling_gain"] = fit.doubling_gain
    tracker.log(parent, metrics=metrics, tags={f"{TAG}state": "FINISHED", f"{TAG}answer": answer})
    ok = any(p.status == "succeeded" for p in points)
    tracker.finish(parent, "FINISHED" if ok else "FAILED")
    return curve


def _train_all(
    backend: Any,
    tracker: Any,
    parent: str,
    requests: list[tuple[float, int, Any]],
    parallel: int,
    poll_interval: tuple[float, float],
    names: tuple[tuple[str, ...], tuple[str, ...], list[float | None]],
    progress: Callable[[str], None],
    sleep: Callable[[float], None],
    status_enum: Any,
) -> list[Point]:
    """Submit the jobs (``parallel`` at a time), poll them to the end, log each as a child
    run; the points in fraction order. Ctrl-C cancels the jobs in flight."""
    running: dict[int, dict[str, Any]] = {}
    try:
        return _loop(
            backend,
            tracker,
            parent,
            requests,
            parallel,
            poll_interval,
            names,
            progress,
            sleep,
            status_enum,
            running,
        )
    except KeyboardInterrupt:  # cancel what runs (paid jobs cost), then let it go up
        for job in running.values():
            backend.cancel(job["handle"])
            tracker.finish(job["run"], "KILLED")
        tracker.finish(parent, "KILLED")
        raise


def _loop(
    backend: Any,
    tracker: Any,
    parent: str,
    requests: list[tuple[float, int, Any]],
    parallel: int,
    poll_interval: tuple[float, float],
    names: tuple[tuple[str, ...], tuple[str, ...], list[float | None]],
    progress: Callable[[str], None],
    sleep: Callable[[float], None],
    status_enum: Any,
    running: dict[int, dict[str, Any]],
) -> list[Point]:
    from orchestrator.tracking.client import TAG

    loss_names, acc_names, estimates = names
    pending = list(enumerate(requests))
    done: dict[int, Point] = {}
    delay = poll_interval[0]
    while pending or running:
        while pending and len(running) < parallel:
            i, (f, n, request) = pending.pop(0)
            hp = request.hyperparameters
            run_id = tracker.new_run(
                f"{f * 100:g}% ({n} examples)",
                {
                    "mlflow.parentRunId": parent,
                    f"{TAG}kind": KIND,
                    f"{TAG}learning_curve": "true",
                    f"{TAG}fraction": f"{f:g}",
                    f"{TAG}trial": str(i),
                },
            )
            tracker.log(run_id, params={**hp.as_dict(), "fraction": f, "n_examples": n})
            handle = backend.submit(request)
            tracker.log(run_id, tags={f"{TAG}job_id": handle.job_id})
            progress(f"{f * 100:g}% of the data ({n} examples): job {handle.job_id}")
            running[i] = {
                "f": f,
                "n": n,
                "hp": hp,
                "handle": handle,
                "run": run_id,
                "cursor": None,
                "points": [],
            }
        sleep(delay)
        delay = min(poll_interval[1], delay * 1.5)  # backs off while nothing moves
        for i, job in list(running.items()):
            update = backend.poll(job["handle"], job["cursor"])
            job["cursor"] = update.cursor
            if update.points or update.status.terminal:
                delay = poll_interval[0]
            if update.points:
                job["points"].extend(update.points)
                tracker.log_points(job["run"], update.points)
            if not update.status.terminal:
                continue
            del running[i]
            ok = update.status == status_enum.SUCCEEDED
            loss = _final(job["points"], loss_names) if ok else None
            acc = _final(job["points"], acc_names) if ok else None
            point = Point(
                job["f"],
                job["n"],
                job["hp"].batch_size,
                loss,
                acc,
                str(update.status),
                job["handle"].job_id,
                job["run"],
                update.cost_usd or estimates[i],
            )
            done[i] = point
            final = {
                k: v
                for k, v in (("valid_loss_final", loss), ("accuracy_final", acc))
                if v is not None
            }
            tracker.log(job["run"], metrics=final, tags={f"{TAG}state": str(update.status)})
            tracker.finish(job["run"], "FINISHED" if ok else "FAILED")
            shown = f"{loss:.4f}" if loss is not None else (update.error or str(update.status))
            progress(f"{job['f'] * 100:g}% of the data: {shown}")
    return [done[i] for i in sorted(done)]


def _plot(points: Sequence[Point], fit: Fit | None, metric: str, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [p for p in points if p.loss is not None]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot([p.n_examples for p in done], [p.loss or 0.0 for p in done], "o-", label=metric)
    if fit is not None:
        lo = min(p.n_examples for p in done)
        xs = [lo * (2 * fit.n_max / lo) ** (i / 60) for i in range(61)]
        ax.plot(xs, [fit.predict(x) for x in xs], "--", label="power law (to 2x the data)")
    ax.set_xscale("log")
    ax.set_xlabel("training examples")
    ax.set_ylabel(metric)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    accuracy = [p for p in done if p.accuracy is not None]
    if accuracy:
        ax2 = ax.twinx()
        ax2.plot(
            [p.n_examples for p in accuracy],
            [p.accuracy or 0.0 for p in accuracy],
            "s:",
            color="tab:green",
            label="token accuracy",
        )
        ax2.set_ylabel("token accuracy")
        ax2.legend(loc="upper right")
    ax.legend(loc="upper left" if accuracy else "best")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)

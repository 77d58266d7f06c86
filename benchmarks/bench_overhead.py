"""Per-trial CPU of ``ftsweep run`` against two hand-written Optuna + MLflow loops.

ftsweep's instant backend (:mod:`orchestrator.testing.instant`, registered by entry point
from a temporary ``*.dist-info`` as a third-party one is) reports 100 step metrics per trial
(:data:`OPTIONS`: no ``epoch`` metric), each job moving on by one epoch a poll; every store
is embedded
(SQLite for Optuna and MLflow, artifacts on disk). Each variant runs in its own process, in
its own folder, and measures the CPU seconds (user + system) of its trial loop only:

* **tutorial**: Optuna's ``study.optimize`` with ``mlflow.log_metric`` per point (the way
  most tutorials log a curve);
* **careful**: the loop a careful user writes: ``study.optimize``, one ``MlflowClient``
  run per trial and one ``log_batch`` of all its points, params and tags;
* **ftsweep**: :func:`orchestrator.workflows.sweep.run_sweep` in-process, from the first trial's
  start to the last one's end (what comes once per sweep is reported apart).

``careful`` and ``ftsweep`` run back to back, five rounds of 20 trials (full: seven of 50),
the order swapped each round; each ratio is the median of the rounds' own ratios: on a
shared machine the host's speed drifts by up to 2x over minutes (unseen by the load
average), which a pair of runs seconds apart mostly shares.

Once per sweep (the whole process's CPU but its trial loop: interpreter, imports, stores,
the end-of-sweep report and plots), ftsweep against the careful loop: target 1.5x.

Then a no-op re-run: ``ftsweep run sweeps/tiny.yaml`` (the local trainer's built-in ``tiny``
model) on the finished sweep, as a fresh command (its imports included), against the sweep's
own first run: target under 2 s wall, no tokenizer (``torch``) loaded.

Reproduce: ``python benchmarks/bench_overhead.py [--quick]`` (or through ``run_all.py``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
for _p in (str(ROOT), str(ROOT / "benchmarks")):
    if _p not in sys.path:
        sys.path.insert(0, _p)

from benchmarks.common import Figure, cpu_seconds, median  # noqa: E402

#: the instant backend's options: 100 ``train_loss`` steps a job whatever its epochs, a
#: ``full_valid_loss`` at each epoch's end, no ``epoch`` metric, polled without waiting
OPTIONS: dict[str, Any] = {"total_steps": 100, "epoch_metric": False, "poll_seconds": 0.0}

SPACE: dict[str, dict[str, Any]] = {
    "n_epochs": {"low": 2, "high": 4},
    "batch_size": {"low": 1, "high": 8},
    "learning_rate_multiplier": {"low": 0.02, "high": 0.2, "log": True},
}


def _data(folder: Path) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)

    def rows(n: int, start: int) -> str:
        out = []
        for i in range(start, start + n):
            msgs = [
                {"role": "user", "content": f"What is {i} + {i + 1}?"},
                {"role": "assistant", "content": f"{2 * i + 1}"},
            ]
            out.append(json.dumps({"messages": msgs}) + "\n")
        return "".join(out)

    train, valid = folder / "train.jsonl", folder / "valid.jsonl"
    train.write_text(rows(200, 0))
    valid.write_text(rows(20, 1000))
    return train, valid


def write_spec(folder: Path, trials: int, name: str = "overhead") -> Path:
    import yaml

    train, valid = _data(folder / "data")
    spec = {
        "name": name,
        "data": {"train": str(train), "valid": str(valid)},
        "backend": {"name": "instant", "model": "instant", "options": OPTIONS},
        "space": SPACE,
        "trials": trials,
        "parallel": 1,
        "sampler": {"name": "tpe", "seed": 0},
    }
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


# -- the variants (each in its own process) ------------------------------------------------
def _suggest(trial: Any) -> tuple[int, int, float]:
    d = SPACE
    n = trial.suggest_int("n_epochs", d["n_epochs"]["low"], d["n_epochs"]["high"])
    bs = trial.suggest_int("batch_size", d["batch_size"]["low"], d["batch_size"]["high"])
    lo, hi = d["learning_rate_multiplier"]["low"], d["learning_rate_multiplier"]["high"]
    lr = trial.suggest_float("learning_rate_multiplier", lo, hi, log=True)
    return n, bs, lr


def _job(n: int, bs: int, lr: float) -> tuple[list[Any], float]:
    """The instant job's points, epoch by epoch as a poll would get them, and its value."""
    from orchestrator.backends.base import Hyperparameters
    from orchestrator.testing.instant import InstantOptions, epoch_points

    hp, opts = Hyperparameters(n, bs, lr), InstantOptions.model_validate(OPTIONS)
    pts: list[Any] = []
    for epoch in range(1, n + 1):
        pts += epoch_points(hp, epoch, opts)[0]
    return pts, pts[-1].value


def tutorial(folder: Path, trials: int) -> dict[str, float]:
    import mlflow
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    mlflow.set_tracking_uri(f"sqlite:///{folder}/mlflow.db")
    mlflow.set_experiment("tutorial")
    study = optuna.create_study(
        storage=f"sqlite:///{folder}/optuna.db", sampler=optuna.samplers.TPESampler(seed=0)
    )

    def objective(trial: optuna.Trial) -> float:
        n, bs, lr = _suggest(trial)
        with mlflow.start_run(run_name=f"t{trial.number}", nested=True):
            mlflow.log_params(trial.params)
            pts, value = _job(n, bs, lr)
            for p in pts:
                mlflow.log_metric(p.name, p.value, step=p.step)
            mlflow.log_metric("objective", value)
        return value

    with mlflow.start_run(run_name="sweep"):
        c0 = cpu_seconds()
        study.optimize(objective, n_trials=trials)
        loop = cpu_seconds() - c0
    return {"per_trial": loop / trials}


def careful(folder: Path, trials: int) -> dict[str, float]:
    import optuna
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param, RunTag

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    client = MlflowClient(tracking_uri=f"sqlite:///{folder}/mlflow.db")
    exp = client.create_experiment("careful")
    parent = client.create_run(exp, run_name="sweep").info.run_id
    study = optuna.create_study(
        storage=f"sqlite:///{folder}/optuna.db", sampler=optuna.samplers.TPESampler(seed=0)
    )

    def objective(trial: optuna.Trial) -> float:
        n, bs, lr = _suggest(trial)
        run = client.create_run(
            exp, run_name=f"t{trial.number}", tags={"mlflow.parentRunId": parent}
        ).info.run_id
        pts, value = _job(n, bs, lr)
        now = int(time.time() * 1000)
        metrics = [Metric(p.name, p.value, now, p.step) for p in pts]
        metrics.append(Metric("objective", value, now, 0))
        client.log_batch(
            run,
            metrics=metrics,
            params=[Param(k, str(v)) for k, v in trial.params.items()],
            tags=[RunTag("trial", str(trial.number))],
        )
        client.set_terminated(run)
        return value

    c0 = cpu_seconds()
    study.optimize(objective, n_trials=trials)
    loop = cpu_seconds() - c0
    client.set_terminated(parent)
    # once per sweep: the whole process (interpreter, imports, stores) but its trial loop
    return {"per_trial": loop / trials, "once": cpu_seconds() - loop}


def ftsweep(folder: Path, trials: int) -> dict[str, float]:
    os.environ["FTSWEEP_RUNS_DIR"] = str(folder / "mlruns")
    from orchestrator.engine.events import Listener, SweepStarted, TrialFinished
    from orchestrator.testing import instant
    from orchestrator.workflows.sweep import run_sweep

    instant.install(folder / "site")
    marks: dict[str, float] = {}

    class Marks(Listener):
        name = "marks"

        def handle(self, event: Any) -> None:
            if isinstance(event, SweepStarted):
                marks["start"] = cpu_seconds()
            elif isinstance(event, TrialFinished):
                marks["last"] = cpu_seconds()

    spec = write_spec(folder, trials)
    result = run_sweep(spec, listeners=[Marks()])
    total = cpu_seconds()  # the whole process, as the careful loop's
    done = sum(t.state.name == "COMPLETE" for t in result.study.trials)
    if done != trials:
        raise RuntimeError(f"{done} of {trials} trials completed")
    loop = marks["last"] - marks["start"]
    return {"per_trial": loop / trials, "once": total - loop}


def noop_resume(folder: Path, trials: int) -> dict[str, Any]:
    """The local ``tiny`` sweep (``sweeps/tiny.yaml``: the built-in random model, its data
    in ``data/tiny``) run to its end, then ``ftsweep run`` again as a fresh command three
    times: their median wall and CPU seconds (``trials`` is unused: the file's six)."""
    del trials
    env = {**os.environ, "FTSWEEP_RUNS_DIR": str(folder / "mlruns")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    spec = ROOT / "sweeps" / "tiny.yaml"
    exe = [sys.executable, "-m", "orchestrator", "run", str(spec)]
    t0 = time.perf_counter()
    first = subprocess.run(exe, env=env, capture_output=True, text=True)
    sweep = time.perf_counter() - t0
    if first.returncode:
        raise RuntimeError(f"the first run failed: {first.stderr.strip()[-500:]}")
    walls, cpus = [], []
    probe = "import sys, runpy; sys.argv = ['ftsweep', 'run', sys.argv[1]]\n"
    probe += "try:\n    runpy.run_module('orchestrator', run_name='__main__')\n"
    probe += "finally:\n    print('LOADED', 'torch' in sys.modules, 'transformers' in sys.modules)"
    loaded = ""
    for _ in range(3):
        t0, c0 = time.perf_counter(), cpu_seconds()
        again = subprocess.run(
            [sys.executable, "-c", probe, str(spec)], env=env, capture_output=True, text=True
        )
        walls.append(time.perf_counter() - t0)
        cpus.append(cpu_seconds() - c0)
        if again.returncode:
            raise RuntimeError(f"the resume failed: {again.stderr.strip()[-500:]}")
        loaded = next((ln for ln in again.stdout.splitlines() if ln.startswith("LOADED")), "")
    said = [line for line in again.stderr.splitlines() if "already complete" in line]
    t0 = time.perf_counter()
    bare = subprocess.run(
        [sys.executable, "-m", "orchestrator", "--help"], env=env, capture_output=True
    )
    start_s = time.perf_counter() - t0
    assert bare.returncode == 0
    return {
        "resume_s": median(walls),
        "resume_cpu": median(cpus),
        "sweep_s": sweep,
        "help_s": start_s,
        "torch": loaded.split()[1:2] == ["True"],
        "note": said[0][:120] if said else "",
    }


VARIANTS = {"tutorial": tutorial, "careful": careful, "ftsweep": ftsweep, "noop": noop_resume}


def _child(variant: str, trials: int) -> dict[str, Any]:
    """Run one variant in a fresh process and folder; its JSON answer."""
    with tempfile.TemporaryDirectory(prefix=f"bench-{variant}-") as tmp:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "benchmarks")])}
        env.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
        env.pop("MLFLOW_TRACKING_URI", None)
        env.pop("FTSWEEP_OPTUNA_STORAGE", None)
        out = subprocess.run(
            [sys.executable, __file__, "--variant", variant, "--trials", str(trials), tmp],
            env=env,
            capture_output=True,
            text=True,
        )
        if out.returncode:
            raise RuntimeError(f"{variant}: {out.stderr.strip().splitlines()[-1:]}")
        return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def run(quick: bool) -> list[Figure]:
    load_before = os.getloadavg()[0]
    trials, rounds = (20, 5) if quick else (50, 7)
    # careful and ftsweep run back to back in each round, in the other order the next round
    # (a shared host's speed drifts by 2x over minutes, unseen by the load average): each
    # ratio is the median of the rounds' own ratios, each figure the median of its rounds
    seen: dict[str, list[dict[str, float]]] = {"careful": [], "ftsweep": []}
    for i in range(rounds):
        order = ("careful", "ftsweep") if i % 2 == 0 else ("ftsweep", "careful")
        for variant in order:
            seen[variant].append(_child(variant, trials))
    tut = _child("tutorial", trials)
    ft = {k: median([r[k] for r in seen["ftsweep"]]) for k in ("per_trial", "once")}
    care = {k: median([r[k] for r in seen["careful"]]) for k in ("per_trial", "once")}
    paired = {
        k: [f[k] / c[k] for f, c in zip(seen["ftsweep"], seen["careful"], strict=True)]
        for k in ("per_trial", "once")
    }
    ratio = {k: median(v) for k, v in paired.items()}
    noop = _child("noop", 6)
    load = f"load (1 min) {load_before:.1f} before, {os.getloadavg()[0]:.1f} after"
    spread = ", ".join(
        f"{v} " + "/".join(f"{r['per_trial'] * 1000:.0f}" for r in runs) + " ms"
        for v, runs in seen.items()
    )
    pairs = "/".join(f"{r:.2f}" for r in paired["per_trial"])
    where = (
        f"{trials} trials, 100 step metrics each, {rounds} rounds, each variant's median "
        f"({spread}); ratio: median of the rounds' ratios ({pairs}); {load}"
    )
    onces = ", ".join(
        f"{v} " + "/".join(f"{r['once']:.1f}" for r in runs) + " s" for v, runs in seen.items()
    )
    return [
        Figure(
            "overhead: ftsweep CPU s/trial vs careful loop",
            ft["per_trial"],
            care["per_trial"],
            "s",
            "ratio <= 1.0",
            ratio["per_trial"] <= 1.0,
            ratio=ratio["per_trial"],
            note=where,
        ),
        Figure(
            "overhead: ftsweep once-per-sweep CPU s vs careful loop",
            ft["once"],
            care["once"],
            "s",
            "ratio <= 1.5",
            ratio["once"] <= 1.5,
            ratio=ratio["once"],
            note=f"the whole process but its trial loop (interpreter, imports, stores, the "
            f"end-of-sweep report and plots); {rounds} rounds ({onces}); ratio: median of "
            "the rounds' ratios (" + "/".join(f"{r:.2f}" for r in paired["once"]) + ")",
        ),
        Figure(
            "overhead: ftsweep CPU s/trial vs tutorial loop",
            ft["per_trial"],
            tut["per_trial"],
            "s",
            "ratio < 1.0",
            ft["per_trial"] < tut["per_trial"],
            note=f"{trials} trials; log_metric per point",
        ),
        Figure(
            "overhead: no-op re-run of the finished local tiny sweep (wall)",
            noop["resume_s"],
            noop["sweep_s"],
            "s",
            "< 2 s",
            noop["resume_s"] < 2.0,
            note=f"fresh `ftsweep run sweeps/tiny.yaml` incl. imports, median of 3, "
            f"{noop['resume_cpu']:.1f} s CPU, torch imported: {bool(noop['torch'])}; "
            f"`ftsweep --help` alone {noop['help_s']:.2f} s; said: {noop['note']!r}",
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--variant", choices=sorted(VARIANTS))
    parser.add_argument("--trials", type=int, default=50)
    parser.add_argument("folder", nargs="?")
    args = parser.parse_args()
    if args.variant:
        print(json.dumps(VARIANTS[args.variant](Path(args.folder), args.trials)))
        return
    for f in run(args.quick):
        r = f.ratio_or_computed()
        ratio = f"{r:.2f}x" if r is not None else "-"
        print(
            f"{f.name}: {f.value:.3f} {f.unit} (baseline {f.baseline}) {ratio} "
            f"target {f.target}: {'met' if f.met else 'NOT met'}  {f.note}"
        )


if __name__ == "__main__":
    main()

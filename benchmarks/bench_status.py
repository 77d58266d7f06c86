"""``ftsweep status`` and ``ftsweep report`` on a generated 10,000-trial study.

The study is made with Optuna's API (``optuna.trial.create_trial``; the rows Optuna's RDB
storage writes for them inserted in bulk, in one transaction) in an embedded SQLite store,
each trial with the ledger and outcome attributes a real sweep leaves (its request as JSON,
key, owner, job id, MLflow run id, cost, diagnosis, epoch values). Both commands read only
the Optuna study (no MLflow). Each is timed as a fresh command (its imports included, what a
user waits for; CPU seconds, since wall time on a shared machine is noise; both printed),
against the baseline a user would write: a fresh ``python -c`` that loads the same study and
prints ``study.trials_dataframe()``.

Reproduce: ``python benchmarks/bench_status.py [--quick] [--trials N]``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
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

from benchmarks.common import Figure, median  # noqa: E402

TARGET_S = 3.0
TRIALS = 10_000


def generate(folder: Path, n: int) -> Path:
    """A sweep file and its study of ``n`` finished trials; returns the sweep file."""
    import optuna
    import yaml

    from orchestrator.backends.base import Hyperparameters, TrainingRequest
    from orchestrator.core.attrs import TrialAttrs as A

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    url = f"sqlite:///{folder / 'optuna.db'}"
    name = "big"
    spec = {
        "name": name,
        "data": {"train": str(folder / "train.jsonl"), "valid": str(folder / "valid.jsonl")},
        "backend": {"name": "openai", "model": "gpt-4o-mini-2024-07-18"},
        "trials": n,
        "storage": {"optuna": url},
    }
    path = folder / "big.yaml"
    path.write_text(yaml.safe_dump(spec))
    dists = {
        "n_epochs": optuna.distributions.IntDistribution(2, 4),
        "batch_size": optuna.distributions.IntDistribution(1, 64, log=True),
        "learning_rate_multiplier": optuna.distributions.FloatDistribution(0.02, 0.2, log=True),
    }
    rng = random.Random(0)
    trials = []
    for i in range(n):
        params = {
            "n_epochs": rng.randint(2, 4),
            "batch_size": rng.randint(1, 64),
            "learning_rate_multiplier": 10 ** rng.uniform(-1.69, -0.71),
        }
        hp = Hyperparameters(**params)
        key = f"{name}-t{i}-{rng.getrandbits(64):016x}"
        request = TrainingRequest(
            key, "gpt-4o-mini-2024-07-18", hp, folder / "train.jsonl", folder / "valid.jsonl"
        )
        state = rng.choices(["COMPLETE", "PRUNED", "FAIL"], [8, 3, 1])[0]
        done = params["n_epochs"] if state == "COMPLETE" else rng.randint(1, params["n_epochs"])
        values = {e: 1.0 + rng.random() / e for e in range(1, done + 1)}
        attrs: dict[str, Any] = {
            A.REQUEST: request.to_json(),
            A.KEY: key,
            A.CONFIG_HASH: request.config_hash(),
            A.BACKEND: "openai",
            A.WORKER: "host:1234",
            A.HEARTBEAT: 1.8e9 + i,
            A.ESTIMATE: 0.4,
            A.BATCH_PCT: 0.5,
            A.JOB_ID: f"ftjob-{i:08d}",
            A.MLFLOW_RUN: f"{i:032x}",
            A.EPOCHS_DONE: done,
            A.COST: 0.1 * done,
            A.DIAGNOSIS: "good",
            A.RECOMMENDATION: "keep these settings",
            A.STEPS: 100 * done,
            A.JOB_STATUS: "succeeded" if state == "COMPLETE" else "cancelled",
        }
        if state == "FAIL":
            attrs[A.ERROR] = "the job failed: server_error"
        trials.append(
            optuna.trial.create_trial(
                state=optuna.trial.TrialState[state],
                value=values[done] if state == "COMPLETE" else None,
                params=params,
                distributions=dists,
                user_attrs=attrs,
                intermediate_values=values,
            )
        )
    study = optuna.create_study(study_name=name, storage=url)
    _add_trials(study, trials)
    return path


def _add_trials(study: Any, trials: list[Any]) -> None:
    """``study.add_trials(trials)``, fast: the rows Optuna's RDB storage writes for each
    ``FrozenTrial`` (its own models and stored representations), inserted in bulk in one
    transaction (``add_trials`` takes minutes for 10,000 trials on a busy machine). The
    benchmark then reads them only through Optuna and ftsweep, which check what they read."""
    import datetime

    from optuna.distributions import distribution_to_json
    from optuna.storages._rdb import models as m

    storage = getattr(study._storage, "_backend", study._storage)
    engine = storage.engine
    sid = study._study_id
    start = datetime.datetime(2026, 12, 1, 12, 0, 0)
    with engine.begin() as conn:
        conn.execute(
            m.TrialModel.__table__.insert(),
            [
                {
                    "number": t.number if t.number >= 0 else i,
                    "study_id": sid,
                    "state": t.state,
                    "datetime_start": start + datetime.timedelta(minutes=i),
                    "datetime_complete": start + datetime.timedelta(minutes=i + 1),
                }
                for i, t in enumerate(trials)
            ],
        )
        rows = conn.execute(
            m.TrialModel.__table__.select().where(m.TrialModel.__table__.c.study_id == sid)
        ).fetchall()
        ids = {r.number: r.trial_id for r in rows}
        params, values, attrs, steps = [], [], [], []
        for i, t in enumerate(trials):
            tid = ids[i]
            for name, value in t.params.items():
                dist = t.distributions[name]
                params.append(
                    {
                        "trial_id": tid,
                        "param_name": name,
                        "param_value": dist.to_internal_repr(value),
                        "distribution_json": distribution_to_json(dist),
                    }
                )
            if t.value is not None:
                stored, kind = m.TrialValueModel.value_to_stored_repr(t.value)
                values.append(
                    {"trial_id": tid, "objective": 0, "value": stored, "value_type": kind}
                )
            for key, value in t.user_attrs.items():
                attrs.append({"trial_id": tid, "key": key, "value_json": json.dumps(value)})
            for step, value in t.intermediate_values.items():
                stored, kind = m.TrialIntermediateValueModel.intermediate_value_to_stored_repr(
                    value
                )
                steps.append(
                    {
                        "trial_id": tid,
                        "step": step,
                        "intermediate_value": stored,
                        "intermediate_value_type": kind,
                    }
                )
        conn.execute(m.TrialParamModel.__table__.insert(), params)
        if values:
            conn.execute(m.TrialValueModel.__table__.insert(), values)
        conn.execute(m.TrialUserAttributeModel.__table__.insert(), attrs)
        conn.execute(m.TrialIntermediateValueModel.__table__.insert(), steps)


def _timed(cmd: list[str], env: dict[str, str], times: int) -> tuple[float, float, str]:
    """The median CPU seconds (user + system) and wall seconds of ``cmd``, and its output."""
    cpus, walls, out = [], [], ""
    for _ in range(times):
        c0, t0 = _children_cpu(), time.perf_counter()
        got = subprocess.run(cmd, env=env, capture_output=True, text=True)
        walls.append(time.perf_counter() - t0)
        cpus.append(_children_cpu() - c0)
        if got.returncode:
            raise RuntimeError(f"{' '.join(cmd[:4])}: {got.stderr.strip()[-300:]}")
        out = got.stdout
    return median(cpus), median(walls), out


def _children_cpu() -> float:
    import resource

    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return kids.ru_utime + kids.ru_stime


def run(quick: bool, trials: int = TRIALS) -> list[Figure]:
    times = 1 if quick else 3
    with tempfile.TemporaryDirectory(prefix="bench-status-") as tmp:
        folder = Path(tmp)
        t0 = time.perf_counter()
        spec = generate(folder, trials)
        made = time.perf_counter() - t0
        env = {**os.environ, "PYTHONPATH": str(ROOT), "FTSWEEP_RUNS_DIR": str(folder)}
        url = f"sqlite:///{folder / 'optuna.db'}"
        code = (
            "import optuna; optuna.logging.set_verbosity(optuna.logging.WARNING); "
            f"s = optuna.load_study(study_name='big', storage={url!r}); "
            "print(s.trials_dataframe().to_string())"
        )
        base, base_wall, _ = _timed([sys.executable, "-c", code], env, times)
        ftsweep = [sys.executable, "-m", "orchestrator"]
        status, status_wall, text = _timed([*ftsweep, "status", str(spec)], env, times)
        if f"(of {trials})" not in text.splitlines()[0]:
            raise RuntimeError(f"unexpected status: {text.splitlines()[0]}")
        cmd = [*ftsweep, "report", str(spec), "--format", "json"]
        report, report_wall, text = _timed(cmd, env, times)
        if len(json.loads(text)) != trials:
            raise RuntimeError("the report does not list every trial")
    note = (
        f"{trials} trials (generated in {made:.0f} s); CPU s of a fresh command; baseline: "
        "load_study + trials_dataframe(); wall s (busy machine): "
    )
    return [
        Figure(
            f"status: `ftsweep status` on {trials} trials (CPU)",
            status,
            base,
            "s",
            f"< {TARGET_S:g} s",
            status < TARGET_S,
            note=note + f"{status_wall:.1f} vs {base_wall:.1f}",
        ),
        Figure(
            f"status: `ftsweep report --format json` on {trials} trials (CPU)",
            report,
            base,
            "s",
            f"< {TARGET_S:g} s",
            report < TARGET_S,
            note=note + f"{report_wall:.1f} vs {base_wall:.1f}",
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--trials", type=int, default=TRIALS)
    args = parser.parse_args()
    for f in run(args.quick, args.trials):
        r = f.ratio_or_computed()
        print(
            f"{f.name}: {f.value:.2f} {f.unit} (baseline {f.baseline:.2f}) "
            f"{r:.2f}x, target {f.target}: {'met' if f.met else 'NOT met'}; {f.note}"
        )


if __name__ == "__main__":
    main()

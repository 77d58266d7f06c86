"""What "the stores agree" means, checked on the stores themselves after a sweep."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import optuna
from mlflow import MlflowClient

STATUS = {"COMPLETE": "FINISHED", "PRUNED": "KILLED", "FAIL": "FAILED"}
_TEMPLATE: list[Path] = []


def seed_mlflow(runs_dir: Path) -> None:
    """Put an empty, migrated MLflow store where a sweep will look (creating one runs a
    minute of migrations on a busy 2-core machine; these tests make dozens)."""
    import shutil
    import tempfile

    if not _TEMPLATE:
        folder = Path(tempfile.mkdtemp(prefix="mlflow-template-"))
        MlflowClient(tracking_uri=f"sqlite:///{folder / 'mlflow.db'}").search_experiments()
        _TEMPLATE.append(folder / "mlflow.db")
    runs_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(_TEMPLATE[0], runs_dir / "mlflow.db")


@dataclass
class Findings:
    """Every disagreement found (empty lists: the stores agree)."""

    running_trials: list[int] = field(default_factory=list)
    mismatches: list[str] = field(default_factory=list)
    duplicated_steps: list[str] = field(default_factory=list)
    lost_steps: list[str] = field(default_factory=list)
    shifted_intermediates: list[str] = field(default_factory=list)
    trials: int = 0

    def problems(self) -> list[str]:
        out = [f"trial {n} left RUNNING" for n in self.running_trials]
        return (
            out
            + self.mismatches
            + self.duplicated_steps
            + self.lost_steps
            + (self.shifted_intermediates)
        )


def check(
    runs_dir: Path | None,
    name: str,
    study: optuna.Study | None = None,
    tracking_uri: str | None = None,
) -> tuple[optuna.Study, Findings]:
    """Compare the Optuna study (by default the embedded one) and MLflow of sweep ``name``
    under ``runs_dir`` (or at ``tracking_uri``, a tracking server)."""
    if study is None:
        assert runs_dir is not None
        study = optuna.load_study(study_name=name, storage=f"sqlite:///{runs_dir / 'optuna.db'}")
    if tracking_uri is None:
        assert runs_dir is not None
        tracking_uri = f"sqlite:///{runs_dir / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=tracking_uri)
    exp = client.get_experiment_by_name(name)
    runs = client.search_runs([exp.experiment_id], max_results=10000)
    found = Findings(trials=len(study.trials))
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    if len(parents) != 1:
        found.mismatches.append(f"{len(parents)} parent runs")
    children: dict[int, list[object]] = {}
    for r in runs:
        if "mlflow.parentRunId" in r.data.tags:
            children.setdefault(int(r.data.tags["ftsweep.trial"]), []).append(r)
    for t in study.trials:
        if t.state.name == "RUNNING":
            found.running_trials.append(t.number)
            continue
        mine = children.get(t.number, [])
        trained = "ftsweep.job_id" in t.user_attrs
        if len(mine) > 1:
            found.mismatches.append(f"trial {t.number}: {len(mine)} MLflow runs")
        if not mine:
            if trained:
                found.mismatches.append(f"trial {t.number}: trained, but no MLflow run")
            continue
        run = mine[0]
        info, data = run.info, run.data  # type: ignore[attr-defined]
        if info.status != STATUS.get(t.state.name):
            found.mismatches.append(
                f"trial {t.number}: Optuna {t.state.name}, MLflow run {info.status}"
            )
        if data.tags.get("ftsweep.state") != t.state.name:
            found.mismatches.append(
                f"trial {t.number}: state tag {data.tags.get('ftsweep.state')} != {t.state.name}"
            )
        if t.state.name == "COMPLETE" and data.metrics.get("objective") != t.value:
            found.mismatches.append(
                f"trial {t.number}: objective {data.metrics.get('objective')} != {t.value}"
            )
        _curves(client, info.run_id, t, found)
    return study, found


def _curves(
    client: MlflowClient, run_id: str, t: optuna.trial.FrozenTrial, found: Findings
) -> None:
    histories = {}
    for name in ("train_loss", "epoch", "full_valid_loss", "valid_loss"):
        histories[name] = [(m.step, m.value) for m in client.get_metric_history(run_id, name)]
        twice = [s for s, n in Counter(s for s, _ in histories[name]).items() if n > 1]
        if twice:
            found.duplicated_steps.append(f"trial {t.number}: {name} steps {twice[:5]} twice")
    steps = sorted(s for s, _ in histories["train_loss"])
    if steps and steps != list(range(steps[0], steps[-1] + 1)):
        found.lost_steps.append(f"trial {t.number}: train_loss steps have gaps")
    ends = {round(v): s for s, v in histories["epoch"] if v >= 1 and abs(v - round(v)) < 1e-6}
    evals = dict(histories["full_valid_loss"] or histories["valid_loss"])
    for epoch, value in t.intermediate_values.items():
        step = ends.get(epoch)
        if step is None or step not in evals:
            continue
        if abs(evals[step] - value) > 1e-9:
            found.shifted_intermediates.append(
                f"trial {t.number}: intermediate value of epoch {epoch} is {value}, "
                f"its evaluation {evals[step]}"
            )

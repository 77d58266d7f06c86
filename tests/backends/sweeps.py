"""Real sweeps on ``sweeps/tiny.yaml`` for the local backend's scheduling tests: the file
copied with its data written and some fields changed, run in stores of its own."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import optuna
import yaml

from orchestrator.backends.local.jobfiles import JobFolder
from orchestrator.backends.local.tasks import write_task
from orchestrator.core.attrs import TrialAttrs

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "sweeps" / "tiny.yaml"


def tiny_sweep(folder: Path, options: dict[str, Any] | None = None, **fields: Any) -> Path:
    """``sweeps/tiny.yaml`` with its data (the reverse task, 160/40/40, as its comment says)
    written under ``folder``, ``options`` added to ``backend.options`` and ``fields`` set."""
    spec = yaml.safe_load(TINY.read_text())
    train, valid, test = write_task("reverse", folder / "data", n_train=160, n_valid=40, n_test=40)
    spec["data"] = {"train": str(train), "valid": str(valid)}
    spec["evaluate"]["file"] = str(test)
    spec["backend"]["options"] = {**spec["backend"]["options"], **(options or {})}
    spec.update(fields)
    path = folder / "tiny.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def study(runs_dir: Path, name: str = "tiny") -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{runs_dir / 'optuna.db'}")


def job_folder(runs_dir: Path, trial: optuna.trial.FrozenTrial) -> JobFolder:
    """The job folder of ``trial``'s local job."""
    return JobFolder(runs_dir / "backends" / "local" / "jobs" / trial.user_attrs[TrialAttrs.JOB_ID])


def trained_epochs(folder: JobFolder) -> list[float]:
    """The ``epoch`` value of every step the job trained, in order."""
    lines = folder.metrics_file.read_text().splitlines()
    return [float(json.loads(line)["epoch"]) for line in lines if '"epoch"' in line]

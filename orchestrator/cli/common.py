"""What the sweep commands share: the SPEC argument, quiet libraries, the MLflow link."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

__all__ = ["SpecArg", "quiet_libraries", "ui_hint"]

SpecArg = Annotated[Path, typer.Argument(metavar="SPEC", help="Sweep file (YAML).")]


def quiet_libraries() -> None:
    import logging
    import os

    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    for name in ("mlflow", "alembic", "optuna"):
        logging.getLogger(name).setLevel(logging.WARNING)


def ui_hint(tracking_uri: str, experiment_id: str, spec: Path, direction: str) -> str:
    from orchestrator.tracking import runs_link

    if tracking_uri.startswith(("http://", "https://")):
        return f"MLflow: {runs_link(tracking_uri, experiment_id, direction)}"
    link = runs_link("http://127.0.0.1:5000", experiment_id, direction)
    return f"MLflow: run `ftsweep ui {spec}`, then open {link}"

"""``ftsweep status``, ``report``, ``best`` and ``ui``: read a sweep's results."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from orchestrator.cli.common import SpecArg, quiet_libraries
from orchestrator.cli.output import out

__all__ = ["register"]


def status(spec: SpecArg) -> None:
    """Show a sweep's progress: trials by state and each trial so far (reads only).

    Example: ftsweep status sweeps/quickstart.yaml
    """
    quiet_libraries()
    from orchestrator.report import render
    from orchestrator.results import open_results

    results = open_results(spec)
    counts = results.counts()
    shown = ", ".join(f"{n} {state.lower()}" for state, n in counts.items()) or "no trials yet"
    gen = results.generation
    which = f" (generation {gen}: {results.study.study_name})" if gen > 1 else ""
    out.data(f"sweep {results.spec.name}{which}: {shown} (of {results.spec.trials})")
    if counts:
        out.data(render(results.frame(), "table"))


def report(
    spec: SpecArg,
    fmt: Annotated[
        str, typer.Option("--format", help="table, csv, json, markdown or html.")
    ] = "table",
    out_file: Annotated[Path | None, typer.Option("--out", help="Write to this file.")] = None,
) -> None:
    """Report the sweep's trials: parameters, objective, diagnosis, cost (reads only).

    Example: ftsweep report sweeps/quickstart.yaml --format json --out trials.json
    """
    quiet_libraries()
    from orchestrator.errors import UsageError
    from orchestrator.report import FORMATS, render
    from orchestrator.results import open_results

    if fmt not in FORMATS:
        raise UsageError(f"--format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    text = render(open_results(spec).frame(), fmt)
    if out_file is None:
        out.data(text)
        return
    tmp = out_file.with_name(f".{out_file.name}.tmp")
    tmp.write_text(text + ("" if text.endswith("\n") else "\n"))
    tmp.replace(out_file)
    out.info(f"wrote {out_file}")


def best(
    spec: SpecArg,
    code: Annotated[
        bool, typer.Option("--code", help="Print only the sample call (Python), ready to paste.")
    ] = False,
) -> None:
    """Print the best trial's hyper-parameters, value, model and inference recipe as JSON.

    The recipe: the model to call, the separator to append to prompts and the stop sequences
    as in the training data, and a sample call for the backend's SDK (``--code`` prints only
    that). Of a retuned sweep: the current generation's (the latest that produced a model).
    Reads only.

    Example: ftsweep best sweeps/quickstart.yaml --code > call.py
    """
    quiet_libraries()
    from orchestrator.attrs import StudyAttrs, TrialAttrs
    from orchestrator.errors import OrchestratorError
    from orchestrator.recipe import recipe_of_trial
    from orchestrator.results import open_results

    results = open_results(spec, current=True)
    trial = results.best()
    if trial is None:
        raise OrchestratorError(f"sweep {results.spec.name!r} has no completed trial yet")
    recipe = recipe_of_trial(results.spec.backend.name, trial)
    if code:
        if recipe is None:
            raise OrchestratorError(f"trial {trial.number} of {results.spec.name!r} kept no model")
        out.data(recipe.sample_call().rstrip("\n"))
        return
    recipe_data = None
    if recipe is not None:
        recipe_data = {**recipe.as_dict(), "sample_call": recipe.sample_call()}
        attrs = results.study.user_attrs
        if attrs.get(StudyAttrs.REGISTERED_TRIAL) == trial.number:
            version = attrs.get(StudyAttrs.REGISTERED_VERSION)
            recipe_data["registered_model"] = f"models:/{results.spec.name}/{version}"
    out.data(
        json.dumps(
            {
                "trial": trial.number,
                "generation": results.generation,
                "study": results.study.study_name,
                "objective": results.spec.objective.metric,
                "value": trial.value,
                "hyperparameters": results.hyperparameters(trial),
                "diagnosis": trial.user_attrs.get(TrialAttrs.DIAGNOSIS),
                "recommendation": trial.user_attrs.get(TrialAttrs.RECOMMENDATION),
                "fine_tuned_model": trial.user_attrs.get(TrialAttrs.FINE_TUNED_MODEL),
                "mlflow_run_id": trial.user_attrs.get(TrialAttrs.MLFLOW_RUN),
                "recipe": recipe_data,
            },
            indent=2,
        )
    )


def ui(
    spec: SpecArg,
    port: Annotated[int, typer.Option(help="Port of the MLflow UI.")] = 5000,
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
) -> None:
    """Start the MLflow UI on the sweep's store and print the link to its runs.

    Example: ftsweep ui sweeps/quickstart.yaml --port 5000
    """
    quiet_libraries()
    import contextlib
    import os
    import signal
    import subprocess
    import sys

    from orchestrator.config import load_spec
    from orchestrator.engine.study import resolve_stores
    from orchestrator.tracking import Tracker, runs_link

    sweep = load_spec(spec)
    stores = resolve_stores(sweep)
    if stores.mlflow.startswith(("http://", "https://")):
        tracker = Tracker(stores.mlflow, sweep.name)
        out.data(runs_link(stores.mlflow, tracker.experiment_id, sweep.objective.direction))
        return
    tracker = Tracker(stores.mlflow, sweep.name, stores.artifacts)
    link = runs_link(f"http://{host}:{port}", tracker.experiment_id, sweep.objective.direction)
    out.data(link)
    out.info("starting the MLflow UI (Ctrl-C stops it) ...")
    cmd = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--backend-store-uri",
        stores.mlflow,
        "--host",
        host,
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    if stores.artifacts is not None:
        cmd += ["--artifacts-destination", str(stores.artifacts)]
    proc = subprocess.Popen(cmd, start_new_session=True)  # its workers: one process group

    def stop(*_: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)  # a terminated `ftsweep ui` stops its server too
    try:
        proc.wait()
    except KeyboardInterrupt:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)  # mlflow stops its workers on SIGTERM ...
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:  # ... slowly on a busy machine: then for sure
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        raise


def register(app: typer.Typer) -> None:
    for command in (status, report, best, ui):
        app.command()(command)

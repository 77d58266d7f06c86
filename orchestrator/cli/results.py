"""``ftsweep status``, ``report``, ``best`` and ``ui``: read a sweep's results."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from orchestrator.cli.common import SpecArg, quiet_libraries
from orchestrator.cli.output import out

__all__ = ["register"]


def status(spec: SpecArg) -> None:
    """Show a sweep's progress: trials by state and each trial so far (reads only).

    Example: ftsweep status sweeps/quickstart.yaml
    """
    quiet_libraries()
    from orchestrator.results.read import open_results
    from orchestrator.results.table import render

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
    imported: Annotated[
        bool,
        typer.Option("--imported", help="Report the provider's jobs `ftsweep import` wrote."),
    ] = False,
    every: Annotated[
        bool,
        typer.Option(
            "--all", help="Every Optuna trial, derived epochs included (default: one per job)."
        ),
    ] = False,
) -> None:
    """Report the sweep's trials: parameters, objective, diagnosis, cost (reads only).

    The table, markdown and HTML show one row per job, with its objective at each epoch
    end; the earlier epochs told as trials of their own are folded under it (``--all``
    shows each). CSV and JSON keep every trial, marked ``derived`` and ``job_trial``. With
    several objectives the trials on the Pareto front are marked ``front``.

    Example: ftsweep report sweeps/quickstart.yaml --format json --out trials.json
    """
    quiet_libraries()
    from orchestrator.core.errors import UsageError
    from orchestrator.results.read import open_results
    from orchestrator.results.table import FORMATS, jobs_frame, render

    if fmt not in FORMATS:
        raise UsageError(f"--format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    study = None
    if imported:
        from orchestrator.config import load_spec

        study = f"{load_spec(spec).name}.imported"
    if fmt == "html":  # the page with the summary, plots and advice
        from orchestrator.results.read import html_report

        text = html_report(str(spec), study, every=every)
    else:
        frame = open_results(spec, study=study).frame()
        if fmt in ("table", "markdown") and not every:
            frame = jobs_frame(frame)
        text = render(frame, fmt)
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
    by: Annotated[
        str | None,
        typer.Option(
            "--by",
            metavar="METRIC",
            help="Rank by a task metric that ftsweep evaluate logged (eval_exact_match...), "
            "highest first, instead of the objective.",
        ),
    ] = None,
    pick_policy: Annotated[
        str | None,
        typer.Option(
            "--pick",
            help="best | 'cheapest-within PCT' | knee: how the winner is chosen among the "
            "Pareto front (default: best with one objective, 'cheapest-within 2' with several).",
        ),
    ] = None,
) -> None:
    """Print the best trial's hyper-parameters, value, model and inference recipe as JSON.

    The recipe: the model to call, the separator to append to prompts and the stop sequences
    as in the training data, and a sample call for the backend's SDK (``--code`` prints only
    that). Of a retuned sweep: the current generation's (the latest that produced a model).
    Reads only.

    An earlier epoch that kept no model is shown with how to get it; its recipe is then the
    best trial's that has one.

    With several objectives the winner is one trial of the Pareto front, chosen by
    ``--pick`` (see the README); the output names the policy and why it chose that trial.

    Example: ftsweep best sweeps/quickstart.yaml --code > call.py
    """
    quiet_libraries()
    from orchestrator.core.attrs import StudyAttrs, TrialAttrs
    from orchestrator.core.errors import OrchestratorError, UsageError
    from orchestrator.results.front import primary_value
    from orchestrator.results.read import open_results, parse_policy
    from orchestrator.tracking.recipe import missing_model_note, recipe_of_trial, with_model

    policy = parse_policy(pick_policy)  # a bad one is exit 2 before any store is read
    results = open_results(spec, current=True)
    if by is not None and pick_policy is not None:
        raise UsageError("--by and --pick choose the winner two ways: give one of them")
    chosen = results.pick(policy)
    by_value = None
    if by is not None:
        from orchestrator.workflows.evaluate import rank_by

        ranked = rank_by(results.study, by)
        if not ranked:
            raise OrchestratorError(
                f"no trial of {results.spec.name!r} has {by}: run `ftsweep evaluate {spec}` "
                "(its scorers log eval_<scorer>)"
            )
        chosen = (ranked[0][0], {})
        by_value = ranked[0][1]
    if chosen is None:
        raise OrchestratorError(f"sweep {results.spec.name!r} has no completed trial yet")
    trial, picked = chosen
    backend = results.spec.backend.name
    note = missing_model_note(trial)
    kept = with_model(results.study, trial)  # the best trial with a model when it has none
    recipe = recipe_of_trial(backend, kept, results.study)
    if code:
        if note is not None:
            out.warn(note)
        if recipe is None:
            raise OrchestratorError(f"trial {trial.number} of {results.spec.name!r} kept no model")
        out.data(recipe.sample_call().rstrip("\n"))
        return
    recipe_data = None
    if recipe is not None:
        recipe_data = {**recipe.as_dict(), "sample_call": recipe.sample_call()}
        if kept is not trial:
            recipe_data["trial"] = kept.number
        attrs = results.study.user_attrs
        if attrs.get(StudyAttrs.REGISTERED_TRIAL) == kept.number:
            version = attrs.get(StudyAttrs.REGISTERED_VERSION)
            recipe_data["registered_model"] = f"models:/{results.spec.name}/{version}"
    out.data(
        json.dumps(
            {
                "trial": trial.number,
                "generation": results.generation,
                "study": results.study.study_name,
                "objective": results.spec.objective.metric,
                "value": primary_value(trial),
                **picked,
                "hyperparameters": results.hyperparameters(trial),
                "diagnosis": trial.user_attrs.get(TrialAttrs.DIAGNOSIS),
                "recommendation": trial.user_attrs.get(TrialAttrs.RECOMMENDATION),
                "fine_tuned_model": trial.user_attrs.get(TrialAttrs.FINE_TUNED_MODEL),
                "mlflow_run_id": trial.user_attrs.get(TrialAttrs.MLFLOW_RUN),
                **({"model_note": note} if note else {}),
                **({"by": by, by: by_value} if by is not None else {}),
                "recipe": recipe_data,
            },
            indent=2,
        )
    )


def ui(
    spec: SpecArg,
    port: Annotated[int, typer.Option(help="Port of the MLflow UI.")] = 5000,
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    timeout_s: Annotated[
        float, typer.Option("--timeout", help="Seconds to wait for the UI to answer.")
    ] = 180.0,
) -> None:
    """Start the MLflow UI on the sweep's store; print the link to its runs once it answers.

    Example: ftsweep ui sweeps/quickstart.yaml --port 5000
    """
    quiet_libraries()
    import contextlib
    import os
    import signal
    import subprocess
    import sys

    from orchestrator.config import load_spec
    from orchestrator.stores.study import resolve_stores
    from orchestrator.tracking import Tracker, runs_link

    sweep = load_spec(spec)
    stores = resolve_stores(sweep)
    if stores.mlflow.startswith(("http://", "https://")):
        tracker = Tracker(stores.mlflow, sweep.name)
        out.data(runs_link(stores.mlflow, tracker.experiment_id, sweep.objective.direction))
        return
    from orchestrator.core.errors import UsageError

    busy = _port_in_use(host, port)
    if busy:
        raise UsageError(
            f"port {port} on {host} is already in use ({busy}); pick another with --port"
        )
    tracker = Tracker(stores.mlflow, sweep.name, stores.artifacts)
    link = runs_link(f"http://{host}:{port}", tracker.experiment_id, sweep.objective.direction)
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
    out.info(f"starting the MLflow UI on {host}:{port} (Ctrl-C stops it) ...")
    # its workers: one process group; its own output goes to stderr, so stdout is the link alone
    proc = subprocess.Popen(cmd, start_new_session=True, stdout=sys.stderr)

    def stop(*_: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)  # a terminated `ftsweep ui` stops its server too
    try:
        if not _wait_until_serving(proc, host, port, timeout_s):
            code = proc.poll()
            from orchestrator.core.errors import OrchestratorError

            if code is not None:
                raise OrchestratorError(f"the MLflow UI exited with status {code} before it served")
            raise OrchestratorError(
                f"the MLflow UI did not answer on {host}:{port} within {timeout_s:.0f} s"
            )
        out.data(link)
        proc.wait()
    except BaseException:  # Ctrl-C, SIGTERM, or it never served: the server goes too
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)  # mlflow stops its workers on SIGTERM ...
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:  # ... slowly on a busy machine: then for sure
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        raise


def _port_in_use(host: str, port: int) -> str | None:
    """Why ``host:port`` cannot be served on (something listens there), or None when free."""
    import socket

    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        try:
            sock.bind((host, port))
        except OSError as exc:
            return exc.strerror or str(exc)
    return None


def _wait_until_serving(proc: Any, host: str, port: int, timeout_s: float) -> bool:
    """True once the server started by ``proc`` answers ``/health``; False when it exits or
    ``timeout_s`` passes first."""
    import time
    import urllib.error
    import urllib.request

    url = f"http://{'localhost' if host in ('0.0.0.0', '::') else host}:{port}/health"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return True
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.5)
    return False


def register(app: typer.Typer) -> None:
    for command in (status, report, best, ui):
        app.command()(command)

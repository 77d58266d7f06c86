"""``ftsweep import``: a provider's past fine-tuning jobs into the sweep's study and MLflow."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

import typer

from orchestrator.cli.common import SpecArg, quiet_libraries
from orchestrator.cli.output import out

__all__ = ["register"]


def _day(value: str | None, option: str) -> dt.date | None:
    from orchestrator.core.errors import UsageError

    if value is None:
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise UsageError(f"{option}: expected a date YYYY-MM-DD, got {value!r}") from None


def import_jobs(
    spec: SpecArg,
    since: Annotated[
        str | None, typer.Option("--since", help="Jobs created on or after this day (UTC).")
    ] = None,
    until: Annotated[
        str | None, typer.Option("--until", help="Jobs created on or before this day (UTC).")
    ] = None,
    suffix: Annotated[
        str | None, typer.Option("--suffix", help="Only jobs created with this suffix.")
    ] = None,
    model: Annotated[
        str | None,
        typer.Option("--model", help="Only jobs on this base model (a prefix: gpt-4o-mini)."),
    ] = None,
    status: Annotated[
        list[str] | None,
        typer.Option("--status", help="succeeded, failed or cancelled (repeat; default all)."),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="List the jobs that would be imported.")
    ] = False,
) -> None:
    """Import the provider's past fine-tuning jobs (the sweep's backend: openai or azure)
    into the study NAME.imported and the sweep's MLflow experiment, as finished trials with
    their hyper-parameters, curves, trained tokens, cost, model id and diagnosis.

    Idempotent: a job already imported is skipped, and an import killed half-way is
    completed by the next. A later `ftsweep run SPEC` starts from the imported best (batch
    size rescaled to the sweep's data). See docs/import.md.

    Example: ftsweep import sweeps/openai.yaml --since 2025-01-01 --suffix support
    """
    quiet_libraries()
    from orchestrator.workflows.importer import FINISHED, JobFilter
    from orchestrator.workflows.importer import import_jobs as run_import

    wanted = JobFilter(
        since=_day(since, "--since"),
        until=_day(until, "--until"),
        suffix=suffix,
        model=model,
        statuses=tuple(status) if status else FINISHED,
    )
    result = run_import(spec, wanted, dry_run=dry_run)
    if dry_run:
        for job in result.jobs:
            hp = job.hyperparameters
            day = dt.datetime.fromtimestamp(job.created_at, dt.UTC).strftime("%Y-%m-%d")
            out.data(
                f"{job.job_id}  {day}  {job.status:<9}  {job.model}  "
                f"ep={hp.get('n_epochs', '-')} bs={hp.get('batch_size', '-')} "
                f"lr={hp.get('learning_rate_multiplier', '-')}"
                + (f"  ({job.note})" if job.note else "")
            )
        out.info(f"{len(result.jobs)} job(s) at {result.provider} would be imported (dry run)")
        return
    gone = sum(1 for j in result.jobs if j.status == "succeeded" and not j.curves)
    out.data(
        f"imported {len(result.added)} job(s) from {result.provider} into {result.study_name}"
        f" ({len(result.skipped)} already there"
        + (f", {len(result.mended)} completed from an interrupted import" if result.mended else "")
        + (f", {gone} without a curve" if gone else "")
        + ")"
    )


def register(app: typer.Typer) -> None:
    app.command(name="import")(import_jobs)

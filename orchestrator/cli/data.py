"""``ftsweep validate`` and ``ftsweep prepare``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from orchestrator.cli.output import out

__all__ = ["register"]


#: the model the OpenAI cookbook's data checks assume
DEFAULT_MODEL = "gpt-3.5-turbo-0613"


def _warn_sunset(model: str) -> None:
    """Warn when OpenAI announced a shutdown of ``model`` (offline knowledge)."""
    from orchestrator.catalog.models import MODELS
    from orchestrator.catalog.names import (
        announced_sunset,
        family,
        openai_jobs_note,
        openai_jobs_refusal,
        sunset_message,
    )
    from orchestrator.core import clock
    from orchestrator.plan.models import WARN_DAYS

    today = clock.today()
    found = announced_sunset(model, today)
    if found is not None and (found.passed or (found.days_left or 0) <= WARN_DAYS):
        out.warn(f"{sunset_message(found, '--model', backend='openai')} (OpenAI, as announced)")
    known = family(model, [m for m, facts in MODELS.items() if facts.openai])
    if known is not None and not (found is not None and found.passed):
        note = openai_jobs_note(today) or openai_jobs_refusal(today)
        if note is not None:
            out.warn(note)


def validate(
    data: Annotated[
        Path,
        typer.Argument(metavar="DATA", help="Training data (JSONL: chat or prompt/completion)."),
    ],
    valid: Annotated[
        Path | None, typer.Option("--valid", help="Validation data, checked too and for overlap.")
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            help="Base model: its tokenizer, per-example token limit and price. An OpenAI "
            "model, or a local one (tiny, smollm2-135m, a model folder, a .gguf file). The "
            f"default, {DEFAULT_MODEL}, is what the OpenAI cookbook's data checks assume.",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    workers: Annotated[
        int | None,
        typer.Option(
            "--workers",
            min=1,
            help="Processes that check a large file (default: $FTSWEEP_DATA_WORKERS, else "
            "every usable core). Files under 8 MiB are checked in one.",
        ),
    ] = None,
) -> None:
    """Check fine-tuning data and report problems with their line numbers.

    Exit 0 when there are no errors (warnings allowed), 2 when there are.

    Example: ftsweep validate train.jsonl --valid valid.jsonl --model gpt-4o-mini
    """
    from orchestrator.backends.counters import counter_for_model
    from orchestrator.data.checks import check_dataset

    if model is not None:
        _warn_sunset(model)
    model = model or DEFAULT_MODEL
    out.info(f"checking {data}" + (f" and {valid}" if valid else "") + f" for {model} ...")
    report = check_dataset(data, valid, counter_for_model(model), model=model, workers=workers)
    if as_json:
        out.data(json.dumps(report.to_dict(), indent=2))
    else:
        from orchestrator.cli.render_data import render_report

        out.data(render_report(report))
    if not report.ok:
        raise typer.Exit(2)


def prepare(
    source: Annotated[
        Path, typer.Argument(metavar="INPUT", help="CSV, JSONL, JSON or parquet file.")
    ],
    out_dir: Annotated[Path, typer.Option("--out", help="Folder for train.jsonl and valid.jsonl.")],
    prompt: Annotated[str | None, typer.Option(help="Column holding the prompt.")] = None,
    completion: Annotated[str | None, typer.Option(help="Column holding the completion.")] = None,
    system: Annotated[
        str | None, typer.Option(help="Write chat data with this system message instead.")
    ] = None,
    chat: Annotated[bool, typer.Option("--chat", help="Write chat (messages) data.")] = False,
    valid_fraction: Annotated[
        float, typer.Option(min=0.0, max=0.9, help="Share held out for validation.")
    ] = 0.1,
    seed: Annotated[int, typer.Option(help="Seed of the train/valid split.")] = 0,
    force: Annotated[bool, typer.Option(help="Replace files already in --out.")] = False,
) -> None:
    """Turn a table into fine-tuning JSONL: fix what is safe, report every change, split.

    Adds a separator and a stop sequence that occur in no example (a JSONL file keeps its own
    when every example ends with them), removes exact duplicates, splits train/valid
    (stratified by label for classification data). Never overwrites the input.

    Example: ftsweep prepare tickets.csv --prompt text --completion label --out data/tickets
    """
    from orchestrator.data.prepare import PrepareOptions, prepare_file

    options = PrepareOptions(
        prompt=prompt,
        completion=completion,
        chat=chat or system is not None,
        system=system,
        valid_fraction=valid_fraction,
        seed=seed,
        force=force,
    )
    result = prepare_file(source, out_dir, options)
    for change in result.changes:
        out.info(f"- {change}")
    out.data(json.dumps(result.summary(), indent=2))


def register(app: typer.Typer) -> None:
    app.command()(validate)
    app.command()(prepare)

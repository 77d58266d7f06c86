"""Assembles the Typer application from one module per command."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import typer

__all__ = ["build"]


def _interruptible(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Ctrl-C (and SIGTERM, which the entry point turns into Ctrl-C) inside a command becomes
    a known error (exit 130, or 143 after SIGTERM; one ``error:`` line): Typer would otherwise
    turn it into a silent exit 130."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from orchestrator.core.errors import Interrupted

        try:
            return fn(*args, **kwargs)
        except KeyboardInterrupt:
            raise Interrupted("interrupted") from None

    return wrapper


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            v = version("ftsweep")
        except PackageNotFoundError:  # run from a source tree that was never installed
            from orchestrator import __version__ as v
        typer.echo(f"ftsweep {v}")
        raise typer.Exit()


def _root(
    version: bool = typer.Option(
        False,
        "--version",
        callback=_version,
        is_eager=True,
        help="Print the version and exit.",
    ),
) -> None:
    """Tune LLM fine-tuning: check data, sweep n_epochs, batch_size and learning_rate_multiplier
    on a local trainer, OpenAI or Azure OpenAI, track in MLflow."""


def build() -> Any:
    """The click command behind ``ftsweep`` (built fresh, so tests stay independent)."""
    from orchestrator.cli import (
        apisim,
        backends,
        data,
        diagnose,
        evaluate,
        importer,
        learning_curve,
        models,
        results,
        retune,
        schedule,
        space,
        sweep,
    )

    app = typer.Typer(
        name="ftsweep",
        help="Tune LLM fine-tuning: check data, sweep n_epochs, batch_size and "
        "learning_rate_multiplier on a local trainer, OpenAI or Azure OpenAI, track in MLflow.",
        no_args_is_help=True,
        add_completion=True,
        pretty_exceptions_enable=False,
        pretty_exceptions_show_locals=False,
        rich_markup_mode=None,
        context_settings={"help_option_names": ["-h", "--help"]},
    )
    app.callback()(_root)
    for module in (
        data,
        space,
        sweep,
        retune,
        schedule,
        results,
        evaluate,
        diagnose,
        learning_curve,
        importer,
        backends,
        apisim,
    ):
        module.register(app)
    app.add_typer(models.app, name="models")
    for group in (app, models.app):
        for info in group.registered_commands:
            if info.callback is not None:
                info.callback = _interruptible(info.callback)
    return typer.main.get_command(app)

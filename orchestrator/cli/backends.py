"""``ftsweep backends``."""

from __future__ import annotations

from typing import Annotated

import typer

from orchestrator.cli.output import out
from orchestrator.cli.render import table

__all__ = ["register"]


def backends(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List the installed fine-tuning backends (entry-point group ftsweep.backends).

    Example: ftsweep backends
    """
    import json

    from orchestrator.backends import registry

    rows = []
    for name, ep in sorted(registry.available().items()):
        try:
            cls = registry.load(name)
            params = ", ".join(sorted(cls.supported_parameters))
            rows.append({"name": name, "target": ep.value, "parameters": params, "error": None})
        except Exception as exc:  # a broken third-party plugin must not hide the others
            rows.append({"name": name, "target": ep.value, "parameters": "", "error": str(exc)})
    if as_json:
        out.data(json.dumps(rows, indent=2))
        return
    if not rows:
        out.info("no backends installed")
        return
    out.data(
        table(
            ["backend", "entry point", "parameters"],
            [[r["name"], r["target"], r["error"] or r["parameters"]] for r in rows],
        )
    )


def register(app: typer.Typer) -> None:
    app.command()(backends)

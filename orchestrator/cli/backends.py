"""``ftsweep backends``."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from orchestrator.cli.output import out
from orchestrator.cli.render import table

__all__ = ["register"]


def backends(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List the installed fine-tuning backends (entry-point group ftsweep.backends): the
    hyper-parameters each accepts and their ranges, how many jobs it runs at once, and
    whether its jobs cost money.

    Example: ftsweep backends
    """
    import json

    from orchestrator.backends import registry

    rows: list[dict[str, Any]] = []
    for name, ep in sorted(registry.available().items()):
        row: dict[str, Any] = {"name": name, "target": ep.value, "error": None}
        try:
            caps = registry.load(name).capabilities
        except Exception as exc:  # a broken third-party plugin must not hide the others
            rows.append({**row, "error": str(exc).splitlines()[0] if str(exc) else repr(exc)})
            continue
        params = {
            p: {
                "low": r.low,
                "high": r.high,
                "low_exclusive": r.low_exclusive,
                "accepts": r.describe(),
            }
            for p, r in caps.parameters.items()
        }
        row.update(
            parameters=params, max_concurrent_jobs=caps.max_concurrent_jobs, priced=caps.priced
        )
        rows.append(row)
    if as_json:
        out.data(json.dumps(rows, indent=2))
        return
    if not rows:
        out.info("no backends installed")
        return
    lines = []
    for r in rows:
        if r["error"]:
            lines.append([r["name"], r["target"], r["error"], "", ""])
            continue
        ranges = ", ".join(f"{p} {v['accepts']}" for p, v in r["parameters"].items())
        jobs = "any" if r["max_concurrent_jobs"] is None else str(r["max_concurrent_jobs"])
        lines.append([r["name"], r["target"], ranges, jobs, "yes" if r["priced"] else "no"])
    out.data(table(["backend", "entry point", "parameters", "jobs at once", "priced"], lines))


def register(app: typer.Typer) -> None:
    app.command()(backends)

"""``ftsweep apisim``: the fine-tuning API simulator as a local HTTP server."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from orchestrator.cli.output import out

__all__ = ["register"]


def apisim(
    port: Annotated[
        int, typer.Option("--port", help="Port to listen on (0: any free port).")
    ] = 8765,
    host: Annotated[str, typer.Option("--host", help="Address to bind.")] = "127.0.0.1",
    state: Annotated[
        Path | None,
        typer.Option(
            "--state",
            help="Folder that keeps files, jobs and the request log "
            "across restarts (default: a temporary folder).",
        ),
    ] = None,
    speed: Annotated[
        float, typer.Option("--speed", help="Simulated seconds per real second (0 freezes).")
    ] = 60.0,
    faults: Annotated[
        Path | None, typer.Option("--faults", help="JSON/YAML file of faults to inject.")
    ] = None,
) -> None:
    """Serve a simulated OpenAI / Azure OpenAI fine-tuning API, for rehearsals and tests.

    Jobs run on a simulated clock with loss curves from a response-surface model of the
    hyper-parameters (docs/apisim.md). Point the backends at it with OPENAI_BASE_URL=URL/v1
    (any OPENAI_API_KEY) or AZURE_OPENAI_ENDPOINT=URL. Ctrl-C stops it; --state keeps jobs.

    Example: ftsweep apisim --port 8765 --state .apisim --speed 600
    """
    from orchestrator import apisim as sim
    from orchestrator.apisim.server import SimServer

    def ready(server: SimServer) -> None:
        out.data(server.url)
        out.info(
            f"apisim listening: OpenAI base URL {server.url}/v1, Azure endpoint {server.url}; "
            f"speed x{speed:g}; admin at {server.url}/_sim/requests. Ctrl-C stops."
        )

    try:
        sim.serve(port=port, host=host, state=state, speed=speed, faults=faults, on_ready=ready)
    except KeyboardInterrupt:
        out.info("apisim stopped" + (f"; state kept in {state}" if state else ""))
        raise typer.Exit(130) from None
    except OSError as exc:
        out.abort(f"cannot listen on {host}:{port}: {exc.strerror or exc}")


def register(app: typer.Typer) -> None:
    app.command()(apisim)

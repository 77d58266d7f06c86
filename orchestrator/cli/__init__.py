"""The ``ftsweep`` command: a thin Typer layer over the library.

Only this package prints or exits. Exit codes: 0 ok, 1 failure, 2 bad usage or an invalid
file, 130 interrupted. Known errors print one ``error: ...`` line (set ``FTSWEEP_DEBUG=1`` for
tracebacks); heavy libraries are imported inside commands so ``--help`` stays fast. The
Hugging Face hub is offline (``HF_HUB_OFFLINE=1``) unless the environment says otherwise.
"""

from __future__ import annotations

import os
import sys

__all__ = ["main"]


def main(argv: list[str] | None = None) -> None:
    """Run the CLI and exit with its status."""
    raise SystemExit(run(argv))


def run(argv: list[str] | None = None) -> int:
    """Run the CLI and return the exit status (used by tests and :func:`main`)."""
    import typer
    from typer.exceptions import TyperException

    from orchestrator.cli.app import build
    from orchestrator.cli.output import out
    from orchestrator.core.errors import OrchestratorError

    debug = os.environ.get("FTSWEEP_DEBUG") == "1"
    # No network to the Hugging Face hub unless the user allows it (HF_HUB_OFFLINE=0): an
    # unknown model name then fails at once, not after the hub's retries. Set before any
    # import of huggingface_hub, which reads it once; job workers inherit it.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    # transformers' and the hub's own bars (writing model shards...) are noise in our output
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # its tqdm bars
    from orchestrator.core.progress import show_on_stderr

    show_on_stderr()  # a model pull, a tokenizer load: a line each, not minutes of silence
    command = build()
    try:
        rc = command.main(args=argv, prog_name="ftsweep", standalone_mode=False)
    except typer.Exit as exc:
        return int(exc.exit_code)
    except typer.Abort:
        out.error("interrupted")
        return 130
    except TyperException as exc:  # click's usage errors, as typer carries them
        show = getattr(exc, "show", None)
        if show is not None:
            show(out.stderr)
        return int(getattr(exc, "exit_code", 2))
    except KeyboardInterrupt:
        out.error("interrupted")
        return 130
    except OrchestratorError as exc:
        if debug:
            raise
        out.error(str(exc))
        return exc.exit_code
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 1
    except Exception as exc:  # a bug: say so in one line, without locals
        if debug:
            raise
        out.error(
            f"internal error: {type(exc).__name__}: {exc} (FTSWEEP_DEBUG=1 shows the traceback)"
        )
        return 1
    finally:
        sys.stdout.flush()
    return rc if isinstance(rc, int) else 0

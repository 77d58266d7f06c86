"""The ``ftsweep`` command: a thin Typer layer over the library.

Only this package prints or exits. Exit codes: 0 ok, 1 failure, 2 bad usage or an invalid
file, 130 interrupted (Ctrl-C), 143 terminated (SIGTERM: ``kill``, systemd, Kubernetes, compose
stop). SIGTERM takes Ctrl-C's path: the command stops the same way and prints the same line
(``ftsweep run`` names the jobs still running, which the next run re-attaches to); only the
exit status says which signal came. Known errors print one ``error: ...`` line (set
``FTSWEEP_DEBUG=1`` for tracebacks); heavy libraries are imported inside commands so
``--help`` stays fast. The Hugging Face hub is offline (``HF_HUB_OFFLINE=1``) unless the
environment says otherwise.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Iterator
from types import FrameType, TracebackType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sys import UnraisableHookArgs

__all__ = [
    "INTERRUPTED",
    "RESEND_AFTER_S",
    "TERMINATED",
    "Termination",
    "main",
    "sigterm_interrupts",
]

#: exit status after Ctrl-C (128 + SIGINT)
INTERRUPTED = 128 + signal.SIGINT
#: exit status after SIGTERM (128 + SIGTERM), as a shell reports a process the signal ended
TERMINATED = 128 + signal.SIGTERM


def main(argv: list[str] | None = None) -> None:
    """Run the CLI and exit with its status."""
    raise SystemExit(run(argv))


class Termination:
    """While armed, the first SIGTERM raises :class:`KeyboardInterrupt` (Ctrl-C's path);
    later ones are ignored, so the stop it started runs to its end. ``received``: whether
    SIGTERM started the stop.

    Python runs a signal's handler in whatever the main thread is executing, a finalizer
    included (a ``__del__`` or a weakref callback that the garbage collector runs, such as
    SQLAlchemy's); an exception raised there is printed as "Exception ignored in ..." and
    dropped, and the command would go on as if no signal had come. :meth:`dropped` sees such
    an interruption and sends its signal again (SIGTERM or Ctrl-C's SIGINT), so the command
    stops after all."""

    def __init__(self) -> None:
        self.received = False
        self.armed = True

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        if self.received or not self.armed:
            return
        self.received = True
        raise KeyboardInterrupt

    def dropped(self, args: UnraisableHookArgs) -> bool:
        """Whether ``args`` (of :data:`sys.unraisablehook`) is an interruption Python
        dropped: a ``KeyboardInterrupt``, or what a command's own SIGTERM handler raised
        (``schedule --serve``'s). If so, its signal is sent again shortly, from another
        thread (sent from here, it could land in this hook and be dropped once more)."""
        if not self.armed:
            return False
        if args.exc_type is KeyboardInterrupt:
            sig = signal.SIGTERM if self.received else signal.SIGINT
            self.received = False
        elif _raised_by(args.exc_traceback, signal.getsignal(signal.SIGTERM)):
            sig = signal.SIGTERM
        else:
            return False
        again = threading.Timer(RESEND_AFTER_S, self._send, (sig,))
        again.daemon = True
        again.start()
        return True

    def _send(self, sig: signal.Signals) -> None:
        if self.armed:
            os.kill(os.getpid(), sig)


def _raised_by(traceback: TracebackType | None, handler: object) -> bool:
    """Whether the innermost frame of ``traceback`` is the Python function ``handler``."""
    code = getattr(handler, "__code__", None)
    if traceback is None or code is None:
        return False
    while traceback.tb_next is not None:
        traceback = traceback.tb_next
    return traceback.tb_frame.f_code is code


#: seconds after a dropped interruption before its signal is sent again
RESEND_AFTER_S = 0.05


@contextlib.contextmanager
def sigterm_interrupts() -> Iterator[Termination]:
    """SIGTERM as Ctrl-C for the command's duration (main thread only: Python delivers
    signals there), and an interruption that a finalizer dropped sent again (see
    :class:`Termination`); the previous handler and hook restored after. A command that
    handles SIGTERM itself (``schedule --serve``, ``ui``) installs its own over this one."""
    termination = Termination()
    if threading.current_thread() is not threading.main_thread():
        yield termination
        return
    previous = signal.signal(signal.SIGTERM, termination)
    previous_hook = sys.unraisablehook

    def hook(args: UnraisableHookArgs) -> None:
        if not termination.dropped(args):
            previous_hook(args)

    sys.unraisablehook = hook
    try:
        yield termination
    finally:
        termination.armed = False
        sys.unraisablehook = previous_hook
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def run(argv: list[str] | None = None) -> int:
    """Run the CLI and return the exit status (used by tests and :func:`main`): an
    interrupted command's status is :data:`TERMINATED` when SIGTERM interrupted it."""
    with sigterm_interrupts() as termination:
        try:
            code = _run(argv)
        except KeyboardInterrupt:  # it came while the command was already ending
            from orchestrator.cli.output import out

            out.error("interrupted")
            code = INTERRUPTED
        termination.armed = False
    return TERMINATED if code == INTERRUPTED and termination.received else code


def _run(argv: list[str] | None) -> int:
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
        return INTERRUPTED
    except TyperException as exc:  # click's usage errors, as typer carries them
        show = getattr(exc, "show", None)
        if show is not None:
            show(out.stderr)
        return int(getattr(exc, "exit_code", 2))
    except KeyboardInterrupt:
        out.error("interrupted")
        return INTERRUPTED
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

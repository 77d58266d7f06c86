"""Run a sweep and die like ``kill -9`` (``os._exit``: no cleanup, no flush) right after the
engine's Nth event of one kind, once every other listener has handled it.

The engine emits its events exactly at the write boundaries of a trial's life (the request
written / the job submitted / points logged / the objective reported or a prune recorded /
the outcome recorded, before the study is told), so killing after each one kills the run at
each boundary. Usage: ``python -m tests.reliability.killer SPEC EVENT N [pruned]``; exits 3 if
the sweep ended before that point.
"""

from __future__ import annotations

import os
import sys

from orchestrator.engine.events import Event, Listener
from orchestrator.workflows.sweep import run_sweep


class Killer(Listener):
    name = "killer"

    def __init__(self, kind: str, nth: int, pruned_only: bool = False) -> None:
        self.kind, self.nth, self.pruned_only, self.seen = kind, nth, pruned_only, 0

    def handle(self, event: Event) -> None:
        if type(event).__name__ != self.kind:
            return
        if self.pruned_only and not getattr(event, "pruned", False):
            return
        self.seen += 1
        if self.seen == self.nth:
            os._exit(137)


def main(argv: list[str]) -> None:
    spec, kind, nth = argv[:3]
    run_sweep(spec, listeners=[Killer(kind, int(nth), "pruned" in argv[3:])])
    os._exit(3)


if __name__ == "__main__":
    main(sys.argv[1:])

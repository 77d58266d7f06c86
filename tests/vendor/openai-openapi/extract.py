"""Cut OpenAI's ``openapi.yaml`` down to what ``tests/apisim/openapi.py`` reads.

    cd tests/vendor/openai-openapi && python extract.py FULL/openapi.yaml > openapi.yaml

Keeps ``openapi`` and ``info``, the path items in :data:`PATHS` whole, the component schemas
in :data:`SCHEMAS` (the ones the tests name), and every component any of them refers to
(``$ref``), transitively; each kept object is unmodified. Written as YAML with keys in their
original order, so the tests load the same objects from the cut as from the full file.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

#: the paths whose responses the simulator's tests validate
PATHS = (
    "/files",
    "/files/{file_id}",
    "/fine_tuning/jobs",
    "/fine_tuning/jobs/{fine_tuning_job_id}",
    "/fine_tuning/jobs/{fine_tuning_job_id}/cancel",
    "/fine_tuning/jobs/{fine_tuning_job_id}/checkpoints",
    "/fine_tuning/jobs/{fine_tuning_job_id}/events",
    "/fine_tuning/jobs/{fine_tuning_job_id}/pause",
    "/fine_tuning/jobs/{fine_tuning_job_id}/resume",
    "/models",
    "/models/{model}",
)
#: component schemas the tests name (``openapi.component``, ``openapi.azure_variant``)
SCHEMAS = (
    "ErrorResponse",
    "FineTuningJob",
    "FineTuningJobCheckpoint",
    "FineTuningJobEvent",
    "OpenAIFile",
)


def _refs(node: Any) -> set[tuple[str, str]]:
    """``(kind, name)`` of every ``#/components/KIND/NAME`` reference under ``node``."""
    found: set[tuple[str, str]] = set()
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/components/"):
            kind, name = ref.removeprefix("#/components/").split("/", 1)
            found.add((kind, name))
        for value in node.values():
            found |= _refs(value)
    elif isinstance(node, list):
        for item in node:
            found |= _refs(item)
    return found


def cut(full: dict[str, Any]) -> dict[str, Any]:
    """The part of the spec ``full`` that the tests read."""
    paths = {p: full["paths"][p] for p in PATHS}
    todo = _refs(paths) | {("schemas", name) for name in SCHEMAS}
    kept: set[tuple[str, str]] = set()
    while todo:
        kind, name = todo.pop()
        if (kind, name) in kept:
            continue
        kept.add((kind, name))
        todo |= _refs(full["components"][kind][name]) - kept
    components: dict[str, dict[str, Any]] = {}
    for kind, objects in full["components"].items():  # the original order
        chosen = {n: v for n, v in objects.items() if (kind, n) in kept}
        if chosen:
            components[kind] = chosen
    return {"openapi": full["openapi"], "info": full["info"], "paths": paths,
            "components": components}  # fmt: skip


def main(argv: list[str]) -> None:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    full = yaml.load(Path(argv[0]).read_text(encoding="utf-8"), Loader=loader)
    yaml.safe_dump(cut(full), sys.stdout, sort_keys=False, allow_unicode=True, width=100)


if __name__ == "__main__":
    main(sys.argv[1:])

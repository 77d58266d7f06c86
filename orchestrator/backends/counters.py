"""Which token counter a model name means, for ``ftsweep validate --model``.

The data checks (:mod:`orchestrator.data`) take a counter and know no backend; a sweep's plan
asks its own backend (:meth:`Backend.token_counter`). Without a sweep, a bare model name is
looked up here: OpenAI's models first (tiktoken, offline), then every registered backend in
turn (the local trainer knows ``tiny``, ``smollm2-135m``, model folders, GGUF files and cached
hub ids), so a third-party backend's models validate too.
"""

from __future__ import annotations

from orchestrator.backends import registry
from orchestrator.catalog.names import trainable_line
from orchestrator.catalog.tokens import ExampleCounter, openai_counter
from orchestrator.core import clock
from orchestrator.core.errors import UnknownModelError

__all__ = ["counter_for_model"]


def counter_for_model(model: str) -> ExampleCounter:
    """Exact counts for ``model`` as it is trained; :class:`UnknownModelError` (exit 2) when
    neither OpenAI's table nor a registered backend knows it."""
    try:
        return openai_counter(model)
    except UnknownModelError:
        pass
    reasons: list[str] = []
    for name in sorted(registry.available()):
        try:
            backend = registry.load(name)
            counter = backend.token_counter(model, backend.Options())
        except UnknownModelError as exc:
            reason = str(exc).splitlines()[0] if str(exc) else "unknown"
            if not reason.startswith("unknown model"):  # OpenAI's table again: said below
                reasons.append(f"{name}: {reason}")
            continue
        except Exception:  # a broken plugin must not hide the others
            continue
        if counter is not None:
            return counter
    known = trainable_line(clock.today())
    local = "; ".join(reasons) or (
        "nor a local model (a built-in name, a model folder, a .gguf file or a hub id)"
    )
    raise UnknownModelError(f"unknown model {model!r}: not an OpenAI model ({known}); {local}")

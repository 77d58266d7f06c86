"""The ``local`` backend: real fine-tuning on this machine with Hugging Face transformers.

Each job is a worker subprocess with its own folder (:mod:`.backend`, :mod:`.jobfiles`,
:mod:`.worker`), training with a weighted-loss loop (:mod:`.trainer`, :mod:`.loss`,
:mod:`.encoding`) on a built-in, local, GGUF or hub model (:mod:`.models`), optionally with
LoRA. :mod:`.tasks` generates toy datasets. Importing this package loads no heavy library.
"""

from orchestrator.backends.local.backend import LocalBackend
from orchestrator.backends.local.options import LocalOptions, LoraOptions

__all__ = ["LocalBackend", "LocalOptions", "LoraOptions"]

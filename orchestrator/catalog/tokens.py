"""Exact token counts with the model's own tokenizer, offline.

OpenAI models use tiktoken encodings (``cl100k_base``, ``o200k_base``). tiktoken downloads
their BPE tables on first use; here the tables come from files carried by a package on the
package index (``quicktok-v1``), converted once into tiktoken's cache and accepted only if
their SHA-256 equals the hash tiktoken itself pins. So counts are exact, or there is an error:
never an estimate passed off as a count.

Chat examples are counted as the OpenAI cookbook counts them (3 tokens per message, the
encoded length of every value, 1 more per ``name``, 3 at the end); prompt/completion examples
as the sum of both texts.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import json
import os
import struct
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Protocol

from orchestrator.catalog.models import MODELS
from orchestrator.catalog.names import family
from orchestrator.core.errors import TokenizerError, UnknownModelError

__all__ = [
    "DEFAULT_MODEL",
    "ExampleCounter",
    "OpenAIExampleCounter",
    "TiktokenCounter",
    "TokenCounter",
    "TokenModel",
    "counter_for",
    "known_models",
    "model_info",
    "openai_counter",
]

_BLOB = "https://openaipublic.blob.core.windows.net/encodings/{name}.tiktoken"
# The hashes tiktoken pins for these files (tiktoken_ext/openai_public.py).
_EXPECTED_SHA256 = {
    "cl100k_base": "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
    "o200k_base": "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
}
_CARRIED = {"cl100k_base": "cl100k.vocab", "o200k_base": "o200k.vocab"}


@dataclass(frozen=True)
class TokenModel:
    """What the data checks need to know about a base model."""

    name: str
    encoding: str
    max_tokens_per_example: int


#: OpenAI's models as the data checks see them: a view of :data:`.models.MODELS`
_MODELS: dict[str, TokenModel] = {
    m.name: TokenModel(m.name, m.encoding, m.context)
    for m in MODELS.values()
    if m.openai and m.context is not None
}
#: what the OpenAI cookbook's data-prep notebook assumes (4,096 tokens per example): name
#: your model with --model
DEFAULT_MODEL = "gpt-3.5-turbo-0613"


def known_models() -> tuple[str, ...]:
    """The OpenAI base models the token tables know, sorted."""
    return tuple(sorted(_MODELS))


def model_info(model: str) -> TokenModel:
    """Look a model up by name, snapshot (``gpt-4o-mini-2024-07-18``) or Azure spelling.

    ``ft:`` models resolve to their base. Unknown names raise :class:`TokenizerError` listing
    the known ones.
    """
    known = family(model, _MODELS)
    if known is not None:
        info = _MODELS[known]
        return (
            info
            if known == model
            else TokenModel(model, info.encoding, info.max_tokens_per_example)
        )
    raise TokenizerError(f"unknown model {model!r}; known: {', '.join(sorted(_MODELS))}")


class TokenCounter(Protocol):
    """Counts tokens of texts and examples for one tokenizer."""

    name: str

    def count(self, text: str) -> int: ...

    def count_many(self, texts: Sequence[str]) -> list[int]: ...


def _cache_dir() -> Path:
    # The same directory tiktoken reads, so tiktoken.get_encoding() works offline afterwards.
    for var in ("TIKTOKEN_CACHE_DIR", "DATA_GYM_CACHE_DIR"):
        if os.environ.get(var):
            return Path(os.environ[var])
    return Path(tempfile.gettempdir()) / "data-gym-cache"


def _carried_table(encoding: str) -> bytes:
    spec = importlib.util.find_spec("quicktok")
    if spec is None or not spec.submodule_search_locations:
        raise TokenizerError(
            f"no offline copy of {encoding}: install the 'quicktok-v1' package (a dependency)"
        )
    raw = (Path(spec.submodule_search_locations[0]) / "data" / _CARRIED[encoding]).read_bytes()
    (count,) = struct.unpack_from("<I", raw, 0)
    offset, ranked = 4, []
    for _ in range(count):
        (length,) = struct.unpack_from("<H", raw, offset)
        token = raw[offset + 2 : offset + 2 + length]
        (rank,) = struct.unpack_from("<I", raw, offset + 2 + length)
        offset += 6 + length
        ranked.append((rank, token))
    ranked.sort()
    return b"".join(base64.b64encode(t) + b" " + str(r).encode() + b"\n" for r, t in ranked)


def ensure_offline_encoding(encoding: str) -> None:
    """Put ``encoding``'s BPE table into tiktoken's cache unless it is there already."""
    if encoding not in _EXPECTED_SHA256:
        return
    url = _BLOB.format(name=encoding)
    target = _cache_dir() / hashlib.sha1(url.encode()).hexdigest()
    if target.exists():
        return
    data = _carried_table(encoding)
    if hashlib.sha256(data).hexdigest() != _EXPECTED_SHA256[encoding]:
        raise TokenizerError(f"the carried {encoding} table does not match tiktoken's hash")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, target)


class TiktokenCounter:
    """Exact counts with a tiktoken encoding (special-token text is counted as plain text)."""

    def __init__(self, encoding: str) -> None:
        import tiktoken

        ensure_offline_encoding(encoding)
        try:
            self._enc = tiktoken.get_encoding(encoding)
        except Exception as exc:  # tiktoken raises plain exceptions when it cannot download
            raise TokenizerError(f"cannot load the {encoding} tokenizer: {exc}") from exc
        self.name = encoding
        self.special_tokens: frozenset[str] = frozenset(self._enc.special_tokens_set)

    def count(self, text: str) -> int:
        return len(self._enc.encode_ordinary(text))

    def count_many(self, texts: Sequence[str]) -> list[int]:
        # tiktoken's batch API spends more on its thread pool than on encoding short texts
        encode = self._enc.encode_ordinary
        return [len(encode(t)) for t in texts]


class ExampleCounter(Protocol):
    """Counts whole examples for one model, as it is trained on them: what the data checks
    take. :class:`OpenAIExampleCounter` counts OpenAI models; backends supply their own
    (:meth:`orchestrator.backends.base.Backend.token_counter`)."""

    name: str
    max_tokens_per_example: int
    special_tokens: frozenset[str]

    def example(self, fmt: str, value: dict[str, Any]) -> tuple[int, int]:
        """(tokens of the example, tokens trained on)."""
        ...


class OpenAIExampleCounter:
    """Whole-example counts for an OpenAI model: tiktoken, by the cookbook's formulas."""

    def __init__(self, model: str) -> None:
        info = model_info(model)
        self.counter = counter_for(model)
        self.name = info.encoding
        self.max_tokens_per_example = info.max_tokens_per_example
        self.special_tokens = self.counter.special_tokens

    def example(self, fmt: str, value: dict[str, Any]) -> tuple[int, int]:
        if fmt == "chat":
            texts, overhead, trained = chat_token_texts(value["messages"])
            counts = self.counter.count_many(texts)
            return sum(counts) + overhead, sum(counts[j] for j in trained)
        prompt = self.counter.count(value["prompt"])
        completion = self.counter.count(value["completion"])
        return prompt + completion, completion


@cache
def openai_counter(model: str) -> OpenAIExampleCounter:
    """Exact counts for an OpenAI model; an unknown name raises :class:`UnknownModelError`
    listing the known ones."""
    try:
        return OpenAIExampleCounter(model)
    except UnknownModelError:
        raise
    except TokenizerError as exc:
        if str(exc).startswith("unknown model"):
            raise UnknownModelError(str(exc)) from None
        raise


@cache
def counter_for(model: str) -> TiktokenCounter:
    """The (cached) token counter for an OpenAI model name."""
    return TiktokenCounter(model_info(model).encoding)


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def chat_token_texts(messages: Sequence[Mapping[str, Any]]) -> tuple[list[str], int, list[int]]:
    """The texts to encode for one chat example, the fixed overhead, and which are assistant
    contents: total = sum(counts) + overhead, by the cookbook's formula."""
    texts: list[str] = []
    overhead = 3
    assistant: list[int] = []
    for message in messages:
        overhead += 3
        for key, value in message.items():
            if key == "weight" or value is None:
                continue
            if key == "content" and message.get("role") == "assistant":
                assistant.append(len(texts))
            texts.append(_text(value))
            if key == "name":
                overhead += 1
    return texts, overhead, assistant

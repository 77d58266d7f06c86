"""Exact token counts with the model's own tokenizer, offline.

OpenAI models use tiktoken encodings (``cl100k_base``, ``o200k_base``). tiktoken downloads
their BPE tables on first use; here the tables come from files carried by a package on the
package index (``quicktok-v1``), converted once into tiktoken's file format
(``$FTSWEEP_HOME/tiktoken``, default ``~/.cache/ftsweep/tiktoken``) and loaded with tiktoken's
public ``load_tiktoken_bpe(path, expected_hash)``, which accepts them only if their SHA-256
equals the hash tiktoken itself pins. :func:`encoding` builds the ``tiktoken.Encoding`` with the
pattern and special tokens tiktoken gives it (``tiktoken_ext/openai_public.py``). So counts
are exact, or there is an error: never an estimate passed off as a count.

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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from orchestrator.catalog.models import MODELS
from orchestrator.catalog.names import family, trainable_line
from orchestrator.core import clock
from orchestrator.core.errors import TokenizerError, UnknownModelError

if TYPE_CHECKING:
    import tiktoken

__all__ = [
    "DEFAULT_MODEL",
    "PINNED_SHA256",
    "ExampleCounter",
    "OpenAIExampleCounter",
    "TiktokenCounter",
    "TokenCounter",
    "TokenModel",
    "counter_for",
    "encoding",
    "known_models",
    "model_info",
    "openai_counter",
    "tables_dir",
]

#: The SHA-256 tiktoken pins for each encoding's BPE table (tiktoken_ext/openai_public.py)
PINNED_SHA256 = {
    "cl100k_base": "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
    "o200k_base": "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
}
_CARRIED = {"cl100k_base": "cl100k.vocab", "o200k_base": "o200k.vocab"}
#: tiktoken_ext/openai_public.py keeps these inside the functions that download the tables:
#: the split pattern of each encoding, and its special tokens by the names that module exports
_PATTERNS = {
    "cl100k_base": "|".join(
        [
            r"""'(?i:[sdmt]|ll|ve|re)""",
            r"""[^\r\n\p{L}\p{N}]?+\p{L}++""",
            r"""\p{N}{1,3}+""",
            r""" ?[^\s\p{L}\p{N}]++[\r\n]*+""",
            r"""\s++$""",
            r"""\s*[\r\n]""",
            r"""\s+(?!\S)""",
            r"""\s""",
        ]
    ),
    "o200k_base": "|".join(
        [
            r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
            r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
            r"""\p{N}{1,3}""",
            r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
            r"""\s*[\r\n]+""",
            r"""\s+(?!\S)""",
            r"""\s+""",
        ]
    ),
}
_SPECIAL_IDS = {
    "cl100k_base": {
        "ENDOFTEXT": 100257,
        "FIM_PREFIX": 100258,
        "FIM_MIDDLE": 100259,
        "FIM_SUFFIX": 100260,
        "ENDOFPROMPT": 100276,
    },
    "o200k_base": {"ENDOFTEXT": 199999, "ENDOFPROMPT": 200018},
}


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
    # the offered list: the models one can still train, with their dates (the token tables
    # know older ones too, for data prepared for them)
    raise TokenizerError(f"unknown model {model!r}; known: {trainable_line(clock.today())}")


class TokenCounter(Protocol):
    """Counts tokens of texts and examples for one tokenizer."""

    name: str

    def count(self, text: str) -> int: ...

    def count_many(self, texts: Sequence[str]) -> list[int]: ...


def tables_dir() -> Path:
    """Where the converted BPE tables are kept: ``$FTSWEEP_HOME/tiktoken``, by default
    ``~/.cache/ftsweep/tiktoken``."""
    root = os.environ.get("FTSWEEP_HOME")
    base = Path(root).expanduser() if root else Path.home() / ".cache" / "ftsweep"
    return base / "tiktoken"


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


def _table_file(name: str, fresh: bool = False) -> Path:
    """The converted table of ``name`` in tiktoken's file format, written once (atomically)
    from the carried one after checking its hash; ``fresh`` writes it again."""
    path = tables_dir() / f"{name}.tiktoken"
    if path.is_file() and not fresh:
        return path
    data = _carried_table(name)
    if hashlib.sha256(data).hexdigest() != PINNED_SHA256[name]:
        raise TokenizerError(f"the carried {name} table does not match tiktoken's hash")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except OSError as exc:
        raise TokenizerError(
            f"{path.parent}: cannot write the {name} table: {exc.strerror or exc} "
            "(set FTSWEEP_HOME to a writable folder)"
        ) from None
    return path


@cache
def encoding(name: str) -> tiktoken.Encoding:
    """tiktoken's ``name`` encoding (``cl100k_base``, ``o200k_base``), built offline from the
    carried table: tiktoken's ``load_tiktoken_bpe`` checks it against the hash it pins, and
    the pattern and special tokens are those tiktoken gives the encoding."""
    if name not in PINNED_SHA256:
        known = ", ".join(PINNED_SHA256)
        raise TokenizerError(f"no offline table for the encoding {name!r} (known: {known})")
    import tiktoken
    from tiktoken.load import load_tiktoken_bpe
    from tiktoken_ext import openai_public

    path = _table_file(name)
    try:
        try:
            ranks = load_tiktoken_bpe(str(path), expected_hash=PINNED_SHA256[name])
        except ValueError:  # the kept file changed since it was written: write it again
            ranks = load_tiktoken_bpe(
                str(_table_file(name, fresh=True)), expected_hash=PINNED_SHA256[name]
            )
    except (ValueError, OSError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        raise TokenizerError(f"cannot load the {name} table {path}: {why}") from None
    special = {getattr(openai_public, key): rank for key, rank in _SPECIAL_IDS[name].items()}
    return tiktoken.Encoding(
        name, pat_str=_PATTERNS[name], mergeable_ranks=ranks, special_tokens=special
    )


class TiktokenCounter:
    """Exact counts with a tiktoken encoding (special-token text is counted as plain text)."""

    def __init__(self, encoding_name: str) -> None:
        self._enc = encoding(encoding_name)
        self.name = encoding_name
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
        """(tokens of the example, tokens trained on); ValueError for an example this model
        cannot take (its chat template refuses it), which the checks report on its line."""
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

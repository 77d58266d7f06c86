"""Training examples to token ids with a loss weight and a completion flag per token.

* **prompt/completion**: ``[the tokenizer's own prefix, e.g. BOS] + prompt + completion + [EOS]``;
  prompt and completion are tokenized separately (special-token strings in the text stay
  text). Prompt tokens get ``prompt_loss_weight``; completion tokens and EOS get 1.
* **chat**: the tokenizer's chat template is rendered on prefixes of the conversation to find
  where each message starts and ends in the rendered text; the whole text is then tokenized
  once and each token takes the weight of the part its last character falls in. An assistant
  message's header (``<|im_start|>assistant\\n``) is prompt; its content and end-of-turn are
  completion (weight 1). An assistant message with ``"weight": 0`` counts as prompt. Every
  other message is prompt. A template that closes every conversation with the same text
  (Phi-3 ends it with its EOS unless a generation prompt follows) is split before that text;
  the closing text of the whole conversation is prompt. A template whose renderings of
  prefixes are otherwise not prefixes of the whole rendering (one that rewrites earlier turns)
  cannot be split this way and raises :class:`DataError`.

Weights belong to the token they are on; the loss at position ``t`` (predicting token ``t+1``)
uses the weight of token ``t+1``.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.core.errors import DataError
from orchestrator.data.formats import CHAT, detect_format
from orchestrator.data.reader import JsonlReader

__all__ = ["Encoded", "EncodedFile", "encode_chat", "encode_file", "encode_prompt_completion"]

_SENTINEL = "\x00ftsweep-content\x00"


@dataclass(frozen=True)
class Encoded:
    """One tokenized example: ids, the loss weight of each token, and which tokens are
    completion (the ones accuracy and the reported losses are measured on)."""

    input_ids: tuple[int, ...]
    weights: tuple[float, ...]
    completion: tuple[bool, ...]

    def __len__(self) -> int:
        return len(self.input_ids)

    def truncated(self, max_length: int) -> Encoded:
        return Encoded(
            self.input_ids[:max_length], self.weights[:max_length], self.completion[:max_length]
        )


@dataclass(frozen=True)
class EncodedFile:
    """All examples of one JSONL file, in file order."""

    path: Path
    format: str
    examples: list[Encoded] = field(repr=False)
    n_truncated: int = 0

    @property
    def n_tokens(self) -> int:
        return sum(len(e) for e in self.examples)


def _ids(encoding: Any) -> list[int]:
    """Token ids from whatever the tokenizer returned (list, dict or BatchEncoding)."""
    if isinstance(encoding, Mapping) or hasattr(encoding, "input_ids"):
        encoding = encoding["input_ids"]
    return [int(i) for i in encoding]


def _special_prefix(tokenizer: Any) -> list[int]:
    with_special = _ids(tokenizer("x", add_special_tokens=True))
    plain = _ids(tokenizer("x", add_special_tokens=False))
    for start in range(len(with_special) - len(plain) + 1):
        if with_special[start : start + len(plain)] == plain:
            return with_special[:start]
    return []


def encode_prompt_completion(
    tokenizer: Any, prompt: str, completion: str, prompt_loss_weight: float
) -> Encoded:
    """Encode one prompt/completion pair (see the module docstring)."""
    prefix = _special_prefix(tokenizer)
    p = _ids(tokenizer(prompt, add_special_tokens=False, split_special_tokens=True))
    c = _ids(tokenizer(completion, add_special_tokens=False, split_special_tokens=True))
    c.append(int(tokenizer.eos_token_id))
    head = prefix + p
    return Encoded(
        tuple(head + c),
        tuple([prompt_loss_weight] * len(head) + [1.0] * len(c)),
        tuple([False] * len(head) + [True] * len(c)),
    )


def _message(m: Mapping[str, Any]) -> dict[str, Any]:
    clean = {k: v for k, v in m.items() if k != "weight"}
    content = clean.get("content")
    if isinstance(content, list):
        clean["content"] = "".join(
            str(p.get("text", "")) for p in content if isinstance(p, Mapping)
        )
    elif content is None:
        clean["content"] = ""
    return clean


def _before_closing(text: str, full: str) -> int | None:
    """Where ``text`` (a rendering of the first messages) stops being a prefix of ``full``,
    when what follows is text that ``full`` ends with too: the closing text the template puts
    at the end of every conversation. None when ``text`` is no such prefix."""
    n = 0
    for a, b in zip(text, full, strict=False):
        if a != b:
            break
        n += 1
    closing = text[n:]
    return n if closing and full.endswith(closing) and len(closing) < len(full) - n else None


def encode_chat(
    tokenizer: Any,
    messages: Sequence[Mapping[str, Any]],
    prompt_loss_weight: float,
    tools: Sequence[Any] | None = None,
) -> Encoded:
    """Encode one conversation with the tokenizer's chat template (see the module docstring)."""
    msgs = [_message(m) for m in messages]
    if not msgs:
        raise ValueError("a conversation needs at least one message")

    def render(upto: int, generation_prompt: bool = False) -> str:
        text = tokenizer.apply_chat_template(
            msgs[:upto],
            tools=tools or None,
            tokenize=False,
            add_generation_prompt=generation_prompt,
        )
        return str(text)

    full = render(len(msgs))
    ends: list[int] = []
    parts: list[tuple[float, bool]] = []

    closing = ""

    def boundary(text: str, what: str) -> int:
        nonlocal closing
        cut = len(text) if full.startswith(text) else _before_closing(text, full)
        if cut is not None and cut < len(text):
            closing = text[cut:]
        if cut is None or (ends and cut < ends[-1]):
            raise ValueError(
                "the chat template is not prefix-stable: rendering "
                f"{what} does not give a prefix of the whole conversation"
            )
        return cut

    for i, message in enumerate(msgs):
        if message.get("role") == "assistant":
            if i == 0:
                probe = tokenizer.apply_chat_template(
                    [{**message, "content": _SENTINEL}], tokenize=False, tools=tools or None
                )
                head = max(0, str(probe).find(_SENTINEL))
            else:
                head = boundary(render(i, True), f"the first {i} messages")
            ends.append(head)
            parts.append((prompt_loss_weight, False))
            trained = messages[i].get("weight", 1) != 0
            ends.append(boundary(render(i + 1), f"the first {i + 1} messages"))
            parts.append((1.0, True) if trained else (prompt_loss_weight, False))
        else:
            ends.append(boundary(render(i + 1), f"the first {i + 1} messages"))
            parts.append((prompt_loss_weight, False))
    if closing and ends[-1] == len(full) and ends[-1] - len(closing) >= max(ends[-2:-1] or [0]):
        ends[-1] -= len(closing)  # the whole conversation's closing text is no message's
    ends.append(len(full) + 1)
    parts.append((prompt_loss_weight, False))

    enc = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
    ids = _ids(enc)
    weights: list[float] = []
    completion: list[bool] = []
    for start, end in enc["offset_mapping"]:
        at = end - 1 if end > start else start
        weight, is_completion = parts[min(bisect_right(ends, at), len(parts) - 1)]
        weights.append(weight)
        completion.append(is_completion)
    return Encoded(tuple(ids), tuple(weights), tuple(completion))


def encode_file(
    path: Path, tokenizer: Any, prompt_loss_weight: float, max_length: int | None = None
) -> EncodedFile:
    """Encode every example of a prompt/completion or chat JSONL file.

    Raises :class:`DataError` naming the line for an unreadable or unusable example.
    """
    examples: list[Encoded] = []
    fmt: str | None = None
    n_truncated = 0
    for line in JsonlReader(path):
        if line.problem is not None:
            raise DataError(str(path), line.problem[1], line.number)
        found = detect_format(line.value)
        if not isinstance(found, str):
            raise DataError(str(path), found.message, line.number)
        if fmt is not None and found != fmt:
            raise DataError(str(path), f"mixes {fmt} and {found} examples", line.number)
        fmt = found
        value = line.value
        try:
            if fmt == CHAT:
                example = encode_chat(
                    tokenizer, value["messages"], prompt_loss_weight, value.get("tools")
                )
            else:
                example = encode_prompt_completion(
                    tokenizer, str(value["prompt"]), str(value["completion"]), prompt_loss_weight
                )
        except Exception as exc:  # the tokenizer's or the chat template's own errors too
            raise DataError(str(path), f"cannot encode the example: {exc}", line.number) from exc
        if max_length is not None and len(example) > max_length:
            example = example.truncated(max_length)
            n_truncated += 1
        examples.append(example)
    if fmt is None:
        raise DataError(str(path), "no examples")
    return EncodedFile(path, fmt, examples, n_truncated)

"""Generated toy tasks for demos, quickstarts and tests, reproducible from a seed.

* ``reverse``: ``"reverse: abcde\\n->"`` -> ``" edcba"``. Learnable: validation loss falls and
  completion accuracy rises with training.
* ``random_labels``: ``"code for abcde:"`` -> ``" wxyz"``, the label drawn independently of the
  prompt. Nothing generalises, so a model first learns the letter distribution (validation loss
  floor ``4 ln 26 / 6 = 2.17`` per completion token with the byte tokenizer) and then
  memorises: validation loss reaches its minimum early and rises after. An over-fitting
  fixture.

:func:`write_task` writes train and validation JSONL files, prompt/completion or chat.
"""

from __future__ import annotations

import json
import random
import string
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

__all__ = [
    "TASKS",
    "as_chat",
    "generate",
    "random_labels",
    "reverse_words",
    "support_tickets",
    "write_jsonl",
    "write_task",
]

Example = dict[str, Any]


def _word(rng: random.Random, length: int) -> str:
    return "".join(rng.choice(string.ascii_lowercase) for _ in range(length))


def _unique_words(rng: random.Random, n: int, lengths: tuple[int, int]) -> list[str]:
    seen: dict[str, None] = {}
    while len(seen) < n:
        seen.setdefault(_word(rng, rng.randint(*lengths)), None)
    return list(seen)


def reverse_words(n: int, seed: int = 0, lengths: tuple[int, int] = (3, 6)) -> list[Example]:
    """``n`` distinct reverse-a-word examples (prompt/completion)."""
    rng = random.Random(f"reverse-{seed}")
    return [
        {"prompt": f"reverse: {w}\n->", "completion": f" {w[::-1]}"}
        for w in _unique_words(rng, n, lengths)
    ]


def random_labels(n: int, seed: int = 0) -> list[Example]:
    """``n`` examples mapping a distinct 5-letter code to a random 4-letter label."""
    rng = random.Random(f"random-labels-{seed}")
    return [
        {"prompt": f"code for {w}:", "completion": f" {_word(rng, 4)}"}
        for w in _unique_words(rng, n, (5, 5))
    ]


_TICKETS = {
    "billing": (
        "I was charged {n} times for my {item} order",
        "My invoice shows the wrong amount for the {item}",
        "Please refund the {item} I returned {when}",
        "Why did my card get billed {when} for a {item}?",
        "The discount code was not applied to my {item}",
    ),
    "shipping": (
        "My {item} has not arrived and it was due {when}",
        "The tracking number for my {item} does not work",
        "Can you ship the {item} to a different address?",
        "The box with my {item} arrived damaged {when}",
        "How long does delivery of a {item} take to {place}?",
    ),
    "account": (
        "I cannot log in to my account since {when}",
        "Please change the email address on my account to my {place} office",
        "How do I delete my account and the data about my {item}?",
        "I forgot my password and the reset link expired {when}",
        "Someone in {place} may have used my account {when}",
        "My account was locked after {n} failed sign-ins",
    ),
    "technical": (
        "The {item} app crashes when I open it",
        "My {item} will not connect to wifi since {when}",
        "The {item} shows error code {n} on start",
        "The firmware update for my {item} failed {when}",
        "The screen of my {item} flickers after {n} minutes",
    ),
}
_FILL = {
    "item": ("headphones", "kettle", "camera", "laptop", "speaker", "watch", "router", "lamp"),
    "when": ("yesterday", "last week", "this morning", "on Monday", "two days ago", "today"),
    "place": ("Berlin", "Lyon", "Leeds", "Porto", "Oslo", "Dublin"),
    "n": ("2", "3", "4", "17", "42", "503"),
}
TICKET_SYSTEM = "Route the support ticket to one team: billing, shipping, account or technical."


def support_tickets(n: int, seed: int = 0) -> list[Example]:
    """``n`` distinct support tickets labelled with the team that handles them.

    A learnable classification task for a pretrained model: the label follows from the words
    of the ticket. Classes are balanced.
    """
    rng = random.Random(f"tickets-{seed}")
    labels = sorted(_TICKETS)
    seen: dict[str, str] = {}
    tries = 0
    while len(seen) < n:
        tries += 1
        if tries > 200 * n:
            raise ValueError(f"the tickets task has fewer than {n} distinct examples")
        label = labels[len(seen) % len(labels)]
        template = rng.choice(_TICKETS[label])
        text = template.format(**{k: rng.choice(v) for k, v in _FILL.items()})
        if text not in seen:
            seen[text] = label
    rows = [{"prompt": text, "completion": f" {label}"} for text, label in seen.items()]
    rng.shuffle(rows)
    return rows


TASKS = {"reverse": reverse_words, "random_labels": random_labels, "tickets": support_tickets}
SYSTEM_PROMPTS = {"tickets": TICKET_SYSTEM}


def generate(task: str, n: int, seed: int = 0) -> list[Example]:
    """``n`` examples of the task named ``task`` (see :data:`TASKS`)."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; known: {', '.join(TASKS)}")
    return TASKS[task](n, seed)


def as_chat(examples: Iterable[Example], system: str | None = None) -> list[Example]:
    """The same examples as chat ``messages`` (prompt -> user, completion -> assistant)."""
    head = [{"role": "system", "content": system}] if system else []
    return [
        {
            "messages": [
                *head,
                {"role": "user", "content": e["prompt"]},
                {"role": "assistant", "content": e["completion"].strip()},
            ]
        }
        for e in examples
    ]


def write_jsonl(path: Path, rows: Iterable[Example]) -> Path:
    """Write one JSON object per line; returns ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    return path


def write_task(
    task: str,
    out_dir: Path,
    *,
    n_train: int = 160,
    n_valid: int = 40,
    n_test: int = 0,
    seed: int = 0,
    fmt: Literal["prompt_completion", "chat"] = "prompt_completion",
) -> tuple[Path, ...]:
    """Write ``<task>.train.jsonl`` and ``<task>.valid.jsonl`` (disjoint) into ``out_dir``,
    and with ``n_test`` a held-out ``<task>.test.jsonl`` (for ``evaluate:``) whose prompts
    appear in neither; the train and valid files do not depend on ``n_test``."""
    rows = generate(task, n_train + n_valid, seed)
    test = held_out(task, n_test, seed, {r["prompt"] for r in rows}) if n_test else []
    if fmt == "chat":
        rows = as_chat(rows, SYSTEM_PROMPTS.get(task))
        test = as_chat(test, SYSTEM_PROMPTS.get(task))
    suffix = "" if fmt == "prompt_completion" else ".chat"
    train = write_jsonl(out_dir / f"{task}{suffix}.train.jsonl", rows[:n_train])
    valid = write_jsonl(out_dir / f"{task}{suffix}.valid.jsonl", rows[n_train:])
    if not test:
        return train, valid
    return train, valid, write_jsonl(out_dir / f"{task}{suffix}.test.jsonl", test)


def held_out(task: str, n: int, seed: int, seen: set[str]) -> list[Example]:
    """``n`` examples of ``task`` from another seed, none of whose prompts is in ``seen``."""
    for extra in (2 * n, 8 * n, 32 * n):
        fresh = [r for r in generate(task, n + extra, seed + 1_000) if r["prompt"] not in seen]
        if len(fresh) >= n:
            return fresh[:n]
    raise ValueError(f"{task}: fewer than {n} examples unlike the training data")


def main(argv: list[str] | None = None) -> None:
    """``python -m orchestrator.backends.local.tasks TASK OUT_DIR``: write a task's files."""
    import argparse

    parser = argparse.ArgumentParser(description="Write a generated task's train/valid JSONL.")
    parser.add_argument("task", choices=sorted(TASKS))
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--n-train", type=int, default=160)
    parser.add_argument("--n-valid", type=int, default=40)
    parser.add_argument(
        "--n-test", type=int, default=0, help="also a held-out test file for evaluate:"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--format", dest="fmt", choices=("prompt_completion", "chat"), default="prompt_completion"
    )
    args = parser.parse_args(argv)
    for path in write_task(
        args.task,
        args.out_dir,
        n_train=args.n_train,
        n_valid=args.n_valid,
        n_test=args.n_test,
        seed=args.seed,
        fmt=args.fmt,
    ):
        print(path)


if __name__ == "__main__":
    main()

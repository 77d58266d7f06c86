"""Advice from the data's shape: what a sweep over this data should search or watch.

Computed from what the one streaming pass of :mod:`.checks` keeps anyway (per-example lengths
and line numbers as compact arrays, the label counts), never from the examples. Lengths are
tokens where a counter counted them, else characters. Each rule and its threshold:

* **prompt_loss_weight** — the median prompt (everything not trained on: system and user
  messages, or the prompt) is at least :data:`PROMPT_RATIO` times the median completion
  (assistant messages, or the completion): suggest a low ``prompt_loss_weight`` (local
  trainer only). arXiv 2401.13586 found the weight matters for short-completion data, with
  the best weights between 0.01 and 0.5 there.
* **metric** — the data looks like classification (few distinct answers, see
  :mod:`.checks`): optimise an accuracy (``valid_mean_token_accuracy``, or with the local
  trainer's ``eval_generations`` ``full_valid_label_accuracy``) rather than the loss, which
  also rewards confidence on answers already right.
* **more_epochs** — fewer than :data:`SMALL_EXAMPLES` examples: the provider's own default
  for that size (100 // n epochs) is above the default range (2–4): search up to it.
* **length_outliers** — examples over :data:`OUTLIER_FACTOR` times the median length and at
  least :data:`OUTLIER_MIN_EXTRA_TOKENS` tokens (or 4x as many characters) over it, as the
  legacy ``prepare_data`` tool flagged long examples: named by line; they dominate a batch's
  memory and time.
* **label_imbalance** — the most common label has at least :data:`IMBALANCE_RATIO` times the
  examples of the rarest: a model that always gives it scores its share in accuracy, so watch
  accuracy against that share, not against 0.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

__all__ = [
    "IMBALANCE_RATIO",
    "OUTLIER_FACTOR",
    "OUTLIER_MIN_EXTRA_TOKENS",
    "PROMPT_RATIO",
    "SMALL_EXAMPLES",
    "Advice",
    "advise",
    "for_sweep",
]

PROMPT_RATIO = 5.0
SMALL_EXAMPLES = 25  # below this, 100 // n (the provider's default epochs) is above 4
OUTLIER_FACTOR = 5.0
OUTLIER_MIN_EXTRA_TOKENS = 256
IMBALANCE_RATIO = 3.0
MAX_LINES = 20
DEFAULT_EPOCHS_HIGH = 4  # the high end of the default n_epochs range (DESIGN: int 2-4)


@dataclass(frozen=True)
class Advice:
    """One suggestion for the sweep: ``code`` (which rule), ``message`` (what to do, with the
    evidence in numbers), for length outliers the first lines and their count, and where the
    advice names a value, that value (``more_epochs``: the n_epochs to search up to)."""

    code: str
    message: str
    lines: tuple[int, ...] = ()
    count: int = 0
    value: float | None = None


def advise(
    *,
    n_examples: int,
    task: str | None,
    labels: Mapping[str, int] | None,
    lengths: Sequence[int],
    trained: Sequence[int],
    lines: Sequence[int],
    unit: str,
) -> tuple[Advice, ...]:
    """The advice for one training file.

    ``lengths`` and ``trained`` are per usable example (total and trained-on length, in
    ``unit``: "tokens" or "characters"), ``lines`` their line numbers, all in file order."""
    out: list[Advice] = []
    if len(lengths) and len(trained) == len(lengths):
        out += _prompt_weight(lengths, trained, unit)
    if task == "classification":
        out.append(
            Advice(
                "metric",
                "classification-like data: optimise an accuracy, not the loss: "
                "objective valid_mean_token_accuracy (maximize), or on the local trainer "
                "full_valid_label_accuracy with backend option eval_generations: N",
            )
        )
    if 0 < n_examples < SMALL_EXAMPLES:
        high = min(25, 100 // n_examples)
        out.append(
            Advice(
                "more_epochs",
                f"only {n_examples} examples: the provider's default for this size is {high} "
                f"epochs, above the default range (2-{DEFAULT_EPOCHS_HIGH}); search n_epochs "
                f"up to {high} (space.n_epochs: {{low: 2, high: {high}}})",
                value=high,
            )
        )
    if len(lengths) == len(lines) and len(lengths) > 1:
        outlier = _outliers(lengths, lines, unit)
        if outlier is not None:
            out.append(outlier)
    if task == "classification" and labels and len(labels) > 1:
        counts = sorted(labels.values())
        if counts[-1] >= IMBALANCE_RATIO * counts[0]:
            top = max(labels, key=lambda k: labels[k])
            share = 100 * labels[top] / sum(counts)
            out.append(
                Advice(
                    "label_imbalance",
                    f"labels are imbalanced ({top!r} {labels[top]}, the rarest {counts[0]}): "
                    f"always answering {top!r} scores {share:.0f} % accuracy, so judge "
                    f"valid_mean_token_accuracy against {share:.0f} %, not 0, and look at the "
                    "rare labels' answers",
                )
            )
    return tuple(out)


def for_sweep(
    advice: Sequence[Advice],
    *,
    takes_prompt_loss_weight: bool,
    prompt_loss_weight_low: float | None,
    objective: str,
    epochs_high: int | None,
) -> tuple[Advice, ...]:
    """The advice that still applies to a sweep: none on ``prompt_loss_weight`` for a
    backend that does not take it or a space that reaches 0.01 already, none on the metric
    when the objective is an accuracy already, none on epochs when the space reaches as far
    (``epochs_high``)."""
    kept = []
    for a in advice:
        if a.code == "prompt_loss_weight" and (
            not takes_prompt_loss_weight
            or (prompt_loss_weight_low is not None and prompt_loss_weight_low <= 0.01)
        ):
            continue
        if a.code == "metric" and "accuracy" in objective:
            continue
        if (
            a.code == "more_epochs"
            and epochs_high is not None
            and a.value is not None
            and epochs_high >= a.value
        ):
            continue
        kept.append(a)
    return tuple(kept)


def _prompt_weight(lengths: Sequence[int], trained: Sequence[int], unit: str) -> list[Advice]:
    import numpy as np

    total = np.asarray(lengths, dtype=np.float64)
    done = np.asarray(trained, dtype=np.float64)
    prompt, completion = float(np.median(total - done)), float(np.median(done))
    if prompt < PROMPT_RATIO * max(completion, 1.0):
        return []
    ratio = prompt / max(completion, 1.0)
    return [
        Advice(
            "prompt_loss_weight",
            f"prompts are {ratio:.0f}x longer than completions (median {prompt:g} vs "
            f"{completion:g} {unit}): with the local trainer, keep prompt_loss_weight low "
            "(search 0.01-0.1; arXiv 2401.13586 finds it matters for short completions, best "
            "0.01-0.5 there); OpenAI and Azure jobs do not take it",
        )
    ]


def _outliers(lengths: Sequence[int], lines: Sequence[int], unit: str) -> Advice | None:
    import numpy as np

    arr = np.asarray(lengths, dtype=np.float64)
    median = float(np.median(arr))
    extra = OUTLIER_MIN_EXTRA_TOKENS * (4 if unit == "characters" else 1)
    limit = max(OUTLIER_FACTOR * median, median + extra)
    hits = np.nonzero(arr > limit)[0]
    if hits.size == 0:
        return None
    shown = tuple(int(lines[int(i)]) for i in hits[:MAX_LINES])
    where = ", ".join(str(n) for n in shown[:10]) + (", ..." if hits.size > 10 else "")
    longest = int(arr[hits].max())
    return Advice(
        "length_outliers",
        f"{hits.size} example{'s' * (hits.size != 1)} far longer than the rest (over "
        f"{limit:g} {unit}, the larger of {OUTLIER_FACTOR:g}x the median {median:g} and the "
        f"median + {extra}; the longest has {longest:,}) "
        f"at line{'s' * (hits.size != 1)} {where}: check them, or drop or split them, as they "
        "dominate a batch's memory and time",
        shown,
        int(hits.size),
    )

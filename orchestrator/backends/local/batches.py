"""Encoded examples laid out as one forward pass: padded rows or packed rows.

* **padded**: one example per row, right-padded to the longest, with an attention mask (what
  the loop always did).
* **packed**: the examples placed first-fit-decreasing into rows as wide as the longest
  example, with position ids restarting at 0 for each example and no attention mask.
  transformers reads the restarts as separate sequences (block-diagonal causal attention: an
  example never sees its neighbours), so the math is the padded one; only the padding goes.
  A row's unused tail is one more "sequence" of pad tokens that no target reads.

Either way the layout lists the *targets*: every position whose next token carries a loss
weight (or is a completion token), flattened as ``row * width + column``, with that next
token, its weight and completion flag, and which example it belongs to. The loss reads the
hidden states at those positions only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from orchestrator.backends.local.encoding import Encoded

__all__ = ["Layout", "lay_out"]


@dataclass
class Layout:
    """Model inputs for a list of examples, as plain lists (the loss makes them tensors)."""

    input_ids: list[list[int]]
    #: per-row attention mask (padded layout), or None (packed)
    attention_mask: list[list[int]] | None
    #: per-row position ids (packed layout), or None (padded: positions are 0..width-1)
    position_ids: list[list[int]] | None
    positions: list[int] = field(default_factory=list)
    targets: list[int] = field(default_factory=list)
    weights: list[float] = field(default_factory=list)
    completion: list[bool] = field(default_factory=list)
    example: list[int] = field(default_factory=list)
    #: tokens of the examples themselves (what is trained on)
    n_tokens: int = 0

    @property
    def width(self) -> int:
        return len(self.input_ids[0]) if self.input_ids else 0

    @property
    def n_slots(self) -> int:
        """Token slots the model computes (rows x width): tokens plus padding."""
        return len(self.input_ids) * self.width


def _targets(layout: Layout, example: Encoded, index: int, start: int) -> None:
    """Add ``example``'s targets; its first token sits at flat position ``start``."""
    weights, completion, ids = example.weights, example.completion, example.input_ids
    for t in range(len(example) - 1):
        if weights[t + 1] > 0 or completion[t + 1]:
            layout.positions.append(start + t)
            layout.targets.append(ids[t + 1])
            layout.weights.append(weights[t + 1])
            layout.completion.append(completion[t + 1])
            layout.example.append(index)


def lay_out(examples: Sequence[Encoded], pad_id: int, *, packed: bool) -> Layout:
    """The forward pass of ``examples`` (see the module docstring)."""
    width = max(len(e) for e in examples)
    n_tokens = sum(len(e) for e in examples)
    if not packed:
        layout = Layout([], [], None, n_tokens=n_tokens)
        assert layout.attention_mask is not None
        for row, e in enumerate(examples):
            pad = width - len(e)
            layout.input_ids.append([*e.input_ids, *([pad_id] * pad)])
            layout.attention_mask.append([1] * len(e) + [0] * pad)
            _targets(layout, e, row, row * width)
        return layout
    order = sorted(range(len(examples)), key=lambda i: -len(examples[i]))
    rows: list[list[int]] = []  # example indices per row
    free: list[int] = []
    for i in order:
        n = len(examples[i])
        for r, room in enumerate(free):
            if room >= n:
                rows[r].append(i)
                free[r] -= n
                break
        else:
            rows.append([i])
            free.append(width - n)
    layout = Layout([], None, [], n_tokens=n_tokens)
    assert layout.position_ids is not None
    for r, members in enumerate(rows):
        ids: list[int] = []
        pos: list[int] = []
        for i in members:
            e = examples[i]
            _targets(layout, e, i, r * width + len(ids))
            ids += e.input_ids
            pos += range(len(e))
        pad = width - len(ids)
        layout.input_ids.append(ids + [pad_id] * pad)
        layout.position_ids.append(pos + list(range(pad)))
    return layout

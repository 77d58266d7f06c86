"""The learning curve's fit and plot: ``loss(n) = a * n**-b + c`` through ``(n, loss)`` points.

:func:`fit_power_law` fits by least squares on ``log(loss - c)`` against ``log n`` for a grid
of floors ``0 <= c < min(loss)``, keeping the floor whose curve is closest to the points; the
answer (:meth:`Fit.verdict`) says whether a doubling of the data is predicted to lower the
validation loss by at least :data:`WORTH_PCT` per cent. :func:`plot_curve` draws the points,
the token accuracy on a second axis and the fitted curve to twice the data (a matplotlib PNG).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

__all__ = ["WORTH_PCT", "Fit", "Measured", "fit_power_law", "plot_curve"]

#: a doubling must lower the validation loss by this much (per cent) to be worth it
WORTH_PCT = 2.0


@dataclass(frozen=True)
class Fit:
    """``loss(n) = a * n**-b + c`` (``c`` the floor)."""

    a: float
    b: float
    c: float
    n_max: int
    rmse: float

    def predict(self, n: float) -> float:
        """The fitted loss at ``n`` examples."""
        return float(self.a * n**-self.b + self.c)

    @property
    def doubling_gain(self) -> float:
        """How much lower the loss is predicted at twice the largest size."""
        return self.predict(self.n_max) - self.predict(2 * self.n_max)

    def verdict(self, metric: str) -> str:
        """One line: whether twice the data is worth it, with the predicted gain."""
        now = self.predict(self.n_max)
        gain = self.doubling_gain
        pct = 100 * gain / now if now > 0 else 0.0
        n2 = 2 * self.n_max
        law = f"{metric} ~ {self.a:.3g}*n^-{self.b:.3g} + {self.c:.3g}"
        if self.b <= 0 or gain <= 0:
            return f"more data: not worth it: {metric} does not fall with more examples ({law})"
        worth = "worth it" if pct >= WORTH_PCT else "not worth it"
        return (
            f"more data: {worth}: doubling to {n2} examples would lower {metric} by about "
            f"{gain:.3g} ({pct:.1f} %), from {now:.4g} to {now - gain:.4g} ({law})"
        )


def fit_power_law(points: Sequence[tuple[float, float]]) -> Fit | None:
    """The power law with a floor closest to ``(n, loss)`` points (None for fewer than 2
    usable points). With 2 points the floor is 0."""
    usable = sorted((n, y) for n, y in points if n > 0 and y is not None and math.isfinite(y))
    if len(usable) < 2 or len({n for n, _ in usable}) < 2:
        return None
    low = min(y for _, y in usable)
    floors = [0.0] if len(usable) < 3 or low <= 0 else [low * i / 50 for i in range(50)]
    best: Fit | None = None
    xs = [math.log(n) for n, _ in usable]
    for c in floors:
        if any(y - c <= 0 for _, y in usable):
            continue
        ys = [math.log(y - c) for _, y in usable]
        mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
        sxx = sum((x - mx) ** 2 for x in xs)
        slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx
        a = math.exp(my - slope * mx)
        fit = Fit(a, -slope, c, int(max(n for n, _ in usable)), 0.0)
        rmse = math.sqrt(sum((fit.predict(n) - y) ** 2 for n, y in usable) / len(usable))
        fit = replace(fit, rmse=rmse)
        if best is None or rmse < best.rmse - 1e-12:
            best = fit
    return best


class Measured(Protocol):
    """What the plot shows of one fraction: its examples, validation loss and token accuracy."""

    @property
    def n_examples(self) -> int: ...

    @property
    def loss(self) -> float | None: ...

    @property
    def accuracy(self) -> float | None: ...


def plot_curve(
    points: Sequence[Measured], fit: Fit | None, metric: str, path: Path, title: str
) -> None:
    """Write the learning curve to ``path`` (PNG): the loss against the examples on a log
    axis, the token accuracy on a second axis, the fit to twice the data."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [p for p in points if p.loss is not None]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot([p.n_examples for p in done], [p.loss or 0.0 for p in done], "o-", label=metric)
    if fit is not None:
        lo = min(p.n_examples for p in done)
        xs = [lo * (2 * fit.n_max / lo) ** (i / 60) for i in range(61)]
        ax.plot(xs, [fit.predict(x) for x in xs], "--", label="power law (to 2x the data)")
    ax.set_xscale("log")
    ax.set_xlabel("training examples")
    ax.set_ylabel(metric)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    accuracy = [p for p in done if p.accuracy is not None]
    if accuracy:
        ax2 = ax.twinx()
        ax2.plot(
            [p.n_examples for p in accuracy],
            [p.accuracy or 0.0 for p in accuracy],
            "s:",
            color="tab:green",
            label="token accuracy",
        )
        ax2.set_ylabel("token accuracy")
        ax2.legend(loc="upper right")
    ax.legend(loc="upper left" if accuracy else "best")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)

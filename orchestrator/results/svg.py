"""A small SVG chart writer: the report's plots and each trial's loss curve, without matplotlib.

At the end of a sweep, importing matplotlib and driving its artists for one PNG per trial and
the report's five plots cost more CPU than the trials' logging (issue 25); the charts are lines,
markers, vertical marks and bars on linear or log axes, which a page of string formatting draws
in milliseconds. Every chart is plain SVG text (selectable labels, no fonts embedded) that a
browser, the MLflow UI's artifact viewer and the HTML report show as they showed the PNG and
matplotlib's SVG.

:class:`Panel` is one plot area (data, axes, ticks, title, legend); :func:`figure` lays panels
out on a grid as one ``<svg>`` element; :func:`colormap` interpolates the two colour maps used.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

__all__ = ["Panel", "colormap", "document", "figure", "marker", "polyline", "text", "ticks"]

#: the font of every label (the report's own)
FONT = "-apple-system,Segoe UI,Helvetica,Arial,sans-serif"
#: matplotlib's default colour cycle, for series given no colour
CYCLE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b")
_MAPS: dict[str, tuple[str, ...]] = {
    "viridis": (
        "#440154", "#482878", "#3e4989", "#31688e", "#26828e",
        "#1f9e89", "#35b779", "#6ece58", "#b5de2b", "#fde725",
    ),
    "blues": (
        "#f7fbff", "#deebf7", "#c6dbef", "#9ecae1", "#6baed6",
        "#4292c6", "#2171b5", "#08519c", "#08306b",
    ),
}  # fmt: skip


def colormap(name: str, t: float) -> str:
    """The colour at ``t`` (0..1, clipped) of ``viridis`` or ``blues``, as ``#rrggbb``."""
    stops = _MAPS[name]
    t = min(1.0, max(0.0, t)) if math.isfinite(t) else 0.0
    pos = t * (len(stops) - 1)
    i = min(int(pos), len(stops) - 2)
    a, b = _rgb(stops[i]), _rgb(stops[i + 1])
    f = pos - i
    return "#" + "".join(f"{round(x + (y - x) * f):02x}" for x, y in zip(a, b, strict=True))


def _rgb(colour: str) -> tuple[int, int, int]:
    return int(colour[1:3], 16), int(colour[3:5], 16), int(colour[5:7], 16)


def ticks(lo: float, hi: float, log: bool = False, n: int = 5) -> list[float]:
    """About ``n`` round tick values within ``[lo, hi]`` (powers of ten on a log axis that
    spans a decade, else round values)."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return []
    if hi <= lo:
        return [lo]
    if log and lo > 0:
        first, last = math.ceil(math.log10(lo) - 1e-9), math.floor(math.log10(hi) + 1e-9)
        if last - first >= 1:
            every = max(1, math.ceil((last - first + 1) / 6))
            return [10.0**e for e in range(first, last + 1, every)]
        out = [m * 10.0**e for e in range(first - 1, last + 1) for m in (1, 2, 5)]
        out = [v for v in out if lo * (1 - 1e-9) <= v <= hi * (1 + 1e-9)]
        if len(out) >= 2:
            return out
    raw = (hi - lo) / max(1, n)
    mag = 10.0 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1.0, 2.0, 2.5, 5.0, 10.0) if m * mag >= raw)
    start = math.ceil(lo / step - 1e-9)
    return [round(k * step, 12) for k in range(start, math.floor(hi / step + 1e-9) + 1)]


def _num(v: float) -> str:
    return f"{v:.1f}".rstrip("0").rstrip(".")


def _label(v: float) -> str:
    return f"{v:g}" if abs(v) >= 1e-4 or v == 0 else f"{v:.1e}"


def text(
    x: float,
    y: float,
    s: str,
    *,
    size: float = 9,
    anchor: str = "middle",
    colour: str = "#24292f",
    rotate: float | None = None,
    weight: str | None = None,
) -> str:
    """One ``<text>`` element (escaped)."""
    extra = f" transform='rotate({_num(rotate)} {_num(x)} {_num(y)})'" if rotate else ""
    bold = f" font-weight='{weight}'" if weight else ""
    return (
        f"<text x='{_num(x)}' y='{_num(y)}' font-size='{size:g}' text-anchor='{anchor}' "
        f"fill='{colour}'{bold}{extra}>{html.escape(s)}</text>"
    )


def polyline(
    points: Sequence[tuple[float, float]],
    colour: str,
    width: float = 1.2,
    dash: str | None = None,
    opacity: float = 1.0,
) -> str:
    """One ``<polyline>`` through pixel ``points``."""
    pts = " ".join(f"{_num(x)},{_num(y)}" for x, y in points)
    style = f" stroke-dasharray='{dash}'" if dash else ""
    if opacity < 1:
        style += f" stroke-opacity='{opacity:g}'"
    return (
        f"<polyline points='{pts}' fill='none' stroke='{colour}' stroke-width='{width:g}' "
        f"stroke-linejoin='round'{style}/>"
    )


def marker(x: float, y: float, colour: str, size: float, kind: str = "o", edge: str = "") -> str:
    """A circle (``o``) or a cross (``x``) centred on pixel (x, y)."""
    if kind == "x":
        d = size * 0.8
        return (
            f"<path d='M{_num(x - d)},{_num(y - d)}L{_num(x + d)},{_num(y + d)}"
            f"M{_num(x - d)},{_num(y + d)}L{_num(x + d)},{_num(y - d)}' "
            f"stroke='{colour}' stroke-width='1.4'/>"
        )
    stroke = f" stroke='{edge}' stroke-width='0.6'" if edge else ""
    return f"<circle cx='{_num(x)}' cy='{_num(y)}' r='{size:g}' fill='{colour}'{stroke}/>"


@dataclass
class _Series:
    kind: str  # line, scatter, vline, right
    xs: list[float]
    ys: list[float]
    colour: str
    label: str | None = None
    width: float = 1.2
    dash: str | None = None
    markers: str = ""  # "" none, "o" circles, "x" crosses
    size: float = 3.0
    colours: list[str] | None = None
    edge: str = ""
    opacity: float = 1.0


DASHES = {"-": None, "--": "5 3", ":": "1.5 2.5"}


@dataclass
class Panel:
    """One plot area ``width`` × ``height`` pixels: series in data units, drawn by
    :meth:`render` with axes scaled to what they hold (log where asked, a second y axis on
    the right for :meth:`right`), round ticks, a title, axis labels and a legend."""

    width: float = 360
    height: float = 270
    title: str = ""
    title_colour: str = "#24292f"
    xlabel: str = ""
    ylabel: str = ""
    xlog: bool = False
    ylog: bool = False
    legend: bool = True
    right_range: tuple[float, float] = (0.0, 1.0)
    series: list[_Series] = field(default_factory=list)
    bars: list[tuple[str, float]] = field(default_factory=list)
    xlim: tuple[float, float] | None = None

    def line(
        self,
        xs: Sequence[float],
        ys: Sequence[float],
        colour: str,
        *,
        label: str | None = None,
        width: float = 1.2,
        style: str = "-",
        markers: bool = False,
        opacity: float = 1.0,
    ) -> None:
        """A line through the points (``style`` ``-``, ``--`` or ``:``; ``markers``: a dot
        on each); non-finite points break it."""
        self.series.append(
            _Series(
                "line",
                [float(x) for x in xs],
                [float(y) for y in ys],
                colour,
                label,
                width,
                DASHES[style],
                "o" if markers else "",
                2.2,
                opacity=opacity,
            )
        )

    def scatter(
        self,
        xs: Sequence[float],
        ys: Sequence[float],
        colour: str,
        *,
        label: str | None = None,
        size: float = 3.0,
        kind: str = "o",
        colours: Sequence[str] | None = None,
        edge: str = "",
    ) -> None:
        """A marker at each point (``kind`` ``o`` or ``x``; ``colours``: one per point)."""
        self.series.append(
            _Series(
                "scatter",
                [float(x) for x in xs],
                [float(y) for y in ys],
                colour,
                label,
                markers=kind,
                size=size,
                colours=list(colours) if colours else None,
                edge=edge,
            )
        )

    def vline(self, x: float, colour: str, *, label: str | None = None, style: str = "--") -> None:
        """A vertical mark at ``x`` across the plot."""
        self.series.append(_Series("vline", [float(x)], [], colour, label, 1.0, DASHES[style]))

    def right(
        self, xs: Sequence[float], ys: Sequence[float], colour: str, *, label: str | None = None
    ) -> None:
        """A dotted line on a second y axis at the right (range :attr:`right_range`)."""
        self.series.append(
            _Series(
                "right",
                [float(x) for x in xs],
                [float(y) for y in ys],
                colour,
                label,
                1.0,
                DASHES[":"],
            )
        )

    def barh(self, names: Sequence[str], values: Sequence[float]) -> None:
        """Horizontal bars, the first name at the bottom (categories on the y axis)."""
        self.bars = [(str(n), float(v)) for n, v in zip(names, values, strict=True)]

    # -- drawing -----------------------------------------------------------------------------
    def _range(self, values: list[float], log: bool) -> tuple[float, float]:
        vals = [v for v in values if math.isfinite(v) and (v > 0 or not log)]
        if not vals:
            return (1.0, 10.0) if log else (0.0, 1.0)
        lo, hi = min(vals), max(vals)
        if log:
            if hi <= lo:
                return lo / 2, hi * 2
            pad = (hi / lo) ** 0.05
            return lo / pad, hi * pad
        if hi <= lo:
            d = abs(lo) * 0.05 or 0.5
            return lo - d, hi + d
        d = (hi - lo) * 0.05
        return lo - d, hi + d

    def render(self) -> str:
        """The panel as an SVG ``<g>`` fragment at (0, 0)."""
        right = any(s.kind == "right" for s in self.series)
        left = 110.0 if self.bars else 52.0
        x0, x1 = left, self.width - (40.0 if right else 12.0)
        y0, y1 = self.height - (34.0 if self.xlabel else 22.0), 22.0 if self.title else 8.0
        out = [
            f"<rect x='{_num(x0)}' y='{_num(y1)}' width='{_num(x1 - x0)}' "
            f"height='{_num(y0 - y1)}' fill='none' stroke='#d0d7de' stroke-width='0.8'/>"
        ]
        if self.title:
            out.append(text((x0 + x1) / 2, 14, self.title, size=10, colour=self.title_colour))
        if self.xlabel:
            out.append(text((x0 + x1) / 2, self.height - 4, self.xlabel, size=9))
        if self.ylabel:
            mid = (y0 + y1) / 2
            out.append(text(12, mid, self.ylabel, size=9, rotate=-90))
        if self.bars:
            out += self._render_bars(x0, x1, y0, y1)
            return "".join(out)
        xs = [x for s in self.series for x in s.xs]
        ys = [y for s in self.series if s.kind in ("line", "scatter") for y in s.ys]
        xlo, xhi = self.xlim or self._range(xs, self.xlog)
        ylo, yhi = self._range(ys, self.ylog)

        def sx(v: float) -> float:
            if self.xlog:
                v, a, b = math.log10(v), math.log10(xlo), math.log10(xhi)
                return x0 + (v - a) / (b - a) * (x1 - x0)
            return x0 + (v - xlo) / (xhi - xlo) * (x1 - x0)

        def sy(v: float, lo: float = ylo, hi: float = yhi, log: bool = self.ylog) -> float:
            if log:
                v, lo, hi = math.log10(v), math.log10(lo), math.log10(hi)
            return y0 - (v - lo) / (hi - lo) * (y0 - y1)

        for t in ticks(xlo, xhi, self.xlog):
            x = sx(t)
            out.append(
                f"<line x1='{_num(x)}' y1='{_num(y1)}' x2='{_num(x)}' y2='{_num(y0)}' "
                "stroke='#d0d7de' stroke-width='0.5'/>"
            )
            out.append(text(x, y0 + 12, _label(t), size=8))
        for t in ticks(ylo, yhi, self.ylog):
            y = sy(t)
            out.append(
                f"<line x1='{_num(x0)}' y1='{_num(y)}' x2='{_num(x1)}' y2='{_num(y)}' "
                "stroke='#d0d7de' stroke-width='0.5'/>"
            )
            out.append(text(x0 - 4, y + 3, _label(t), size=8, anchor="end"))
        if right:
            rlo, rhi = self.right_range
            for t in ticks(rlo, rhi):
                out.append(
                    text(x1 + 4, sy(t, rlo, rhi, False) + 3, _label(t), size=7, anchor="start")
                )

        def ok(x: float, y: float, log_y: bool) -> bool:
            good = math.isfinite(x) and math.isfinite(y)
            return good and (x > 0 or not self.xlog) and (y > 0 or not log_y)

        for s in self.series:
            if s.kind == "vline":
                x = s.xs[0]
                if ok(x, 1.0, False) and xlo <= x <= xhi:
                    out.append(polyline([(sx(x), y0), (sx(x), y1)], s.colour, s.width, s.dash))
                continue
            if s.kind == "right":
                rlo, rhi = self.right_range
                pts = [
                    (sx(x), sy(min(max(y, rlo), rhi), rlo, rhi, False))
                    for x, y in zip(s.xs, s.ys, strict=True)
                    if ok(x, y, False)
                ]
                if pts:
                    out.append(polyline(pts, s.colour, s.width, s.dash))
                continue
            runs: list[list[tuple[float, float]]] = [[]]
            for i, (x, y) in enumerate(zip(s.xs, s.ys, strict=True)):
                if ok(x, y, self.ylog):
                    runs[-1].append((sx(x), sy(y)))
                    if s.kind == "scatter":
                        colour = s.colours[i] if s.colours else s.colour
                        out.append(marker(*runs[-1][-1], colour, s.size, s.markers, s.edge))
                elif runs[-1]:
                    runs.append([])
            if s.kind == "line":
                for run in runs:
                    if len(run) > 1:
                        out.append(polyline(run, s.colour, s.width, s.dash, s.opacity))
                    if s.markers:
                        out += [marker(x, y, s.colour, s.size) for x, y in run]
        if self.legend:
            out += self._render_legend(x1)
        return "".join(out)

    def _render_bars(self, x0: float, x1: float, y0: float, y1: float) -> list[str]:
        out: list[str] = []
        hi = self.xlim[1] if self.xlim else max([v for _, v in self.bars] + [1e-12])
        lo = self.xlim[0] if self.xlim else 0.0
        band = (y0 - y1) / max(1, len(self.bars))
        for i, (name, value) in enumerate(self.bars):
            top = y0 - (i + 1) * band + band * 0.15
            w = max(0.0, (min(value, hi) - lo) / (hi - lo) * (x1 - x0))
            out.append(
                f"<rect x='{_num(x0)}' y='{_num(top)}' width='{_num(w)}' "
                f"height='{_num(band * 0.7)}' fill='#0969da'/>"
            )
            out.append(text(x0 - 4, top + band * 0.35 + 3, name, size=9, anchor="end"))
            out.append(
                text(
                    x0 + w + 3,
                    top + band * 0.35 + 3,
                    f"{value:.2f}",
                    size=8,
                    anchor="start",
                    colour="#57606a",
                )
            )
        for t in ticks(lo, hi):
            x = x0 + (t - lo) / (hi - lo) * (x1 - x0)
            out.append(text(x, y0 + 12, _label(t), size=8))
        return out

    def _render_legend(self, x1: float) -> list[str]:
        entries = [s for s in self.series if s.label]
        if not entries:
            return []
        width = 16 + 5.2 * max(len(s.label or "") for s in entries)
        left, top = x1 - width - 4, (24.0 if self.title else 10.0)
        out = [
            f"<rect x='{_num(left)}' y='{_num(top)}' width='{_num(width)}' "
            f"height='{_num(4 + 11 * len(entries))}' fill='#ffffff' fill-opacity='0.85' "
            "stroke='#d0d7de' stroke-width='0.5'/>"
        ]
        for i, s in enumerate(entries):
            y = top + 9 + 11 * i
            if s.kind == "scatter":
                out.append(marker(left + 8, y - 3, s.colour, 2.5, s.markers))
            else:
                out.append(polyline([(left + 3, y - 3), (left + 13, y - 3)], s.colour, 1.4, s.dash))
            out.append(text(left + 16, y, s.label or "", size=7.5, anchor="start"))
        return out


def document(width: float, height: float, body: str) -> str:
    """``body`` (SVG elements) as one ``<svg>`` element ``width`` × ``height`` on white."""
    return (
        f"<svg xmlns='http://www.w3.org/2000/svg' width='{_num(width)}' height='{_num(height)}' "
        f"viewBox='0 0 {_num(width)} {_num(height)}' font-family='{FONT}'>"
        f"<rect width='{_num(width)}' height='{_num(height)}' fill='#ffffff'/>{body}</svg>"
    )


def figure(panels: Sequence[Panel], cols: int = 1, title: str | None = None) -> str:
    """The panels on a grid of ``cols`` columns (each the size of the first), under an
    optional ``title``, as one ``<svg>`` element."""
    if not panels:
        return ""
    w, h = panels[0].width, panels[0].height
    cols = max(1, min(cols, len(panels)))
    rows = math.ceil(len(panels) / cols)
    head = 22.0 if title else 0.0
    width, height = w * cols, h * rows + head
    out = []
    if title:
        out.append(text(width / 2, 15, title, size=11))
    for i, panel in enumerate(panels):
        x, y = (i % cols) * w, head + (i // cols) * h
        out.append(f"<g transform='translate({_num(x)},{_num(y)})'>{panel.render()}</g>")
    return document(width, height, "".join(out))

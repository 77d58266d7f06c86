"""Run every benchmark (``benchmarks/bench_*.py``) and print one table of their figures.

Each module's ``run(quick)`` returns a list of :class:`~benchmarks.common.Figure`; a module
that is missing, cannot be imported or fails becomes one row saying so, not a crash. The table
(figure, value, baseline, ratio, target, met) is printed and written as JSON and markdown.

Usage::

    python benchmarks/run_all.py [--quick] [--only NAME ...] [--out DIR]

``NAME`` is a module's name without ``bench_`` (``overhead``, ``status``, ...). ``--out``
(default ``benchmarks/results``) receives ``results.json`` and ``results.md``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
import traceback
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
for _p in (str(ROOT), str(HERE)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

COLUMNS = ("figure", "value", "baseline", "ratio", "target", "met", "note")


def discover() -> dict[str, Path]:
    """The benchmark modules present, by name (``bench_overhead.py`` -> ``overhead``)."""
    return {p.stem.removeprefix("bench_"): p for p in sorted(HERE.glob("bench_*.py"))}


def _row(figure: Any) -> dict[str, Any]:
    """A figure as a row; duck-typed, so a module importing ``common`` by either name works."""
    ratio = figure.ratio_or_computed() if hasattr(figure, "ratio_or_computed") else None
    return {
        "figure": str(figure.name),
        "value": figure.value,
        "unit": getattr(figure, "unit", ""),
        "baseline": figure.baseline,
        "ratio": ratio,
        "target": str(figure.target),
        "met": figure.met,
        "note": str(getattr(figure, "note", "")),
    }


def _failed(name: str, why: str) -> dict[str, Any]:
    return {
        "figure": f"{name}: not measured",
        "value": None,
        "unit": "",
        "baseline": None,
        "ratio": None,
        "target": "-",
        "met": False,
        "note": why,
    }


def run_module(name: str, path: Path | None, quick: bool) -> tuple[list[dict[str, Any]], float]:
    """The rows of one benchmark module and its wall seconds."""
    t0 = time.perf_counter()
    if path is None or not path.is_file():
        return [_failed(name, f"benchmarks/bench_{name}.py is missing")], 0.0
    try:
        spec = importlib.util.spec_from_file_location(f"bench_{name}", path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
        figures = list(module.run(quick))
    except Exception as exc:  # one benchmark's failure is a row, not the end of the table
        last = traceback.format_exception_only(type(exc), exc)[-1].strip()
        return [_failed(name, f"failed: {last[:300]}")], time.perf_counter() - t0
    rows = [_row(f) for f in figures] or [_failed(name, "returned no figure")]
    return rows, time.perf_counter() - t0


def _num(v: Any, unit: str = "") -> str:
    if v is None:
        return "-"
    text = str(v)
    if isinstance(v, float):
        text = f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}"
    return f"{text} {unit}".strip()


def _cells(row: dict[str, Any]) -> list[str]:
    met = {True: "yes", False: "NO", None: "-"}[row["met"]]
    ratio = f"{row['ratio']:.2f}x" if isinstance(row["ratio"], int | float) else "-"
    return [
        row["figure"],
        _num(row["value"], row["unit"]),
        _num(row["baseline"], row["unit"]),
        ratio,
        row["target"],
        met,
        row["note"],
    ]


def table(rows: list[dict[str, Any]]) -> str:
    """Plain text, aligned (the note last, unpadded)."""
    cells = [list(COLUMNS), *(_cells(r) for r in rows)]
    widths = [max(len(c[i]) for c in cells) for i in range(len(COLUMNS) - 1)]
    lines = []
    for c in cells:
        lines.append("  ".join(x.ljust(w) for x, w in zip(c, widths, strict=False)) + "  " + c[-1])
    return "\n".join(line.rstrip() for line in lines)


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in rows:
        lines.append("| " + " | ".join(x.replace("|", "\\|") for x in _cells(r)) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller runs (under 10 minutes)")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="run only these benchmarks")
    parser.add_argument("--out", type=Path, default=HERE / "results", help="where to write")
    args = parser.parse_args(argv)
    found = discover()
    names = args.only or list(found)
    rows: list[dict[str, Any]] = []
    started = time.perf_counter()
    for name in names:
        print(f"[run_all] {name} ...", file=sys.stderr, flush=True)
        got, took = run_module(name, found.get(name), args.quick)
        print(f"[run_all] {name}: {took:.0f} s", file=sys.stderr, flush=True)
        rows += got
    total = time.perf_counter() - started
    text = table(rows)
    print(text)
    print(f"\n{len(rows)} figures in {total:.0f} s{' (--quick)' if args.quick else ''}")
    args.out.mkdir(parents=True, exist_ok=True)
    payload = {"quick": args.quick, "seconds": round(total, 1), "figures": rows}
    (args.out / "results.json").write_text(json.dumps(payload, indent=2, default=str) + "\n")
    (args.out / "results.md").write_text(markdown(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Text rendering of a data report."""

from __future__ import annotations

from orchestrator.cli.render import table
from orchestrator.data.findings import DataReport, DatasetStats, Distribution

__all__ = ["render_report"]


def _dist(d: Distribution | None) -> str:
    if d is None:
        return "-"
    return (
        f"min {d.min:g}  p10 {d.p10:g}  median {d.median:g}  mean {d.mean:g}  "
        f"p90 {d.p90:g}  max {d.max:g}"
    )


def _file(stats: DatasetStats, encoding: str) -> list[str]:
    lines = [
        f"{stats.path}: {stats.n_examples:,} examples, {stats.format}, {stats.n_bytes:,} bytes, "
        f"sha256 {stats.sha256[:12]}",
    ]
    if stats.task:
        lines.append(f"  task: {stats.task}")
    if stats.messages is not None and stats.format == "chat":
        lines.append(f"  messages per example:   {_dist(stats.messages)}")
    if stats.tokens is not None:
        trained = "assistant" if stats.format == "chat" else "completion"
        lines.append(f"  tokens per example ({encoding}): {_dist(stats.tokens)}")
        lines.append(f"  {trained} tokens per example: {_dist(stats.trained_tokens)}")
        lines.append(
            f"  tokens: {stats.total_tokens:,} in all, {stats.billed_tokens:,} billed per epoch"
        )
    if stats.separator:
        lines.append(f"  separator: {stats.separator!r}")
    if stats.stop_sequence:
        lines.append(f"  stop sequence: {stats.stop_sequence!r}")
    if stats.labels:
        shown = ", ".join(f"{k!r} {v}" for k, v in list(stats.labels.items())[:8])
        lines.append(f"  labels ({len(stats.labels)}): {shown}")
    return lines


def render_report(report: DataReport) -> str:
    lines = [
        f"model {report.model}: {report.encoding}, at most "
        f"{report.max_tokens_per_example:,} tokens per example",
        "",
        *_file(report.train, report.encoding),
    ]
    if report.valid is not None:
        lines += ["", *_file(report.valid, report.encoding)]
    lines += [
        "",
        f"default n_epochs for {report.train.n_examples:,} examples: {report.default_epochs}",
    ]
    if report.train.tokens is not None:
        price = report.price_per_million
        head = (
            f"estimated training cost at ${price:.2f} per 1M tokens" if price else "training tokens"
        )
        rows = []
        for epochs, cost in report.cost_per_epochs.items():
            tokens = report.train.billed_tokens * epochs
            rows.append([epochs, f"{tokens:,}", "-" if cost is None else f"${cost:,.2f}"])
        lines += [head + ":", table(["epochs", "trained tokens", "cost"], rows, indent="  ")]
    if report.train.advice:
        lines += ["", "advice for a sweep over this data:"]
        lines += [f"  - {a.message}" for a in report.train.advice]
    lines.append("")
    if report.findings:
        lines.append("findings:")
        for f in report.findings:
            lines.append(f"  {f.severity.value:<8} {f.one_line()}")
        lines.append("")
    n_err, n_warn = len(report.errors), len(report.warnings)
    verdict = "OK" if report.ok else "INVALID"
    lines.append(
        f"{verdict}: {n_err} error{'s' * (n_err != 1)}, {n_warn} warning{'s' * (n_warn != 1)}"
    )
    return "\n".join(lines)

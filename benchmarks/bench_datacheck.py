"""Data checks: ``ftsweep validate``'s checks on 1 and 2 workers against the OpenAI cookbook.

The baseline is the OpenAI cookbook's chat data-prep notebook ("Data preparation and analysis
for chat model fine-tuning"), written out faithfully: every line loaded with ``json.loads``
into one list, its format-error checks, then tiktoken (``cl100k_base``, ``encoding.encode``)
per message value for the conversation and assistant token counts, the missing system/user
counts, the distributions and the billing total. ftsweep runs every check it has (structure,
formats, duplicates, labels, exact tokens by the same formula and encoding, costs) with the
model the cookbook assumes (``gpt-3.5-turbo-0613``, ``cl100k_base``); the two token totals must
agree, or the benchmark fails.

Each run is its own process (as ``nice`` as the benchmark), timed for wall and CPU seconds
(its own and its workers'), and its memory sampled every 0.1 s as the sum of the proportional
set size (PSS: shared pages split between the processes sharing them) of the process and all
its children: the honest total of a pool, where per-process peaks would count the forked
tokenizer twice.

Sizes: 10 MB, 100 MB and 1 GB of generated chat data (``quick``: 10 MB and 100 MB).
Reproduce: ``nice python benchmarks/bench_datacheck.py [--quick]``. On a shared machine the
wall figures depend on what else runs; the CPU figures do much less.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import Figure

MODEL = "gpt-3.5-turbo-0613"  # the cookbook's model and encoding (cl100k_base)

COOKBOOK = r"""
import json
from collections import defaultdict

import numpy as np
from orchestrator.catalog.tokens import encoding as offline_encoding


def cookbook(data_path):
    # Load the dataset
    with open(data_path, "r", encoding="utf-8") as f:
        dataset = [json.loads(line) for line in f]

    # Format error checks
    format_errors = defaultdict(int)
    for ex in dataset:
        if not isinstance(ex, dict):
            format_errors["data_type"] += 1
            continue
        messages = ex.get("messages", None)
        if not messages:
            format_errors["missing_messages_list"] += 1
            continue
        for message in messages:
            if "role" not in message or "content" not in message:
                format_errors["message_missing_key"] += 1
            if any(k not in ("role", "content", "name", "function_call", "weight")
                   for k in message):
                format_errors["message_unrecognized_key"] += 1
            if message.get("role", None) not in ("system", "user", "assistant", "function"):
                format_errors["unrecognized_role"] += 1
            content = message.get("content", None)
            function_call = message.get("function_call", None)
            if (not content and not function_call) or not isinstance(content, str):
                format_errors["missing_content"] += 1
        if not any(message.get("role", None) == "assistant" for message in messages):
            format_errors["example_missing_assistant_message"] += 1

    encoding = offline_encoding("cl100k_base")  # tiktoken's encoding, offline (hash-checked)

    def num_tokens_from_messages(messages, tokens_per_message=3, tokens_per_name=1):
        num_tokens = 0
        for message in messages:
            num_tokens += tokens_per_message
            for key, value in message.items():
                num_tokens += len(encoding.encode(value))
                if key == "name":
                    num_tokens += tokens_per_name
        num_tokens += 3
        return num_tokens

    def num_assistant_tokens_from_messages(messages):
        num_tokens = 0
        for message in messages:
            if message["role"] == "assistant":
                num_tokens += len(encoding.encode(message["content"]))
        return num_tokens

    def distribution(values):
        return (min(values), max(values), np.mean(values), np.median(values),
                np.quantile(values, 0.1), np.quantile(values, 0.9))

    n_missing_system = 0
    n_missing_user = 0
    n_messages = []
    convo_lens = []
    assistant_message_lens = []
    for ex in dataset:
        messages = ex["messages"]
        if not any(message["role"] == "system" for message in messages):
            n_missing_system += 1
        if not any(message["role"] == "user" for message in messages):
            n_missing_user += 1
        n_messages.append(len(messages))
        convo_lens.append(num_tokens_from_messages(messages))
        assistant_message_lens.append(num_assistant_tokens_from_messages(messages))
    distribution(n_messages)
    distribution(convo_lens)
    distribution(assistant_message_lens)
    n_too_long = sum(l > 16385 for l in convo_lens)

    MAX_TOKENS_PER_EXAMPLE = 16385
    n_billing_tokens_in_dataset = sum(min(MAX_TOKENS_PER_EXAMPLE, l) for l in convo_lens)
    return {"examples": len(dataset), "tokens": sum(convo_lens), "errors": len(format_errors),
            "too_long": n_too_long, "billed": n_billing_tokens_in_dataset}
"""

CHILD = r"""
import json, resource, sys, time
mode, path, model, workers = sys.argv[1:5]
def cpu(who=None):
    me = resource.getrusage(resource.RUSAGE_SELF)
    if who == "self":
        return me.ru_utime + me.ru_stime
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime
if mode == "cookbook":
    exec(sys.argv[5])
    t0, c0, s0 = time.perf_counter(), cpu(), cpu("self")
    result = cookbook(path)
else:
    from orchestrator.data.checks import check_dataset
    from orchestrator.backends.counters import counter_for_model
    counter = counter_for_model(model)
    t0, c0, s0 = time.perf_counter(), cpu(), cpu("self")
    r = check_dataset(path, counter=counter, model=model, workers=int(workers))
    result = {"examples": r.train.n_examples, "tokens": r.train.total_tokens,
              "errors": len(r.errors)}
result["wall"] = time.perf_counter() - t0
result["cpu"] = cpu() - c0
result["cpu_self"] = cpu("self") - s0
print(json.dumps(result))
"""

WORDS = str.split(
    "the of and to in is you that it he was for on are as with his they at be this have from "
    "or one had by word but not what all were we when your can said there use an each which "
    "she do how their if will up other about out many then them these so some her would make "
    "like him into time has look two more write go see number no way could people my than "
    "first water been call who oil its now find long down day did get come made may part "
    "order refund shipping invoice password router billing account technical delivery"
)


def generate(path: Path, size_bytes: int, seed: int = 0) -> int:
    """About ``size_bytes`` of varied chat examples (a system, a user and an assistant
    message each); returns the number of examples."""
    rng = random.Random(seed)
    written = n = 0
    with path.open("w", encoding="utf-8") as f:
        while written < size_bytes:
            q = " ".join(rng.choices(WORDS, k=rng.randint(20, 120)))
            a = " ".join(rng.choices(WORDS, k=rng.randint(10, 200)))
            row = {
                "messages": [
                    {"role": "system", "content": "You are a helpful support assistant."},
                    {"role": "user", "content": f"{q.capitalize()}? (ticket {n})"},
                    {"role": "assistant", "content": a.capitalize() + "."},
                ]
            }
            line = json.dumps(row) + "\n"
            f.write(line)
            written += len(line)
            n += 1
    return n


def _tree_pss_kb(root: int) -> int:
    """The summed PSS (KiB) of ``root`` and its descendants, from /proc (children lists,
    so a sample costs a few file reads, not a scan of every process)."""
    tree, frontier = [root], [root]
    while frontier:
        pid = frontier.pop()
        try:
            tasks = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tasks:
            try:
                with open(f"/proc/{pid}/task/{tid}/children") as f:
                    kids = [int(k) for k in f.read().split()]
            except OSError:
                continue
            tree += kids
            frontier += kids
    total = 0
    for pid in tree:
        try:
            with open(f"/proc/{pid}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        total += int(line.split()[1])
                        break
        except OSError:
            continue
    return total


def measure(mode: str, path: Path, workers: int = 1) -> dict[str, float]:
    """Run one check in a nice'd child process: its result, wall, CPU and peak total PSS."""
    root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, mode, str(path), MODEL, str(workers)]
        + ([COOKBOOK] if mode == "cookbook" else []),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    peak = 0
    while proc.poll() is None:
        peak = max(peak, _tree_pss_kb(proc.pid))
        time.sleep(0.1)
    out, err = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"{mode} failed: {err.strip().splitlines()[-1:]}")
    result: dict[str, float] = json.loads(out.strip().splitlines()[-1])
    result["peak_mb"] = peak / 1024
    return result


def _size_name(size: int) -> str:
    return f"{size // 1_000_000_000} GB" if size >= 1_000_000_000 else f"{size // 1_000_000} MB"


def run(quick: bool, sizes: list[int] | None = None) -> list[Figure]:
    """Figures at 10 MB and 100 MB (and 1 GB unless ``quick``), or at ``sizes`` (bytes)."""
    if sizes is None:
        sizes = [10_000_000, 100_000_000] + ([] if quick else [1_000_000_000])
    figures: list[Figure] = []
    with tempfile.TemporaryDirectory(prefix="bench-datacheck-") as tmp:
        for size in sizes:
            name = _size_name(size)
            path = Path(tmp) / f"chat-{name.replace(' ', '')}.jsonl"
            n = generate(path, size)
            print(f"[datacheck] {name}: {n:,} examples generated", file=sys.stderr)
            book = measure("cookbook", path)
            one = measure("ftsweep", path, workers=1)
            two = measure("ftsweep", path, workers=2)
            for label, r in (("cookbook", book), ("1 worker", one), ("2 workers", two)):
                print(
                    f"[datacheck] {name} {label:9}: wall {r['wall']:7.2f} s  cpu {r['cpu']:7.2f} s"
                    f"  peak PSS {r['peak_mb']:7.0f} MB  tokens {int(r['tokens']):,}",
                    file=sys.stderr,
                )
            if not book["tokens"] == one["tokens"] == two["tokens"]:
                raise RuntimeError(f"token totals differ at {name}: {book}, {one}, {two}")
            speedup = book["wall"] / two["wall"]
            figures.append(
                Figure(
                    f"datacheck {name}: wall, 2 workers vs cookbook",
                    two["wall"],
                    book["wall"],
                    "s",
                    ">= 2x faster",
                    speedup >= 2.0,
                    ratio=speedup,
                    note=f"speed-up; cpu {two['cpu']:.1f} s vs {book['cpu']:.1f} s",
                )
            )
            # On a machine shared with other work the measured wall says how much CPU the
            # scheduler gave, not what two free cores give: this estimates the latter from
            # the CPU seconds (the parent's serial part + the workers' share on 2 cores).
            free = two["cpu_self"] + (two["cpu"] - two["cpu_self"]) / 2
            figures.append(
                Figure(
                    f"datacheck {name}: est. wall on 2 free cores vs cookbook",
                    free,
                    book["cpu"],
                    "s",
                    ">= 2x faster",
                    book["cpu"] / free >= 2.0,
                    ratio=book["cpu"] / free,
                    note="estimate from CPU s: parent + workers / 2, vs the cookbook's CPU s",
                )
            )
            figures.append(
                Figure(
                    f"datacheck {name}: cpu, 2 workers vs cookbook",
                    two["cpu"],
                    book["cpu"],
                    "cpu s",
                    "(no target)",
                    None,
                )
            )
            figures.append(
                Figure(
                    f"datacheck {name}: wall, 1 vs 2 workers",
                    two["wall"],
                    one["wall"],
                    "s",
                    "> 1x (scales with cores)",
                    one["wall"] / two["wall"] > 1.0,
                    ratio=one["wall"] / two["wall"],
                    note=f"speed-up; cpu {one['cpu']:.1f} s on 1 worker",
                )
            )
            figures.append(
                Figure(
                    f"datacheck {name}: peak memory, 2 workers",
                    two["peak_mb"],
                    book["peak_mb"],
                    "MB",
                    "< 300 MB" if size >= 1_000_000_000 else "(target at 1 GB)",
                    two["peak_mb"] < 300 if size >= 1_000_000_000 else None,
                    note="summed PSS of the process and its workers",
                )
            )
            path.unlink()
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10 MB and 100 MB only")
    parser.add_argument("--size-mb", type=int, action="append", help="only this size (repeat)")
    args = parser.parse_args()
    t0 = time.perf_counter()
    sizes = [mb * 1_000_000 for mb in args.size_mb] if args.size_mb else None
    figures = run(args.quick, sizes)
    print(f"{'figure':58} {'value':>9} {'baseline':>9} {'ratio':>7}  target / met")
    for f in figures:
        ratio = f.ratio_or_computed()
        base = "-" if f.baseline is None else f"{f.baseline:9.2f}"
        met = "" if f.met is None else ("met" if f.met else "NOT met")
        print(
            f"{f.name:58} {f.value:9.2f} {base:>9} {'-' if ratio is None else f'{ratio:6.2f}x'}"
            f"  {f.target} {met}  {f.note}"
        )
    print(f"({time.perf_counter() - t0:.0f} s in all)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Validate a large generated JSONL file: throughput (MB/s) and peak memory.

Generates a chat-format file of ``--size-mb`` megabytes (default 1024), then runs, each in its
own process so their peak RSS is their own:

* a baseline that only reads the lines and parses them with ``json.loads``;
* ``ftsweep``'s full ``check_dataset`` (structure, duplicates, labels, exact token counts).

It prints MB/s for both, their ratio, and each process's peak RSS, and exits 1 if the check's
peak RSS exceeds ``--max-rss-mb`` (default 300). Reproduce: ``python benchmarks/validate_large.py``.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WORDS = (
    "the",
    "of",
    "and",
    "to",
    "in",
    "is",
    "you",
    "that",
    "it",
    "he",
    "was",
    "for",
    "on",
    "are",
    "as",
    "with",
    "his",
    "they",
    "at",
    "be",
    "this",
    "have",
    "from",
    "or",
    "one",
    "had",
    "by",
    "word",
    "but",
    "not",
    "what",
    "all",
    "were",
    "we",
    "when",
    "your",
    "can",
    "said",
    "there",
    "use",
    "an",
    "each",
    "which",
    "she",
    "do",
    "how",
    "their",
    "if",
    "will",
    "up",
    "other",
    "about",
    "out",
    "many",
    "then",
    "them",
    "these",
    "so",
    "some",
    "her",
    "would",
    "make",
    "like",
    "him",
    "into",
    "time",
    "has",
    "look",
    "two",
    "more",
    "write",
    "go",
    "see",
    "number",
    "no",
    "way",
    "could",
    "people",
    "my",
    "than",
    "first",
    "water",
    "been",
    "call",
    "who",
    "oil",
    "its",
    "now",
    "find",
    "long",
    "down",
    "day",
    "did",
    "get",
    "come",
    "made",
    "may",
    "part",
)

CHILD = r"""
import json, resource, sys, time
mode, path, model = sys.argv[1:4]
t0 = time.perf_counter()
if mode == "baseline":
    n = 0
    with open(path, "rb") as f:
        for line in f:
            json.loads(line)
            n += 1
    result = {"examples": n}
else:
    from orchestrator.data.checks import check_dataset
    from orchestrator.tokenizers import counter_for_model
    r = check_dataset(path, counter=counter_for_model(model), model=model)
    result = {"examples": r.train.n_examples, "errors": len(r.errors),
              "tokens": r.train.total_tokens}
result["seconds"] = time.perf_counter() - t0
result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps(result))
"""


def generate(path: Path, size_mb: int, seed: int = 0) -> int:
    """Write about ``size_mb`` MB of varied chat examples; return the number of examples."""
    rng = random.Random(seed)
    target = size_mb * 1024 * 1024
    written = n = 0
    with path.open("w", encoding="utf-8") as f:
        while written < target:
            q = " ".join(rng.choices(WORDS, k=rng.randint(20, 120)))
            a = " ".join(rng.choices(WORDS, k=rng.randint(10, 200)))
            row = {
                "messages": [
                    {"role": "system", "content": "You are a helpful assistant."},
                    {"role": "user", "content": f"{q}? ({n})"},
                    {"role": "assistant", "content": a},
                ]
            }
            line = json.dumps(row) + "\n"
            f.write(line)
            written += len(line)
            n += 1
    return n


def measure(mode: str, path: Path, model: str) -> dict[str, float]:
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, mode, str(path), model],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=1024)
    parser.add_argument("--model", default="gpt-4o-mini")
    parser.add_argument("--path", type=Path, help="validate this file instead of generating one")
    parser.add_argument("--max-rss-mb", type=float, default=300)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = args.path
        if path is None:
            path = Path(tmp) / "large.jsonl"
            t0 = time.perf_counter()
            n = generate(path, args.size_mb)
            print(
                f"generated {n:,} examples, {path.stat().st_size / 1e6:,.0f} MB "
                f"in {time.perf_counter() - t0:.0f} s",
                file=sys.stderr,
            )
        mb = path.stat().st_size / 1e6
        base = measure("baseline", path, args.model)
        check = measure("check", path, args.model)
    base_rate, check_rate = mb / base["seconds"], mb / check["seconds"]
    print(
        f"file: {mb:,.0f} MB, {int(check['examples']):,} examples, "
        f"{int(check['tokens']):,} tokens ({args.model})"
    )
    print(
        f"baseline (read + json.loads): {base_rate:8.1f} MB/s  peak RSS "
        f"{base['peak_rss_mb']:6.0f} MB"
    )
    print(
        f"ftsweep validate (all checks): {check_rate:7.1f} MB/s  peak RSS "
        f"{check['peak_rss_mb']:6.0f} MB"
    )
    print(f"ratio validate/baseline throughput: {check_rate / base_rate:.2f}")
    if check["peak_rss_mb"] > args.max_rss_mb:
        print(f"FAIL: peak RSS above {args.max_rss_mb:.0f} MB", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

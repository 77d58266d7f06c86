"""Score diagnosis rules against the corpus's recorded labels.

    python tests/diagnosis/score_rules.py                 # the rules in the working tree
    python tests/diagnosis/score_rules.py --rev d9f5c9b  # the rules at a commit

Prints each curve whose label differs from the MANIFEST's, then ``N/M agree``. ``n_epochs``
is the number of full-validation passes, as ``ftsweep diagnose`` reads it from a result CSV.
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
from pathlib import Path
from types import ModuleType

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


def _rules(rev: str | None) -> ModuleType:
    if rev is None:
        from orchestrator.analysis import diagnosis

        return diagnosis
    source = subprocess.run(
        ["git", "-C", str(ROOT), "show", f"{rev}:orchestrator/analysis/diagnosis.py"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    path = Path(tempfile.mkdtemp()) / "diagnosis_at_rev.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("diagnosis_at_rev", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--rev", help="a git revision whose orchestrator/analysis/diagnosis.py to score"
    )
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from orchestrator.backends.remote.resultfile import read_result_csv

    rules = _rules(args.rev)
    agree = total = 0
    for line in (HERE / "corpus" / "MANIFEST").read_text().splitlines():
        if not line or line.startswith("#") or line.startswith("name\t"):
            continue
        name, label, _, _ = line.split("\t")
        curves = read_result_csv(HERE / "corpus" / f"{name}.csv")
        n_epochs = len(curves.get("full_valid_loss", [])) or None
        d = rules.diagnose(curves, n_epochs)
        total += 1
        agree += d.label == label
        if d.label != label:
            print(f"{name}: recorded {label}, rules say {d.label}: {d.recommendation}")
    print(f"{agree}/{total} agree")
    return 0 if agree == total else 1


if __name__ == "__main__":
    raise SystemExit(main())

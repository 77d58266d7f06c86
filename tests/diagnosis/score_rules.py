"""Score diagnosis rules against the corpus's recorded labels.

    python tests/diagnosis/score_rules.py                 # the rules in the working tree
    python tests/diagnosis/score_rules.py --rev d9f5c9b  # the rules at a commit
    python tests/diagnosis/score_rules.py --sampled-only  # without the full-validation columns

Prints each curve whose label differs from the MANIFEST's, then ``N/M agree`` for all curves,
for the held-out ones (``holdout-*``) and for the rest, and how often the rules and the
MANIFEST agree on the question a user acts on: more epochs (``underfit``) or not. ``n_epochs``
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
#: the rules' module, now and before the package was organised into layers (``db82c40``)
PATHS = ("orchestrator/analysis/diagnosis.py", "orchestrator/diagnosis.py")
#: where what the rules imported before ``db82c40`` lives now
MOVED = {"orchestrator.space": "orchestrator.plan.space"}


def _rules(rev: str | None) -> ModuleType:
    if rev is None:
        from orchestrator.analysis import diagnosis

        return diagnosis
    for path in PATHS:  # where the rules lived at ``rev``
        shown = subprocess.run(
            ["git", "-C", str(ROOT), "show", f"{rev}:{path}"], capture_output=True, text=True
        )
        if shown.returncode == 0:
            source = shown.stdout
            break
    else:
        raise SystemExit(f"{rev}: no {' or '.join(PATHS)} there ({shown.stderr.strip()})")
    for old, new in MOVED.items():
        sys.modules.setdefault(old, importlib.import_module(new))
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
        "--rev", help="a git revision whose rules (orchestrator/analysis/diagnosis.py) to score"
    )
    parser.add_argument(
        "--sampled-only",
        action="store_true",
        help="drop the full-validation columns, as result files without full passes have it",
    )
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from orchestrator.backends.remote.resultfile import read_result_csv

    rules = _rules(args.rev)
    # set -> [label agreements, "more epochs or not" agreements, curves]
    scores = {"all": [0, 0, 0], "held out": [0, 0, 0], "the rest": [0, 0, 0]}
    for line in (HERE / "corpus" / "MANIFEST").read_text().splitlines():
        if not line or line.startswith("#") or line.startswith("name\t"):
            continue
        name, label, _, _ = line.split("\t")
        curves = read_result_csv(HERE / "corpus" / f"{name}.csv")
        n_epochs = len(curves.get("full_valid_loss", [])) or None
        if args.sampled_only:
            curves = {k: v for k, v in curves.items() if not k.startswith("full_valid")}
        d = rules.diagnose(curves, n_epochs)
        group = "held out" if name.startswith("holdout-") else "the rest"
        for key in ("all", group):
            scores[key][0] += d.label == label
            scores[key][1] += (d.label == "underfit") == (label == "underfit")
            scores[key][2] += 1
        if d.label != label:
            print(f"{name}: recorded {label}, rules say {d.label}: {d.recommendation}")
    for key, (agree, epochs, total) in scores.items():
        print(f"{key}: {agree}/{total} agree, {epochs}/{total} on more epochs or not")
    return 0 if scores["all"][0] == scores["all"][2] else 1


if __name__ == "__main__":
    raise SystemExit(main())

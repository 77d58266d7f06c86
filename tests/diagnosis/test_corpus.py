"""``ftsweep diagnose`` on the real-curve corpus gives each curve the label recorded with it.

The curves are real training runs of the tiny local model (``make_corpus.py``); the labels
in ``corpus/MANIFEST`` were assigned by reading the curves, not by running the rules.
"""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from orchestrator.backends.remote.resultfile import read_result_csv
from tests.conftest import Result

Cli = Callable[..., Result]

CORPUS = Path(__file__).parent / "corpus"
LABELS = {"overfit", "underfit", "diverged", "good", "unknown"}


def _manifest() -> dict[str, tuple[str, str]]:
    rows = [
        line.split("\t")
        for line in (CORPUS / "MANIFEST").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    header, *body = rows
    assert header == ["name", "label", "made by", "why"]
    return {name: (label, why) for name, label, _, why in body}


MANIFEST = _manifest()

#: held-out curves on which the rules and the MANIFEST disagree (docs/diagnosis.md): what the
#: rules say, and why the curve alone does not decide it
MISSES = {
    "holdout-reverse-n40-lr2-e12-b4-s1": (
        "overfit",
        "level for 5 epochs, the end 1.4% above the best: converged or begun to over-fit",
    ),
    "holdout-reverse-n50-lr2-e16-b4-s2": (
        "overfit",
        "level for 6 epochs, the end 1.4% above the best: converged or begun to over-fit",
    ),
    "holdout-reverse-n60-lr4-e20-b8-s2": (
        "underfit",
        "still edging down at the end; only a longer run shows that it gets no lower",
    ),
}


def test_the_manifest_names_every_curve_and_only_those() -> None:
    assert set(MANIFEST) == {p.stem for p in CORPUS.glob("*.csv")}
    assert {label for label, _ in MANIFEST.values()} <= LABELS
    # the corpus covers every label a finished run can have
    assert {label for label, _ in MANIFEST.values()} == LABELS - {"unknown"}


def test_the_misses_are_held_out_and_none_advises_more_epochs_wrongly() -> None:
    assert set(MISSES) <= set(MANIFEST)
    assert all(name.startswith("holdout-") for name in MISSES)
    for name, (said, _) in MISSES.items():
        assert said != MANIFEST[name][0]
    # the two converged curves are called over-fit: neither answer is "more epochs"
    assert sum(said == "underfit" for said, _ in MISSES.values()) == 1


@pytest.mark.parametrize("name", sorted(MANIFEST))
def test_diagnose_gives_the_recorded_label(name: str, cli: Cli) -> None:
    label, why = MANIFEST[name]
    r = cli("diagnose", CORPUS / f"{name}.csv", "--json")
    assert r.code == 0, r.err
    data = json.loads(r.out)
    if name in MISSES:  # a known disagreement: the rules' answer is pinned, not the label
        label, why = MISSES[name]
    assert data["label"] == label, f"{name}: {data['recommendation']} (recorded: {why})"
    assert data["source"] == {"kind": "csv", "id": str(CORPUS / f"{name}.csv"), "status": None}
    text = cli("diagnose", CORPUS / f"{name}.csv")
    assert text.out.splitlines()[0] == f"label: {label}"


def test_missing_train_accuracy_reads_the_validation_accuracy(cli: Cli) -> None:
    r = cli("diagnose", CORPUS / "reverse-lr1-e4-b8-noacc.csv", "--json")
    data = json.loads(r.out)
    assert data["label"] == "underfit"
    assert "validation token accuracy never left its first level" in data["recommendation"]
    assert data["evidence"]["full_valid_mean_token_accuracy_final"] == pytest.approx(0.2952, 1e-3)


def test_a_validation_loss_at_its_minimum_is_never_fewer_epochs(
    cli: Cli,
) -> None:
    # the train/valid gap grew by 0.76 nats, but the last epoch is within 0.3% of the best
    data = json.loads(cli("diagnose", CORPUS / "reverse-lr3-e20-b8.csv", "--json").out)
    assert data["label"] == "underfit"
    assert "n_epochs > 20" in data["recommendation"]
    assert "stop earlier" not in data["recommendation"]


@pytest.mark.parametrize(
    ("name", "window", "before"),
    [("reverse-n40-lr3-e14-b8", 4, 2.796), ("reverse-n80-lr2-e24-b8", 6, 2.110)],
)
def test_a_plateau_is_converged_not_more_epochs(
    name: str, window: int, before: float, cli: Cli
) -> None:
    # validation level for the last several epochs while training loss keeps falling: the
    # rules before the plateau rule said "underfit: try n_epochs > N"; a longer run of the
    # same settings gets no lower (MANIFEST)
    data = json.loads(cli("diagnose", CORPUS / f"{name}.csv", "--json").out)
    assert data["label"] == "good"
    advice = data["recommendation"]
    assert advice.startswith(
        f"converged: the validation loss improved less than 1% in the last {window} epochs"
    )
    assert "more epochs would not help" in advice and "begun to memorise" in advice
    assert "n_epochs >" not in advice
    assert data["evidence"]["plateau_points"] == window
    assert data["evidence"]["best_before_plateau"] == pytest.approx(before, abs=1e-3)
    assert data["evidence"]["plateau_gap_growth"] > 0


def test_an_overfit_curve_names_its_best_epoch(cli: Cli) -> None:
    data = json.loads(cli("diagnose", CORPUS / "reverse-lr3-e40-b8.csv", "--json").out)
    assert data["best_epoch"] == 25
    assert data["evidence"]["min_valid_loss"] == pytest.approx(1.544, abs=1e-3)
    assert data["curve"]["epochs"] == 40 and data["curve"]["steps"] == 800


def _relayout(src: Path, dest: Path, columns: dict[str, str], missing: str) -> Path:
    """The same curve in another provider's layout (``columns``: new name -> OpenAI name)."""
    rows = list(csv.DictReader(io.StringIO(src.read_text())))
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["step", *columns])
    for row in rows:
        writer.writerow([row["step"], *((row[c] or missing) for c in columns.values())])
    dest.write_text(out.getvalue())
    return dest


AZURE = {
    "train_loss": "train_loss",
    "train_mean_token_accuracy": "train_accuracy",
    "valid_loss": "valid_loss",
    "validation_mean_token_accuracy": "valid_mean_token_accuracy",
    "full_valid_loss": "full_valid_loss",
    "full_valid_mean_token_accuracy": "full_valid_mean_token_accuracy",
}
LEGACY = {
    "training_loss": "train_loss",
    "training_token_accuracy": "train_accuracy",
    "validation_loss": "valid_loss",
    "validation_token_accuracy": "valid_mean_token_accuracy",
}


@pytest.mark.parametrize(
    "name", ["reverse-lr3-e40-b8", "reverse-lr300-e4-b8", "tickets-lr3-e12-b8"]
)
def test_the_azure_layout_gives_the_same_label(name: str, tmp_path: Path, cli: Cli) -> None:
    src = CORPUS / f"{name}.csv"
    azure = _relayout(src, tmp_path / "results.csv", AZURE, "-1")
    assert read_result_csv(azure) == read_result_csv(src)
    data = json.loads(cli("diagnose", azure, "--json").out)
    assert data["label"] == MANIFEST[name][0]


def test_the_legacy_layout_parses_and_labels(tmp_path: Path, cli: Cli) -> None:
    src = CORPUS / "reverse-lr300-e4-b8.csv"
    legacy = _relayout(src, tmp_path / "legacy.csv", LEGACY, "")
    curves = read_result_csv(legacy)
    assert set(curves) == {
        "train_loss",
        "train_mean_token_accuracy",
        "valid_loss",
        "valid_mean_token_accuracy",
    }
    assert curves["train_loss"] == read_result_csv(src)["train_loss"]
    data = json.loads(cli("diagnose", legacy, "--json").out)
    assert data["label"] == "diverged"


#: the rules before the plateau and divergence fixes, as docs/diagnosis.md scores them
BEFORE_FIXES = "d9f5c9b"


def test_the_documented_scores_of_the_earlier_rules_reproduce() -> None:
    """``score_rules.py --rev d9f5c9b`` (docs/diagnosis.md, "Evidence") runs the rules of that
    commit, from before the package's layers, and finds what the page says: 3 of the 5
    older held-out curves and 12 of the 20 curves the fixes were made on."""
    root = Path(__file__).resolve().parents[2]
    known = subprocess.run(
        ["git", "-C", str(root), "cat-file", "-e", f"{BEFORE_FIXES}^{{commit}}"], check=False
    )
    if known.returncode != 0:
        pytest.skip(f"this checkout has no history back to {BEFORE_FIXES} (a shallow clone)")
    r = subprocess.run(
        [sys.executable, str(Path(__file__).parent / "score_rules.py"), "--rev", BEFORE_FIXES],
        capture_output=True,
        text=True,
        check=False,
    )
    assert r.returncode == 1, r.stderr  # 1: some curves disagree
    missed = {line.split(":")[0] for line in r.stdout.splitlines() if ": recorded " in line}
    older = [name for name in MANIFEST if "reverse-n" not in name]
    held_out = [name for name in older if name.startswith("holdout-")]
    fixed_on = [name for name in older if not name.startswith("holdout-")]
    assert (len(held_out), len(fixed_on)) == (5, 20)
    assert len(set(held_out) - missed) == 3
    assert len(set(fixed_on) - missed) == 12

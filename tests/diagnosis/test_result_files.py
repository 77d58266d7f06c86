"""Result files as the providers write them, and what is not one (exit 2, one line)."""

from __future__ import annotations

import base64
import csv
import io
import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from orchestrator.backends.remote.resultfile import (
    parse_result_csv,
    read_result_csv,
    write_result_csv,
)
from orchestrator.core.errors import DataError
from tests.conftest import VENDOR, Result

Cli = Callable[..., Result]
CORPUS = Path(__file__).parent / "corpus"
#: the OpenAI layout as the shared reference quotes it (finetuning-api.md §1.7)
REFERENCE_SAMPLE = (
    "step,train_loss,train_accuracy,valid_loss,valid_mean_token_accuracy\n"
    "1,3.63265,0.5,,\n"
    "2,2.45992,0.80952,,\n"
)


def _openai_five_columns(src: Path) -> bytes:
    """A corpus curve in OpenAI's five-column layout, base64-encoded as the API serves it."""
    rows = list(csv.DictReader(io.StringIO(src.read_text())))
    cols = ["step", "train_loss", "train_accuracy", "valid_loss", "valid_mean_token_accuracy"]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(cols)
    for row in rows:
        if any(row[c] for c in cols[1:]):
            writer.writerow([row[c] for c in cols])
    return base64.b64encode(out.getvalue().encode())


def test_the_reference_sample_parses_and_labels(tmp_path: Path, cli: Cli) -> None:
    path = tmp_path / "results.csv"
    path.write_text(REFERENCE_SAMPLE)
    assert read_result_csv(path) == {
        "train_loss": [(1, 3.63265), (2, 2.45992)],
        "train_mean_token_accuracy": [(1, 0.5), (2, 0.80952)],
    }
    r = cli("diagnose", path, "--json")
    assert r.code == 0, r.err
    data = json.loads(r.out)
    assert data["label"] == "unknown"
    assert data["recommendation"] == "no validation data: add a validation file to diagnose"


def test_the_layout_in_the_shared_reference_itself() -> None:
    ref = VENDOR / "reference" / "finetuning-api-1.7.md"  # its section 1.7, unchanged
    block = re.search(r"```\s*\n(\s*step,train_loss,train_accuracy,[^`]+)```", ref.read_text())
    assert block is not None, "the reference no longer quotes the OpenAI result CSV"
    text = "\n".join(line.strip() for line in block.group(1).splitlines())
    curves = parse_result_csv(text.encode(), "finetuning-api.md")
    assert curves["train_loss"][0] == (1, 3.63265)
    assert "train_mean_token_accuracy" in curves


@pytest.mark.parametrize(
    ("name", "label"),
    [
        ("reverse-lr3-e40-b8", "overfit"),
        ("reverse-lr300-e4-b8", "diverged"),
        ("reverse-lr1-e4-b8", "underfit"),
    ],
)
def test_openai_base64_five_columns(name: str, label: str, tmp_path: Path, cli: Cli) -> None:
    path = tmp_path / "file-abc123.csv"
    path.write_bytes(_openai_five_columns(CORPUS / f"{name}.csv"))
    data = json.loads(cli("diagnose", path, "--json").out)
    assert data["label"] == label
    assert "full_valid_loss" not in data["curve"]["metrics"]


def test_azure_bom_and_minus_one_are_read(tmp_path: Path) -> None:
    path = tmp_path / "results.csv"
    path.write_bytes(
        b"\xef\xbb\xbfstep,train_loss,train_mean_token_accuracy,valid_loss,"
        b"validation_mean_token_accuracy\r\n1,10.16,0.4,8.55,0.4\r\n2,9.0,0.5,-1,-1\r\n"
    )
    assert read_result_csv(path) == {
        "train_loss": [(1, 10.16), (2, 9.0)],
        "train_mean_token_accuracy": [(1, 0.4), (2, 0.5)],
        "valid_loss": [(1, 8.55)],
        "valid_mean_token_accuracy": [(1, 0.4)],
    }


def test_a_nan_loss_is_kept_and_diverges(tmp_path: Path, cli: Cli) -> None:
    path = write_result_csv(
        {"train_loss": [(1, 2.0), (2, float("nan"))], "valid_loss": [(1, 2.1), (2, 2.0)]},
        tmp_path / "nan.csv",
    )
    data = json.loads(cli("diagnose", path, "--json").out)
    assert data["label"] == "diverged"
    assert data["curve"]["final"]["train_loss"] == "nan"  # JSON has no NaN


def test_write_then_read_round_trips(tmp_path: Path) -> None:
    curves = read_result_csv(CORPUS / "random-lr3-e24-b8.csv")
    again = read_result_csv(write_result_csv(curves, tmp_path / "again.csv"))
    assert again == curves


BAD = [
    ("empty.csv", b"", "empty.csv: empty file: expected a header line starting with 'step'"),
    ("notes.csv", b"hello,world\n1,2\n", "notes.csv:1: not a fine-tuning result CSV"),
    ("noloss.csv", b"step,foo\n1,2\n", "noloss.csv:1: no loss column"),
    ("cell.csv", b"step,train_loss\n1,2.0\n2,abc\n", "cell.csv:3: train_loss: not a number: 'abc'"),
    (
        "order.csv",
        b"step,train_loss\n2,2.0\n1,1.0\n",
        "order.csv:3: step: 1 does not follow step 2",
    ),
    ("step.csv", b"step,train_loss\n1.5,2.0\n", "step.csv:2: step: must be a whole number"),
    ("wide.csv", b"step,train_loss\n1,2.0,3,4\n", "wide.csv:2: 4 cells, but the header names 2"),
    ("rows.csv", b"step,train_loss\n", "rows.csv: no metric values"),
    ("binary.csv", b"\xff\xfe\x00\x01", "binary.csv: not a text file"),
]


@pytest.mark.parametrize(("name", "content", "message"), BAD, ids=[b[0] for b in BAD])
def test_a_bad_file_is_one_line_and_exit_2(
    name: str,
    content: bytes,
    message: str,
    tmp_path: Path,
    cli: Cli,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    Path(name).write_bytes(content)
    before = sorted(p.name for p in tmp_path.iterdir())
    r = cli("diagnose", name)
    assert r.code == 2
    assert r.out == ""
    assert r.err.startswith(f"error: {message}"), r.err
    assert r.err.count("\n") == 1 and "Traceback" not in r.err
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing created
    with pytest.raises(DataError):
        read_result_csv(name)


def test_a_missing_file_a_folder_and_a_bad_id(
    tmp_path: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FTSWEEP_RUNS_DIR", str(tmp_path / "mlruns"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    (tmp_path / "folder.csv").mkdir()
    cases = {
        "nope.csv": "error: nope.csv: cannot read: No such file or directory\n",
        "folder.csv": "error: folder.csv: is a directory, not a result CSV\n",
        "ftjob-abc": "error: ftjob-abc: not a file, and not an MLflow run id (32 hex characters); "
        "a job id needs --spec SWEEP.yaml\n",
        "0" * 32: f"error: no MLflow store at sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'} "
        "(set --tracking-uri)\n",
    }
    for source, err in cases.items():
        r = cli("diagnose", source)
        assert (r.code, r.out, r.err) == (2, "", err), source
    assert not (tmp_path / "mlruns").exists()

"""The scorers of ``evaluate.scorers``, the held-out file's examples and the ``evaluate:``
block's checks (exit 2 naming the field)."""

from __future__ import annotations

import importlib.metadata
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from orchestrator.config import EvaluateSpec
from orchestrator.core.errors import DataError, OrchestratorError, SpecError
from orchestrator.evaluation import load_scorers, metric_name, read_examples, score_answers
from orchestrator.evaluation.scorers import contains, exact_match, json_valid, label_accuracy
from tests.helpers import chat_rows, write_jsonl


def _scorers(tmp_path: Path, **fields: Any) -> dict[str, Any]:
    spec = EvaluateSpec.model_validate({"file": str(tmp_path / "x.jsonl"), **fields})
    return {s.name: s for s in load_scorers(spec, "s.yaml")}


def test_exact_match_ignores_only_surrounding_whitespace() -> None:
    assert exact_match(" 42\n", "42")
    assert not exact_match("42.", "42")
    assert not exact_match("Paris", "paris")


def test_contains_is_case_folded_and_needs_the_whole_reference() -> None:
    assert contains("The answer is PARIS, France.", " paris")
    assert not contains("Par is", "Paris")


def test_label_accuracy_by_first_line_and_by_labels() -> None:
    assert label_accuracy("Billing\nbecause the card ...", "billing")
    assert not label_accuracy("billing issue", "billing")  # the whole first line, no labels
    labels = ["billing", "shipping", "other"]
    assert label_accuracy("Billing: the card was charged twice", "billing", labels)
    assert label_accuracy("shipping", "Shipping\n", labels)
    assert not label_accuracy("refund please", "other", labels)  # no known label: no match
    assert not label_accuracy("", "", labels)


def test_json_valid_with_and_without_a_schema(tmp_path: Path) -> None:
    assert json_valid('{"a": 1}', "")
    assert not json_valid("{'a': 1}", "")
    assert not json_valid("NaN", "")
    schema = {"type": "object", "required": ["label"], "properties": {"label": {"enum": ["x"]}}}
    assert json_valid('{"label": "x"}', "", schema)
    assert not json_valid('{"label": "y"}', "", schema)
    path = tmp_path / "schema.json"
    path.write_text(json.dumps(schema))
    scorer = _scorers(tmp_path, scorers=["json_valid"], json_schema=str(path))["json_valid"]
    assert (scorer('{"label": "x"}', ""), scorer("[]", "")) == (1.0, 0.0)


def test_a_bad_schema_file_is_a_spec_error_naming_the_field(tmp_path: Path) -> None:
    path = tmp_path / "schema.json"
    path.write_text('{"type": 12}')
    with pytest.raises(SpecError, match=r"^s.yaml: evaluate.json_schema: .*not a valid JSON"):
        _scorers(tmp_path, scorers=["json_valid"], json_schema=str(path))
    with pytest.raises(SpecError, match=r"evaluate.json_schema: no such file"):
        _scorers(tmp_path, scorers=["json_valid"], json_schema=str(tmp_path / "none.json"))


def test_a_user_scorer_by_module_and_function(tmp_path: Path) -> None:
    found = _scorers(tmp_path, scorers=["exact_match", "tests.evaluation.userscorer:length_ratio"])
    user = found["tests.evaluation.userscorer:length_ratio"]
    assert user.metric == "eval_tests_evaluation_userscorer_length_ratio"
    assert user("abcd", "ab") == 0.5
    scores = score_answers(list(found.values()), ["42", "4"], ["42", "43"])
    assert scores == {"eval_exact_match": 0.5, user.metric: 0.75}
    broken = _scorers(tmp_path, scorers=["tests.evaluation.userscorer:broken"])
    with pytest.raises(OrchestratorError, match=r"returned 7.0: expected a bool or a number"):
        broken["tests.evaluation.userscorer:broken"]("a", "b")


def test_a_user_scorer_by_entry_point(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    point = importlib.metadata.EntryPoint(
        "length", "tests.evaluation.userscorer:length_ratio", "ftsweep.scorers"
    )
    real = importlib.metadata.entry_points

    def entry_points(**kw: Any) -> Any:  # the installed distributions, plus one
        found = real(**kw)
        return [*found, point] if kw.get("group") == "ftsweep.scorers" else found

    monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)
    scorer = _scorers(tmp_path, scorers=["length"])["length"]
    assert (scorer.metric, scorer("ab", "ab")) == ("eval_length", 1.0)
    with pytest.raises(SpecError, match=r"evaluate.scorers.0: unknown scorer 'nope': known: "):
        _scorers(tmp_path, scorers=["nope"])


def test_unloadable_user_scorers_name_the_list_entry(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match=r"evaluate.scorers.1: cannot import 'no_such_mod'"):
        _scorers(tmp_path, scorers=["contains", "no_such_mod:f"])
    with pytest.raises(SpecError, match=r"evaluate.scorers.0: module 'json' has no 'nope'"):
        _scorers(tmp_path, scorers=["json:nope"])


def test_metric_names() -> None:
    assert metric_name("exact_match") == "eval_exact_match"
    assert metric_name("my-scorer") == "eval_my_scorer"


def test_held_out_examples_of_both_formats(tmp_path: Path) -> None:
    chat = read_examples(write_jsonl(tmp_path / "c.jsonl", chat_rows(3)))
    assert [e.reference for e in chat] == ["1", "3", "5"]
    assert chat[1].messages[-1] == {"role": "user", "content": "What is 1 + 2?"}
    assert chat[0].is_chat and chat[0].messages[0]["role"] == "system"
    rows = [{"prompt": f"p{i} ->", "completion": f" c{i}"} for i in range(4)]
    pc = read_examples(write_jsonl(tmp_path / "p.jsonl", rows), limit=2)
    assert [(e.prompt, e.reference, e.line) for e in pc] == [
        ("p0 ->", " c0", 1),
        ("p1 ->", " c1", 2),
    ]


def test_a_bad_held_out_line_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "h.jsonl"
    path.write_text(json.dumps(chat_rows(1)[0]) + "\n{not json\n")
    with pytest.raises(DataError, match=r"h.jsonl:2: invalid JSON"):
        read_examples(path)
    path.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"}]}) + "\n")
    with pytest.raises(DataError, match=r"h.jsonl:1: "):
        read_examples(path)


def _spec_file(tmp_path: Path, evaluate: Any) -> Path:
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    write_jsonl(data / "train.jsonl", chat_rows(20))
    write_jsonl(data / "held.jsonl", chat_rows(5, start=50))
    spec = {
        "name": "ev",
        "data": {"train": "data/train.jsonl"},
        "backend": {"name": "local", "model": "tiny"},
        "evaluate": evaluate,
    }
    path = tmp_path / "ev.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


@pytest.mark.parametrize(
    ("evaluate", "message"),
    [
        ({"scorers": ["exact_match"]}, "ev.yaml: evaluate.file: required field is missing"),
        ({"file": "data/held.jsonl", "scorers": []}, "ev.yaml: evaluate.scorers: "),
        ({"file": "data/held.jsonl", "scorers": ["a b"]}, "ev.yaml: evaluate.scorers.0: "),
        ({"file": "data/held.jsonl", "max_tokens": 0}, "ev.yaml: evaluate.max_tokens: "),
        ({"file": "data/held.jsonl", "temperature": -1}, "ev.yaml: evaluate.temperature: "),
        ({"file": "data/held.jsonl", "colour": 1}, "ev.yaml: evaluate.colour: "),
        ({"file": "data/none.jsonl"}, "ev.yaml: evaluate.file: no such file: "),
        ({"file": "data/held.jsonl", "scorers": ["exact_match", "exact_match"]},
         "ev.yaml: evaluate.scorers: "),
        ({"file": "data/held.jsonl", "scorers": ["contains", "nope"]},
         "ev.yaml: evaluate.scorers.1: unknown scorer 'nope'"),
    ],
)  # fmt: skip
def test_bad_evaluate_blocks_exit_2_naming_the_field(
    cli: Any, tmp_path: Path, evaluate: Any, message: str
) -> None:
    r = cli("space", _spec_file(tmp_path, evaluate))
    assert r.code == 2, r.err
    assert message in r.err and len(r.err.strip().splitlines()) == 1


def test_a_good_evaluate_block_plans(cli: Any, tmp_path: Path) -> None:
    path = _spec_file(tmp_path, {"file": "data/held.jsonl", "scorers": ["contains"]})
    r = cli("space", path)
    assert r.code == 0, r.err


def test_evaluate_without_an_evaluate_block_exits_2(cli: Any, tmp_path: Path) -> None:
    path = _spec_file(tmp_path, None)
    path.write_text(path.read_text().replace("evaluate: null\n", ""))
    r = cli("evaluate", path)
    assert r.code == 2 and "ev.yaml: evaluate: no evaluate: block" in r.err, r.err
    assert cli("evaluate", path, "--top", "0").code == 2

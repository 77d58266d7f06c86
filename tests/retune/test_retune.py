"""``ftsweep retune`` on the instant backend: fingerprints, generations, warm starts, the
moved space, the lock, and the morning report, with real Optuna and MLflow stores."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from mlflow import MlflowClient

from orchestrator.config import load_spec
from orchestrator.core.attrs import StudyAttrs, TrialAttrs
from orchestrator.engine import Overrides
from orchestrator.plan.fingerprint import Fingerprint
from orchestrator.results.read import open_results
from orchestrator.stores.read import generations
from orchestrator.testing import instant as fakes
from orchestrator.workflows.retune import RetuneResult, retune
from tests.helpers import chat_rows, write_jsonl
from tests.reliability.stores import seed_mlflow


@pytest.fixture
def instant(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    fakes.install(tmp_path / "site")
    monkeypatch.setenv("FTSWEEP_RUNS_DIR", str(tmp_path / "mlruns"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("FTSWEEP_OPTUNA_STORAGE", raising=False)
    fakes.WORLD.__init__()  # type: ignore[misc]
    seed_mlflow(tmp_path / "mlruns")
    yield tmp_path / "mlruns"


def _spec(tmp_path: Path, n_train: int = 40, **fields: Any) -> Path:
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    write_jsonl(data / "train.jsonl", chat_rows(n_train))
    write_jsonl(data / "valid.jsonl", chat_rows(8, start=1000))
    spec: dict[str, Any] = {
        "name": "nightly",
        "data": {"train": str(data / "train.jsonl"), "valid": str(data / "valid.jsonl")},
        "backend": {"name": "instant", "model": "instant-small"},
        "space": {
            "n_epochs": {"low": 2, "high": 4},
            "batch_size": {"low_pct": 5, "high_pct": 20},
            "learning_rate_multiplier": {"low": 0.02, "high": 2.0, "log": True},
        },
        "trials": 4,
        "parallel": 2,
        "sampler": {"name": "random", "seed": 1},
    }
    spec.update(fields)
    path = tmp_path / "nightly.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def _retune(spec: Path, **kw: Any) -> RetuneResult:
    clock = fakes.FakeClock()
    return retune(spec, clock=clock.clock, sleep=clock.sleep, wall=clock.wall, **kw)


def _append(tmp_path: Path, n: int) -> None:
    train = tmp_path / "data" / "train.jsonl"
    rows = chat_rows(n, start=500)
    write_jsonl(train.with_suffix(".more"), rows)
    train.write_text(train.read_text() + train.with_suffix(".more").read_text())


def test_first_retune_runs_the_sweep_then_nothing_changed(instant: Path, tmp_path: Path) -> None:
    spec = _spec(tmp_path)
    first = _retune(spec)
    assert first.action == "first" and first.completed
    assert first.sweep is not None and first.sweep.completed == 4
    created = len(fakes.WORLD.created)
    again = _retune(spec)
    assert again.action == "unchanged", again.message
    assert "nothing changed since generation 1" in again.message
    assert len(fakes.WORLD.created) == created  # nothing submitted
    [gen] = generations(load_spec(spec))
    assert gen.number == 1 and gen.succeeded
    printed = Fingerprint.from_json(str(gen.fingerprint))
    assert printed.train.n_examples == 40 and printed.model.id == "instant-small"
    assert printed.train.format == "chat"
    assert printed.train.tokens is None  # the instant backend counts no tokens


def test_new_data_starts_a_linked_warm_started_generation(instant: Path, tmp_path: Path) -> None:
    spec = _spec(tmp_path, trials=6)
    _retune(spec)
    g1 = open_results(spec).study
    sign = 1.0
    ranked = sorted(
        (t for t in g1.trials if t.state.name == "COMPLETE"), key=lambda t: sign * float(t.value)
    )
    _append(tmp_path, 40)  # 40 -> 80 examples: batch sizes double
    second = _retune(spec, report=tmp_path / "out" / "morning.html")
    assert second.action == "started", second.message
    assert second.generation == 2 and second.study_name == "nightly.g2"
    assert any("40 -> 80 examples" in c for c in second.changes)
    study = second.sweep.study if second.sweep else None
    assert study is not None and study.study_name == "nightly.g2"
    assert study.user_attrs[StudyAttrs.PREVIOUS_STUDY] == "nightly"
    assert study.user_attrs[StudyAttrs.GENERATION] == 2
    # the first trials are the previous best, the batch size rescaled (same share of data)
    warm = [t for t in study.trials if TrialAttrs.WARM_START in t.user_attrs]
    assert len(warm) == 3 and [t.number for t in warm] == [0, 1, 2]
    for trial, old in zip(warm, ranked[:3], strict=True):
        assert trial.user_attrs[TrialAttrs.WARM_START] == f"nightly#{old.number}"
        old_bs = old.user_attrs and trial.params["batch_size"]
        assert trial.params["n_epochs"] == old.params["n_epochs"]
        assert trial.params["learning_rate_multiplier"] == pytest.approx(
            old.params["learning_rate_multiplier"]
        )
        expected = max(1, round(_trained_batch(old) * 80 / 40))
        assert old_bs == min(max(expected, 4), 16)  # inside the new space (5-20 % of 80)
    # status/report/best now read the current generation
    assert open_results(spec).study.study_name == "nightly.g2"
    # lineage in MLflow: one parent run per generation, linked
    client = MlflowClient(tracking_uri=f"sqlite:///{instant / 'mlflow.db'}")
    exp = client.get_experiment_by_name("nightly")
    parents = client.search_runs([exp.experiment_id], "tags.`ftsweep.parent` = 'true'")
    by_study = {r.data.tags["ftsweep.study"]: r for r in parents}
    assert set(by_study) == {"nightly", "nightly.g2"}
    g2 = by_study["nightly.g2"]
    assert g2.data.tags["ftsweep.previous_study"] == "nightly"
    assert g2.data.tags["ftsweep.generation"] == "2"
    assert "40 -> 80 examples" in g2.data.tags["ftsweep.changed"]
    assert g2.data.params["data.n_examples"] == "80"
    # the morning report: in the parent run and where asked
    html = (tmp_path / "out" / "morning.html").read_text()
    assert "40 -&gt; 80 examples" in html and "nightly.g2" in html and "<table" in html
    artifacts = [a.path for a in client.list_artifacts(g2.info.run_id, "report")]
    assert "report/retune.html" in artifacts
    # one page, logged by the generation's MLflow listener: the file is the same text
    logged = Path(client.download_artifacts(g2.info.run_id, "report/retune.html", str(tmp_path)))
    assert logged.read_text() == html
    # and nothing changed after that
    assert _retune(spec).action == "unchanged"
    assert [g.number for g in generations(load_spec(spec))] == [1, 2]


def _trained_batch(trial: Any) -> int:
    from orchestrator.results.table import trial_hyperparameters

    return int(trial_hyperparameters(trial)["batch_size"])


def test_the_space_moves_where_the_advice_says(instant: Path, tmp_path: Path) -> None:
    # the instant backend's best multiplier is 0.3 (see fakes): a range topping out at 0.05
    # puts every best trial at its high edge
    space = {
        "n_epochs": 3,
        "batch_size": 4,
        "learning_rate_multiplier": {"low": 0.01, "high": 0.05, "log": True},
    }
    edge = [{"n_epochs": 3, "batch_size": 4, "learning_rate_multiplier": x} for x in (0.05, 0.049)]
    spec = _spec(tmp_path, space=space, enqueue=edge, trials=3)
    _retune(spec)
    _append(tmp_path, 8)
    second = _retune(spec)
    assert second.action == "started"
    assert second.sweep is not None
    dim = second.sweep.plan.space["learning_rate_multiplier"]
    assert dim.low is not None and dim.high is not None
    assert dim.low > 0.01 and dim.high == pytest.approx(0.1)
    recorded = second.sweep.study.user_attrs[StudyAttrs.SPACE]
    assert recorded["learning_rate_multiplier"]["high"] == pytest.approx(0.1)
    assert second.sweep.study.user_attrs[StudyAttrs.FILE_SPACE]["learning_rate_multiplier"][
        "high"
    ] == pytest.approx(0.05)


def test_a_failed_generation_leaves_the_previous_model_current(
    instant: Path, tmp_path: Path
) -> None:
    spec = _spec(tmp_path, trials=2)
    first = _retune(spec)
    assert first.completed
    client = MlflowClient(tracking_uri=f"sqlite:///{instant / 'mlflow.db'}")
    champion = client.get_model_version_by_alias("nightly", "champion")
    _append(tmp_path, 10)
    # every job of the next generation fails at the provider
    doc = yaml.safe_load(spec.read_text())
    doc["backend"]["options"] = {"fail_every_trial": True}
    spec.write_text(yaml.safe_dump(doc))
    second = _retune(spec)
    assert second.action == "started" and not second.completed
    assert client.get_model_version_by_alias("nightly", "champion").version == champion.version
    gens = generations(load_spec(spec))
    assert [g.succeeded for g in gens] == [True, False]


def test_two_retunes_at_once_run_one_sweep(instant: Path, tmp_path: Path) -> None:
    spec = _spec(tmp_path, trials=3, parallel=1)
    _retune(spec)
    _append(tmp_path, 20)
    results: list[RetuneResult] = []
    gate = threading.Barrier(2)

    def one() -> None:
        gate.wait()
        results.append(_retune(spec))

    threads = [threading.Thread(target=one) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    actions = sorted(r.action for r in results)
    assert actions in (["locked", "started"], ["started", "unchanged"]), actions
    assert [g.number for g in generations(load_spec(spec))] == [1, 2]


def test_retune_overrides_and_history(instant: Path, tmp_path: Path) -> None:
    spec = _spec(tmp_path)
    _retune(spec, overrides=Overrides(trials=2))
    assert len(open_results(spec).study.trials) == 2

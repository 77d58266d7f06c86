"""Throughput shown where a backend measured it: the report's table, JSON and HTML, the live
panel per running trial, and the median ``estimate`` reads; nothing where none was measured."""

from __future__ import annotations

import io
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import optuna

from orchestrator.backends.base import Hyperparameters, MetricPoint, TrainingRequest
from orchestrator.cli.live import LiveConsole
from orchestrator.cli.output import Output
from orchestrator.core.attrs import TrialAttrs
from orchestrator.engine.events import Points, TrialStarted
from orchestrator.results.html import ReportInputs, render_html
from orchestrator.results.speed import measured_throughput
from orchestrator.results.table import render, trials_frame


def _page(study: optuna.Study) -> str:
    """The HTML report's trials table."""
    inputs = ReportInputs(
        "s", study, trials_frame(study), "full_valid_loss", "minimize", "local", "tiny"
    )
    page = render_html(inputs)
    return page[page.index("<h2>Trials</h2>") : page.index("<h2>Next sweep</h2>")]


PARAMS = {"n_epochs": 2, "batch_size": 8, "learning_rate_multiplier": 1.0}


def _study(*speeds: dict[str, float] | None, derived: int | None = None) -> optuna.Study:
    study = optuna.create_study(storage=optuna.storages.InMemoryStorage())
    dist = {
        "n_epochs": optuna.distributions.IntDistribution(1, 4),
        "batch_size": optuna.distributions.IntDistribution(1, 16),
        "learning_rate_multiplier": optuna.distributions.FloatDistribution(0.1, 5),
    }
    for i, speed in enumerate(speeds):
        attrs: dict[str, Any] = {} if speed is None else {TrialAttrs.THROUGHPUT: speed}
        if i == derived:
            attrs[TrialAttrs.DERIVED_FROM] = 0
        study.add_trial(
            optuna.trial.create_trial(
                params=PARAMS, distributions=dist, value=1.0 / (i + 1), user_attrs=attrs
            )
        )
    return study


GPU = {"tokens_per_second": 12_345.0, "mfu": 0.314, "peak_memory_mb": 20_480.0}
CPU = {"tokens_per_second": 845.0, "peak_memory_mb": 700.0}


def test_the_report_shows_tokens_per_second_and_mfu_where_measured() -> None:
    frame = trials_frame(_study(GPU, CPU))
    table = render(frame, "table").splitlines()
    assert table[0].split()[-3:] == ["tok/s", "MFU", "best"]
    assert table[1].split()[-2:] == ["12.3k", "31.4%"]
    assert table[2].split()[-3:] == ["845", "-", "*"]
    rows = json.loads(render(frame, "json"))
    assert rows[0]["tokens_per_second"] == 12_345.0 and rows[0]["mfu"] == 0.314
    assert rows[1]["mfu"] is None and rows[1]["peak_memory_mb"] == 700.0
    page = _page(_study(GPU, CPU))
    assert "<th>tok/s</th><th>MFU</th><th>peak memory</th>" in page
    assert "<td>12.3k</td><td>31.4%</td><td>20.0 GB</td>" in page
    assert "<td>845</td><td></td><td>700 MB</td>" in page


def test_no_throughput_column_where_nothing_was_measured() -> None:
    frame = trials_frame(_study(None, None))
    assert not {"tokens_per_second", "mfu", "peak_memory_mb"} & set(frame.columns)
    assert "tok/s" not in render(frame, "table") and "tok/s" not in _page(_study(None, None))


def test_the_measured_throughput_is_the_median_of_finished_trials() -> None:
    speeds = [{"tokens_per_second": v} for v in (100.0, 400.0, 200.0, 9_999.0)]
    study = _study(*speeds, None, derived=3)  # an earlier epoch told as a trial: not counted
    study.enqueue_trial(PARAMS)
    study.ask()  # running: not counted either
    measured = measured_throughput(study.get_trials(deepcopy=False))
    assert measured is not None
    assert (measured.tokens_per_second, measured.trials) == (200.0, 3)
    assert measured.describe() == "measured: 200 tok/s from 3 trials"
    assert measured_throughput(_study(None).trials) is None


@dataclass(frozen=True)
class _Trial:
    number: int
    request: TrainingRequest
    job_id: str | None = "job-1"
    attrs: Mapping[str, Any] = field(default_factory=dict)


def test_the_live_panel_shows_each_running_trial_s_throughput(tmp_path: Any) -> None:
    from rich.console import Console

    screen = io.StringIO()
    console = Console(file=screen, width=200, color_system=None)
    live = LiveConsole(Output(), "local", console=console)
    request = TrainingRequest(
        "k", "tiny", Hyperparameters(2, 8, 1.0, 0.1), tmp_path / "t.jsonl", None
    )
    trials = [_Trial(0, request), _Trial(1, request)]
    for t in trials:
        live.trial_started(TrialStarted(t))
    live.points(Points(trials[0], (MetricPoint(3, "train_loss", 2.5),)))

    def panel() -> str:
        screen.seek(0)
        screen.truncate()
        console.print(live.render())
        return screen.getvalue()

    assert "tok/s" not in panel()  # nothing measured yet: no column
    live.points(
        Points(
            trials[0], (MetricPoint(3, "tokens_per_second", 1234.0), MetricPoint(3, "mfu", 0.42))
        )
    )
    shown = panel().splitlines()
    head = next(line for line in shown if "trial" in line and "status" in line)
    assert head.split()[-2:] == ["tok/s", "MFU"]
    first = next(line for line in shown if line.startswith("t000"))
    second = next(line for line in shown if line.startswith("t001"))
    assert first.split()[-2:] == ["1,234", "42.0%"]
    assert second.split()[-2:] == ["-", "-"]

"""The report's plots without matplotlib: the SVG writer's charts are well-formed and show
what they are given; parameter importances rank what drives the objective."""

from __future__ import annotations

import math
import random
import xml.etree.ElementTree as ET

import optuna
import pandas as pd
import pytest

from orchestrator.analysis.importance import param_importances
from orchestrator.results.html import ReportInputs, render_html
from orchestrator.results.plots import loss_curve
from orchestrator.results.svg import Panel, colormap, figure, ticks

NS = "{http://www.w3.org/2000/svg}"


def _trials(n: int = 30, seed: int = 0) -> tuple[list[dict[str, float]], list[float]]:
    """``lr`` (log-uniform) decides the objective, ``bs`` adds a little, ``ep`` is constant."""
    rng = random.Random(seed)
    params, values = [], []
    for _ in range(n):
        lr = 10 ** rng.uniform(-3, 0)
        bs = float(rng.randint(1, 8))
        params.append({"lr": lr, "bs": bs, "ep": 3.0})
        values.append((math.log10(lr) + 1.5) ** 2 + 0.05 * bs + rng.gauss(0, 0.02))
    return params, values


def test_importances_rank_the_parameter_that_drives_the_objective() -> None:
    params, values = _trials()
    scores = param_importances(params, values)
    assert list(scores) == ["lr", "bs"]  # highest first; a constant explains nothing
    assert scores["lr"] > 0.8
    assert math.isclose(sum(scores.values()), 1.0)
    # by rank: the same on a log scale as on a linear one
    logged = [{**p, "lr": math.log10(p["lr"])} for p in params]
    assert param_importances(logged, values) == pytest.approx(scores)


def test_importances_need_variation() -> None:
    params, values = _trials(5)
    assert param_importances(params, [1.0] * 5) == {}  # the objective never moved
    assert param_importances(params[:1], values[:1]) == {}
    assert param_importances([{"ep": 3.0}] * 5, values) == {}
    nan = [math.nan, *values[1:]]  # a non-finite objective is left out, not propagated
    assert math.isclose(sum(param_importances(params, nan).values()), 1.0)


def test_ticks_are_round_and_inside_the_range() -> None:
    assert ticks(0.0, 1.0) == [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    assert ticks(0.001, 10.0, log=True) == [0.001, 0.01, 0.1, 1.0, 10.0]
    assert ticks(0.03, 0.2, log=True) == pytest.approx([0.05, 0.1, 0.2])
    assert ticks(2.0, 2.0) == [2.0]
    assert colormap("viridis", 0.0) == "#440154" and colormap("viridis", 2.0) == "#fde725"


def test_a_chart_is_well_formed_svg_with_what_it_was_given() -> None:
    panel = Panel(title="t001 < best", xlabel="step", ylabel="loss", ylog=True)
    # a non-finite point breaks the line in two; a non-positive one has no place on a log axis
    panel.line([1, 2, 3, 4, 5, 6], [2.0, 1.5, math.nan, 1.0, 0.8, -1.0], "#0969da", label="train")
    panel.vline(3, "#1a7f37", label="best epoch 1")
    panel.right([1, 6], [0.2, 0.9], "#1a7f37", label="accuracy")
    root = ET.fromstring(figure([panel, Panel(title="second")], cols=2))
    assert root.tag == f"{NS}svg" and root.get("width") == "720"
    texts = [t.text for t in root.iter(f"{NS}text")]
    assert "t001 < best" in texts and "second" in texts  # escaped in the file, read back
    assert {"train", "best epoch 1", "accuracy", "step", "loss"} <= set(texts)
    train = [
        p.get("points", "") for p in root.iter(f"{NS}polyline") if p.get("stroke") == "#0969da"
    ]
    # the line's two runs (1-2 and 4-5: NaN breaks it, -1 has no place on a log axis), and
    # its legend swatch
    assert sorted(len(p.split()) for p in train) == [2, 2, 2]


def test_the_loss_curve_is_an_svg_document() -> None:
    curves = {"train_loss": [(1, 2.0), (2, 1.5), (3, 1.2)], "full_valid_loss": [(3, 1.4)]}
    text = loss_curve(curves, "trial 3 (COMPLETE)")
    assert text.startswith("<?xml")
    root = ET.fromstring(text.split("\n", 1)[1])
    texts = {t.text for t in root.iter(f"{NS}text")}
    assert {"trial 3 (COMPLETE)", "train_loss", "full_valid_loss", "step", "loss"} <= texts


def test_the_page_draws_every_plot_as_inline_svg() -> None:
    study = optuna.create_study()
    for lr, value in [(0.01, 1.4), (0.1, 1.1), (0.05, 1.2), (0.3, 1.6)]:
        dists = {
            "learning_rate_multiplier": optuna.distributions.FloatDistribution(0.01, 1, log=True)
        }
        study.add_trial(
            optuna.trial.create_trial(
                params={"learning_rate_multiplier": lr}, distributions=dists, value=value
            )
        )
    frame = pd.DataFrame(
        [
            {"trial": t.number, "state": "COMPLETE", "value": t.value, "best": t.number == 1}
            for t in study.trials
        ]
    )
    curves = {1: {"train_loss": [(1, 2.0), (2, 1.5)], "valid_loss": [(2, 1.6)]}}
    page = render_html(
        ReportInputs(
            sweep="s",
            study=study,
            frame=frame,
            metric="full_valid_loss",
            direction="minimize",
            backend="instant",
            model="m",
            curves=curves,
        )
    )
    for title in (
        "Optimization history",
        "Parameter importances",
        "Parallel coordinates",
        "Slice plots",
        "Training curves",
    ):
        assert f"<h2>{title}</h2><div class='plot'><svg" in page, title
    for svg in page.split("<svg")[1:]:
        ET.fromstring("<svg" + svg.split("</svg>")[0] + "</svg>")  # each plot well-formed

"""ROI arithmetic on hand-made numbers: retention, latency, cost per 1,000 calls, break-even."""

from __future__ import annotations

import json
import math

import matplotlib
import pandas as pd
import pytest

from helpers.evaluate.roi import (
    api_cost_per_1k,
    break_even,
    cost_table,
    hosted_cost_per_1k,
    latency_table,
    load_serving_prices,
    plot_break_even,
    quality_retention,
    retention_table,
    usd_per_hour,
)
from helpers.teacher.prices import PriceTable

matplotlib.use("Agg")

PRICES = PriceTable([{"pattern": "big-teacher", "input": 1.0, "output": 4.0}])  # USD per 1M tokens


def items() -> pd.DataFrame:
    return pd.DataFrame([
        {"model": "teacher", "latency_s": 2.0, "tokens": 300, "prompt_tokens": 500},
        {"model": "teacher", "latency_s": 4.0, "tokens": 500, "prompt_tokens": 700},
        {"model": "distilled", "latency_s": 0.5, "tokens": 100, "prompt_tokens": 120},
        {"model": "distilled", "latency_s": 1.5, "tokens": 140, "prompt_tokens": 130},
        {"model": "distilled", "latency_s": None, "tokens": 0, "prompt_tokens": None},  # a failed request
    ])


def runs() -> pd.DataFrame:
    return pd.DataFrame([
        {"model": "teacher", "dataset": "a", "n": 2, "seconds": 5.0},
        {"model": "distilled", "dataset": "a", "n": 2, "seconds": 2.0},
        {"model": "distilled", "dataset": "b", "n": 2, "seconds": 6.0},
    ])


def test_hosted_and_api_cost():
    assert hosted_cost_per_1k(3.6, 1.0) == pytest.approx(1.0)  # 1,000 x 3.6 s = 1 hour
    assert hosted_cost_per_1k(2.0, 0.0) == 0.0
    with pytest.raises(ValueError):
        hosted_cost_per_1k(-1, 1.0)
    # 1,000 calls x (600 in + 400 out) tokens = 0.6M x $1 + 0.4M x $4
    assert api_cost_per_1k("big-teacher", 600, 400, PRICES) == pytest.approx(0.6 + 1.6)
    assert api_cost_per_1k("unknown-model", 600, 400, PRICES) is None


def test_serving_price_table(tmp_path):
    prices = load_serving_prices()
    assert "usd_per_hour" in prices.columns and (prices["usd_per_hour"] >= 0).all()
    assert usd_per_hour("own-laptop", prices) == 0.0
    with pytest.raises(KeyError, match="choose one of"):
        usd_per_hour("a-quantum-computer", prices)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"machines": [{"name": "x"}]}))
    with pytest.raises(ValueError, match="usd_per_hour"):
        load_serving_prices(bad)


def test_quality_retention():
    assert quality_retention(0.4, 0.8) == 0.5
    assert math.isnan(quality_retention(0.4, 0.0))
    metrics = pd.DataFrame({"dataset": ["a", "a", "a", "b", "b", "b"],
                            "model": ["teacher", "base", "distilled"] * 2,
                            "accuracy": [0.8, 0.2, 0.6, 0.0, 0.1, 0.2]}).set_index(["dataset", "model"])
    table = retention_table(metrics, "teacher", ["base", "distilled"])
    assert table.loc["a", "distilled retention"] == 0.75 and table.loc["a", "base retention"] == 0.25
    assert math.isnan(table.loc["b", "distilled retention"])
    with pytest.raises(KeyError):
        retention_table(metrics, "oracle", ["distilled"])


def test_latency_table():
    table = latency_table(items())
    assert table.loc["teacher", "mean_latency_s"] == 3.0 and table.loc["distilled", "n"] == 2
    assert table.loc["distilled", "p50_latency_s"] == 1.0
    assert table.loc["teacher", "mean_prompt_tokens"] == 600 and table.loc["teacher", "mean_output_tokens"] == 400


def test_cost_table():
    table = cost_table(items(), runs(), teacher="teacher", teacher_price_model="big-teacher",
                           students={"distilled": "own-laptop"}, prices=PRICES)
    assert table.loc["teacher", "usd_per_1k_calls"] == pytest.approx(2.2)
    assert math.isnan(table.loc["teacher", "s_per_call"])  # priced per token
    assert table.loc["distilled", "s_per_call"] == 2.0  # 8 s of wall time for 4 answers
    assert table.loc["distilled", "usd_per_1k_calls"] == 0.0
    prices = pd.DataFrame([{"name": "gpu", "usd_per_hour": 3.6}]).set_index("name")
    paid = cost_table(items(), runs(), teacher="teacher", teacher_price_model="big-teacher",
                          students={"distilled": "gpu"}, prices=PRICES, serving_prices=prices)
    assert paid.loc["distilled", "usd_per_1k_calls"] == pytest.approx(2.0)  # 1,000 x 2 s x $3.6/h


def test_break_even():
    result = break_even(100.0, teacher_usd_per_1k=2.2, student_usd_per_1k=0.2, monthly_calls=10_000)
    assert result.saving_per_1k == pytest.approx(2.0) and result.monthly_saving_usd == pytest.approx(20.0)
    assert result.calls == pytest.approx(50_000) and result.months == pytest.approx(5.0)
    assert "5.0 months" in str(result)
    assert result.to_dict()["break_even_months"] == pytest.approx(5.0)
    never = break_even(100.0, 0.2, 0.5, 10_000)
    assert math.isinf(never.months) and math.isinf(never.calls) and "never pays off" in str(never)
    assert math.isinf(break_even(100.0, 2.0, 0.0, 0).months)
    free = break_even(0.0, 1.0, 2.0, 10)
    assert free.months == 0.0 and free.calls == 0.0
    with pytest.raises(ValueError):
        break_even(-1, 1, 0, 10)


def test_plot_break_even():
    fig = plot_break_even(break_even(100.0, 2.2, 0.2, 10_000))
    ax = fig.axes[0]
    assert len(ax.lines) == 3  # teacher, student, break-even marker
    assert ax.get_xlim()[1] >= 10
    assert len(plot_break_even(break_even(100.0, 0.1, 0.2, 10)).axes[0].lines) == 2


def test_no_verdict_against_a_teacher_too_weak_to_compare_with() -> None:
    from helpers.evaluate.roi import deployment_verdict

    weak = deployment_verdict(0.10 / 0.067, 1.8, teacher_quality=0.067)
    assert weak.startswith("NO VERDICT") and "0.07" in weak and "retention 1.49" in weak
    assert deployment_verdict(0.95, 1.8, teacher_quality=0.8).startswith("DEPLOY")
    assert deployment_verdict(0.95, 1.8, teacher_quality=float("nan")).startswith("NO VERDICT")
    assert deployment_verdict(0.95, 1.8).startswith("DEPLOY"), "without a teacher quality the rule is case E's"

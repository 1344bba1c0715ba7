"""swift's logging.jsonl read back: history tables, resumed and interrupted runs, plots."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from helpers.train.runlog import (
    LivePlot,
    final_record,
    full_history,
    plot_history,
    read_log,
    save_plot,
    summarize_history,
)

FIXTURES = Path(__file__).parent / "fixtures"


RESUMED_LOG = FIXTURES / "sft_logging_resumed.jsonl"


INTERRUPTED_LOG = FIXTURES / "sft_logging_interrupted.jsonl"


def full_history_from_fixture(tmp_path: Path) -> pd.DataFrame:
    run = tmp_path / "v0-20260101-000000"
    run.mkdir(exist_ok=True)
    (run / "logging.jsonl").write_bytes(RESUMED_LOG.read_bytes())
    return full_history(run)


def test_read_log_of_a_real_resumed_run():
    own = read_log(RESUMED_LOG)
    train_rows = own.dropna(subset=["loss"])
    assert list(train_rows["step"]) == [3, 4]  # a resumed run logs only its own steps
    assert set(own["max_steps"]) == {4}
    assert own.dropna(subset=["eval_loss"])["step"].tolist() == [4]
    assert train_rows["elapsed_s"].tolist() == [2.0, 4.0]


def test_full_history_includes_steps_before_the_resume(tmp_path):
    run = tmp_path / "v1-20260101-000000"
    run.mkdir()
    (run / "logging.jsonl").write_bytes(RESUMED_LOG.read_bytes())
    history = full_history(run)
    assert history.dropna(subset=["loss"])["step"].tolist() == [1, 2, 3, 4]
    assert history.dropna(subset=["eval_loss"])["step"].tolist() == [2, 4]
    summary = summarize_history(history)
    assert summary["steps"] == 4 and summary["loss_first"] == pytest.approx(1.2529, abs=1e-4)
    assert summary["loss_last"] == pytest.approx(1.0849, abs=1e-4)
    assert 0 < summary["token_acc_last"] <= 1 and "eval_loss_last" in summary
    final = final_record(run)
    assert final["global_step"] == 4 and final["last_model_checkpoint"].endswith("checkpoint-4")


def test_read_log_of_an_interrupted_run_and_a_torn_line(tmp_path):
    path = tmp_path / "logging.jsonl"
    text = INTERRUPTED_LOG.read_text(encoding="utf-8")
    path.write_text(text + '{"loss": 0.9, "global_st', encoding="utf-8")  # swift is mid-write
    history = read_log(path)
    assert history.dropna(subset=["loss"])["step"].tolist() == [1, 2]
    assert final_record(path) is None
    assert read_log(tmp_path / "missing.jsonl").empty


def test_plots(tmp_path):
    history = full_history_from_fixture(tmp_path)
    fig = plot_history(history, title="t")
    assert len(fig.axes) == 2 and all(ax.has_data() for ax in fig.axes)
    png = save_plot(history, tmp_path / "run" / "loss_curve.png")
    assert png.read_bytes()[:4] == b"\x89PNG"
    LivePlot().update(history)  # outside IPython: a no-op, no error

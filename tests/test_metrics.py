"""Metric functions on hand-made replies."""

from __future__ import annotations

from helpers.evaluate.metrics import item_table, metrics_table


def _row(pid, answer, reference="8", *, thinking="5 + 3 = 8.", status="ok", tokens=10, steps=1, **extra):
    reply = None if status == "error" else {
        "thinking": thinking, "answer": answer, "raw": answer, "usage": {"completion_tokens": tokens},
        "finish_reason": "length" if status == "truncated" else "stop"}
    return {"prompt_id": pid, "sample_index": 0, "status": status, "reference": reference, "task": "word_problem",
            "meta": {"steps": steps}, "reply": reply, **extra}


def test_accuracy_format_truncation_tokens():
    rows = [
        _row("a", "<answer>\\boxed{8}</answer>", tokens=10, style="x"),       # right, formatted
        _row("b", "The answer is 8", tokens=20, style="x"),                   # right by last number, no box
        _row("c", "\\boxed{9}", thinking=None, tokens=30, style="y"),          # wrong, formatted, no thinking
        _row("d", "\\boxed{8", status="truncated", tokens=40, style="y"),       # cut off
        _row("e", "", status="error", style="y"),
    ]
    items = item_table(rows)
    assert items["correct"].tolist() == [True, True, False, False, False]
    assert items["format_ok"].tolist() == [True, False, True, False, False]
    overall = metrics_table(rows)
    assert overall["n"].iloc[0] == 5
    assert overall["accuracy"].iloc[0] == 0.4 and overall["format_ok"].iloc[0] == 0.4
    assert overall["truncated"].iloc[0] == 0.2 and overall["mean_tokens"].iloc[0] == 20.0
    by_style = metrics_table(rows, by="style")
    assert by_style.loc["x", "accuracy"] == 1.0 and by_style.loc["y", "accuracy"] == 0.0
    assert by_style.loc["y", "think_rate"] == round(1 / 3, 3)

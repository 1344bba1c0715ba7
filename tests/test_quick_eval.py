"""Quick local evaluation (chapters 08 and 09): batched greedy replies, scored and compared."""

from __future__ import annotations

import pandas as pd
import pytest

from helpers.evaluate.quick import comparison_table, plot_accuracy_vs_tokens


def _eval_row(model: str, correct: bool, tokens: int, think_tokens: int, pid: str) -> dict:
    boxed = "8" if correct else "7"
    return {"prompt_id": pid, "sample_index": 0, "status": "ok", "question": "What is 3 + 5?", "reference": "8",
            "task": "word_problem", "meta": {"steps": 1}, "model": model, "latency_s": 0.5,
            "think_tokens": think_tokens,
            "reply": {"thinking": "x" if think_tokens else None, "answer": f"<answer>\\boxed{{{boxed}}}</answer>",
                      "raw": "", "finish_reason": "stop", "usage": {"completion_tokens": tokens}}}


def test_comparison_table_and_plot() -> None:
    import matplotlib

    matplotlib.use("Agg")
    evaluated = [_eval_row("long", True, 60, 40, "q1"), _eval_row("long", False, 80, 50, "q2"),
                 _eval_row("short", True, 30, 10, "q1"), _eval_row("short", True, 20, 0, "q2")]
    table = comparison_table(evaluated, models=["short", "long", "absent"])
    assert list(table.index) == ["short", "long"]
    assert table.loc["long", "accuracy"] == 0.5 and table.loc["short", "accuracy"] == 1.0
    assert table.loc["long", "mean_tokens"] == 70 and table.loc["short", "mean_think_tokens"] == 5
    assert table.loc["short", "think_rate"] == 0.5
    ax = plot_accuracy_vs_tokens(table)
    assert len(ax.collections) == 2 and ax.get_xlim()[1] > 70
    with pytest.raises(ValueError, match="No evaluated rows"):
        comparison_table([])


@pytest.mark.slow
def test_batched_greedy_matches_one_at_a_time(settings, student) -> None:
    from helpers.evaluate.quick import Student, evaluate_students
    from helpers.merge.chat import LocalChat
    from helpers.tasks.word_problems import word_problem_rows

    prompts = word_problem_rows("test", 3, seed=5, shots=0)
    evaluated = evaluate_students({"base": Student(student)}, prompts, max_new_tokens=12, batch_size=3,
                                  settings=settings)
    single = LocalChat.load(student, settings, max_new_tokens=12)
    assert [r["reply"]["raw"] for r in evaluated] == [single(p["question"]) for p in prompts]
    for row in evaluated:
        usage = row["reply"]["usage"]
        assert row["model"] == "base" and row["dataset"] == "word_problems"
        assert 0 < usage["completion_tokens"] <= 12 and usage["prompt_tokens"] > 20
        assert (row["reply"]["finish_reason"] == "length") == (usage["completion_tokens"] == 12)
        assert isinstance(row["think_tokens"], int)
    assert isinstance(comparison_table(evaluated), pd.DataFrame)

"""Stage 1: answers checked against references with math-verify / label matching."""

from __future__ import annotations

import pytest
from curation_rows import make_row

from helpers.curate.verify import pass_rate_table, verify_stage
from helpers.tasks.checks import check_answer, extract_prediction, verify_label, verify_math


@pytest.mark.parametrize("reference, answer, correct", [
    ("8", "<answer>\\boxed{8}</answer>", True),
    ("8", "<answer>\\boxed{9}</answer>", False),
    ("1/2", "\\boxed{\\frac{1}{2}}", True),
    ("0.5", "\\boxed{\\frac{1}{2}}", True),
    ("1200", "So the total is 1,200 dollars.", True),         # no box: last number
    ("12", "She had 12 apples, after 3 days she has 3", False),  # last number is 3
    ("12", "The box says 3 but \\boxed{12}", True),            # box wins over the last number
])
def test_verify_math(reference: str, answer: str, correct: bool) -> None:
    assert verify_math(reference, answer).correct is correct


def test_verify_math_without_any_answer_reports_no_prediction() -> None:
    check = verify_math("8", "I am not sure.")
    assert check.correct is False and check.prediction is None
    assert verify_math("8", "\\boxed{}").prediction is None  # an empty box is no answer


def test_extract_prediction_prefers_the_last_box() -> None:
    assert extract_prediction("\\boxed{3} then \\boxed{\\frac{1}{2}} and 7") == "\\frac{1}{2}"
    assert extract_prediction("about 1,234.5 and -3") == "-3"
    assert extract_prediction("no digits") is None


@pytest.mark.parametrize("reference, answer, correct", [
    ("Sports", "<answer>\\boxed{ sports. }</answer>", True),
    ("sci/tech", "\\boxed{Sci-Tech}", True),                 # punctuation ignored
    ("Business", "<answer>World</answer>", False),
    ("World", "<answer>  world  </answer>", True),
])
def test_verify_label_normalises(reference: str, answer: str, correct: bool) -> None:
    assert verify_label(reference, answer).correct is correct


def test_label_named_in_prose_with_a_label_set() -> None:
    labels = ["World", "Sports", "Business"]
    assert verify_label("Sports", "The headline is about Sports.", labels).correct
    assert not verify_label("Sports", "This is Business news.", labels).correct


def test_check_answer_routes_by_task_and_handles_missing_reference() -> None:
    assert check_answer("sports", "\\boxed{Sports}", "classification").method == "label"
    assert check_answer("8", "\\boxed{8}", "gsm8k").method == "math"
    unverifiable = check_answer(None, "\\boxed{8}", "gsm8k")
    assert unverifiable.correct is None and unverifiable.prediction == "8"


def _rows() -> list[dict]:
    return [
        make_row(prompt_id="q1", sample_index=0),
        make_row(prompt_id="q1", sample_index=1),
        make_row(prompt_id="q1", sample_index=2),
        make_row(prompt_id="q1", sample_index=3, answer="<answer>\\boxed{9}</answer>"),
        make_row(prompt_id="q1", sample_index=4, reply=False),  # failed request: not an attempt
        make_row(prompt_id="q2", sample_index=0, reference="5", answer="<answer>\\boxed{6}</answer>"),
        make_row(prompt_id="q2", sample_index=1, reference="5", answer="I give up."),
        make_row(prompt_id="q3", sample_index=0, reference=None),
        make_row(prompt_id="q4", sample_index=0, task="classification", reference="Sports",
                 answer="<answer>\\boxed{sports}</answer>"),
    ]


def test_verify_stage_rejection_sampling_and_pass_rates() -> None:
    result = verify_stage(_rows())
    assert result.n_in == 9
    assert [(r["prompt_id"], r["sample_index"]) for r in result.kept] == [
        ("q1", 0), ("q1", 1), ("q1", 2), ("q4", 0)]
    reasons = {(r["prompt_id"], r["sample_index"]): r["drop_reason"] for r in result.dropped}
    assert reasons == {("q1", 3): "wrong_answer", ("q1", 4): "request_failed",
                       ("q2", 0): "wrong_answer", ("q2", 1): "no_answer",
                       ("q3", 0): "no_reference"}
    wrong = next(r for r in result.dropped if r["prompt_id"] == "q1" and r["sample_index"] == 3)
    assert "9" in wrong["drop_detail"] and "8" in wrong["drop_detail"]

    table = result.tables["pass_rates"].set_index("prompt_id")
    assert table.loc["q1", "n_samples"] == 4 and table.loc["q1", "n_correct"] == 3
    assert table.loc["q1", "pass_rate"] == pytest.approx(0.75)
    assert table.loc["q2", "pass_rate"] == 0.0
    assert "q3" not in table.index  # nothing to check it against
    assert all(r["pass_rate"] == pytest.approx(0.75) for r in result.kept if r["prompt_id"] == "q1")
    assert result.kept[0]["verified"]["prediction"] == "8"


def test_keep_unverifiable_rows() -> None:
    result = verify_stage(_rows(), keep_unverifiable=True)
    assert ("q3", 0) in {(r["prompt_id"], r["sample_index"]) for r in result.kept}
    assert pass_rate_table(result.kept)["prompt_id"].tolist() == ["q1", "q4"]


def test_a_truncated_reply_without_an_answer_is_dropped_as_truncated() -> None:
    row = make_row(prompt_id="q9", sample_index=0, reply=False)
    row["status"] = "truncated"
    result = verify_stage([row])
    assert [r["drop_reason"] for r in result.dropped] == ["truncated"]
    assert "TEACHER_MAX_TOKENS" in result.dropped[0]["drop_detail"]

"""Stage 3: exact and MinHash-LSH near-duplicate removal, with the matched row reported."""

from __future__ import annotations

import pytest
from curation_rows import make_row

from helpers.curate.dedup import dedup_stage, exact_dedup, jaccard, near_dedup, shingles

LONG_THINKING = (
    "First we find how many apples Tom has at the start of the story, which is three apples. "
    "Then we read that he goes to the market and buys five more apples from the friendly seller. "
    "To get the total we add the apples he had to the apples he bought, three plus five. "
    "Three plus five equals eight, so Tom now has eight apples in his basket at home."
)


def test_exact_duplicate_ignores_case_spaces_and_punctuation() -> None:
    rows = [make_row(sample_index=0, thinking=LONG_THINKING),
            make_row(sample_index=1, thinking="  " + LONG_THINKING.upper().replace(",", " ") + "!"),
            make_row(sample_index=2, thinking=LONG_THINKING + " Done.")]
    result = exact_dedup(rows)
    assert [r["sample_index"] for r in result.kept] == [0, 2]
    (dup,) = result.dropped
    assert dup["drop_reason"] == "exact_duplicate" and dup["duplicate_of"] == "p1#0"
    assert "p1#0" in dup["drop_detail"]
    assert result.tables["pairs"].to_dict("records") == [
        {"dropped": "p1#1", "matched": "p1#0", "similarity": 1.0, "kind": "exact"}]


def test_near_duplicate_reports_the_matched_row_and_similarity() -> None:
    reworded = LONG_THINKING.replace("friendly seller", "kind seller")
    other = make_row(prompt_id="p2", question="A train travels 60 km per hour for 2 hours. How far?",
                     thinking="Speed is 60 km per hour and time is 2 hours, distance is speed times "
                              "time, 60 times 2 is 120 km.", answer="<answer>\\boxed{120}</answer>",
                     reference="120")
    rows = [make_row(sample_index=0, thinking=LONG_THINKING), other,
            make_row(sample_index=1, thinking=reworded)]
    result = near_dedup(rows, threshold=0.7, progress=False)
    assert [r["prompt_id"] for r in result.kept] == ["p1", "p2"]
    (dup,) = result.dropped
    assert dup["drop_reason"] == "near_duplicate"
    assert dup["duplicate_of"] == "p1#0"
    assert 0.7 <= dup["similarity"] < 1.0
    expected = jaccard(shingles(" ".join([rows[0]["question"], LONG_THINKING, rows[0]["reply"]["answer"]])),
                       shingles(" ".join([rows[2]["question"], reworded, rows[2]["reply"]["answer"]])))
    assert dup["similarity"] == pytest.approx(expected, abs=1e-4)  # exact Jaccard, not the estimate


def test_threshold_decides() -> None:
    rows = [make_row(sample_index=0, thinking=LONG_THINKING),
            make_row(sample_index=1, thinking=LONG_THINKING.replace("friendly seller", "kind seller"))]
    assert near_dedup(rows, threshold=0.99, progress=False).n_dropped == 0
    assert near_dedup(rows, threshold=0.6, progress=False).n_dropped == 1


def test_scope_same_question_keeps_matching_solutions_of_different_questions() -> None:
    rows = [make_row(prompt_id="a", thinking=LONG_THINKING),
            make_row(prompt_id="b", thinking=LONG_THINKING)]
    assert near_dedup(rows, threshold=0.8, progress=False).n_dropped == 1
    assert near_dedup(rows, threshold=0.8, scope="same_question", progress=False).n_dropped == 0


def test_dedup_stage_combines_exact_and_near() -> None:
    rows = [make_row(sample_index=0, thinking=LONG_THINKING),
            make_row(sample_index=1, thinking=LONG_THINKING),
            make_row(sample_index=2, thinking=LONG_THINKING.replace("friendly seller", "kind seller")),
            make_row(prompt_id="p9", question="What is 7 times 6?",
                     thinking="Seven times six is forty two.", answer="\\boxed{42}")]
    result = dedup_stage(rows, threshold=0.7, progress=False)
    assert result.n_in == 4 and result.n_kept == 2
    assert result.drop_counts == {"exact_duplicate": 1, "near_duplicate": 1}
    assert set(result.tables["pairs"]["matched"]) == {"p1#0"}


def test_shingles_and_bad_input() -> None:
    assert shingles("a b", size=5) == {"a b"}
    assert shingles("") == set()
    assert len(shingles("one two three four five six")) == 2
    with pytest.raises(ValueError):
        near_dedup([make_row()], threshold=0)
    with pytest.raises(ValueError, match="dedup field"):
        exact_dedup([make_row()], fields=("nope",))

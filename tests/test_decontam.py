"""Stage 4: 8-gram decontamination against every evaluation set."""

from __future__ import annotations

import pytest
from curation_rows import make_row

from helpers.curate.decontam import EvalIndex, decontaminate, ngrams

GSM = [
    "Janet's ducks lay 16 eggs per day. She eats three for breakfast every morning and bakes muffins.",
    "A robe takes 2 bolts of blue fiber and half that much white fiber. How many bolts in total?",
]
WP = ["Tom has 3 apples and 5 pears.", "Mia reads 12 pages a day for 4 days."]


def test_shared_8gram_is_found_despite_case_and_punctuation() -> None:
    copied = make_row(prompt_id="leak", question="JANET'S ducks lay 16 eggs, per day! How many weeks?")
    clean = make_row(prompt_id="clean", question="Janet's hens lay 16 eggs per week. How many per day?")
    result = decontaminate([copied, clean], {"gsm8k_test": GSM, "wp_test": WP}, progress=False)
    assert [r["prompt_id"] for r in result.kept] == ["clean"]
    (dropped,) = result.dropped
    assert dropped["drop_reason"] == "contaminated"
    assert "gsm8k_test[0]" in dropped["drop_detail"]
    (overlap,) = result.tables["overlaps"].to_dict("records")
    assert overlap["eval_set"] == "gsm8k_test" and overlap["eval_index"] == 0
    assert overlap["shared_ngram"] == "janet s ducks lay 16 eggs per day"
    assert overlap["row"] == "leak#0"
    assert dropped["contamination"][0]["eval_question"] == GSM[0]


def test_seven_shared_words_are_not_contamination() -> None:
    # "ducks lay 16 eggs per day she" is in GSM[0] but only 7 words in a row are shared
    row = make_row(question="My ducks lay 16 eggs per day she said, so how many do I sell?")
    assert decontaminate([row], {"gsm8k_test": GSM}, progress=False).n_dropped == 0
    row8 = make_row(question="My ducks lay 16 eggs per day she eats, so how many do I sell?")
    assert decontaminate([row8], {"gsm8k_test": GSM}, progress=False).n_dropped == 1


def test_short_eval_items_are_matched_whole() -> None:
    # WP[0] has 7 words (< 8): it is contaminated when it appears whole
    same = make_row(prompt_id="s", question="tom has 3 apples and 5 pears")
    inside = make_row(prompt_id="i", question="Today Tom has 3 apples and 5 pears. How many fruits?")
    partial = make_row(prompt_id="p", question="Tom has 3 apples and 6 pears.")
    result = decontaminate([same, inside, partial], {"wp_test": WP}, progress=False)
    assert [r["prompt_id"] for r in result.dropped] == ["s", "i"]
    assert result.tables["overlaps"]["eval_index"].tolist() == [0, 0]
    assert result.tables["overlaps"]["shared_ngram"].iloc[0] == "tom has 3 apples and 5 pears"


def test_every_eval_set_and_item_is_reported() -> None:
    q = "A robe takes 2 bolts of blue fiber and half that much white fiber. Janet's ducks lay 16 eggs per day."
    index = EvalIndex({"a": GSM, "b": [GSM[1]]})
    hits = {(h.eval_set, h.eval_index) for h in index.overlaps(q)}
    assert hits == {("a", 0), ("a", 1), ("b", 0)}
    assert max(h.n_shared for h in index.overlaps(q)) > 1


def test_bad_input() -> None:
    with pytest.raises(TypeError):
        EvalIndex(["not a dict"])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="item 1"):
        EvalIndex({"x": ["ok", 3]})  # type: ignore[list-item]
    with pytest.raises(ValueError, match="no question"):
        decontaminate([make_row(question="")], {"x": GSM}, progress=False)
    assert ngrams("one two three", 8) == []

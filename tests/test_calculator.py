"""The teacher's calculator: recompute arithmetic, carry corrections, never drop a row."""

from __future__ import annotations

from helpers.curate.calculator import calculator_stage, recompute, repair_row
from helpers.curate.verify import verify_stage


def _row(thinking: str, boxed: str, reference: str, index: int = 0) -> dict:
    answer = f"<answer>\\boxed{{{boxed}}}</answer>"
    return {"prompt_id": "q1", "sample_index": index, "status": "ok", "task": "word_problem",
            "question": "?", "reference": reference, "meta": {"steps": 2},
            "reply": {"thinking": thinking, "answer": answer, "raw": f"<think>{thinking}</think>\n{answer}",
                      "finish_reason": "stop", "usage": {}}}


def test_a_wrong_product_is_fixed() -> None:
    r = recompute("Chloe runs 8 km a day for 9 days. 8 * 9 = 78.")
    assert r.text == "Chloe runs 8 km a day for 9 days. 8 * 9 = 72."
    assert r.fixes == ["8 * 9 = 78 -> 8 * 9 = 72"] and r.last_result == "72" and r.equations == 1


def test_a_correct_chain_is_left_alone() -> None:
    text = "Omar pays $7 and $8. 7 + 8 = 15. He pays 15 * 2 = 30 in two weeks."
    r = recompute(text)
    assert r.text == text and not r.changed and r.last_result == "30" and r.equations == 2


def test_corrections_are_carried_into_later_steps_and_prose_only_after_them() -> None:
    text = ("The truck carried 37 kg and dropped off 27 kg. 37 - 27 = 1. It now has 1 kg. "
            "It picked up 34 kg. 1 + 34 = 27.")
    r = recompute(text)
    assert r.text == ("The truck carried 37 kg and dropped off 27 kg. 37 - 27 = 10. It now has 10 kg. "
                      "It picked up 34 kg. 10 + 34 = 44.")
    assert r.last_result == "44" and len(r.fixes) == 2


def test_uneven_division_is_left_for_verification() -> None:
    r = recompute("She shares 7 apples among 2 friends. 7 / 2 = 3.")
    assert not r.changed and r.last_result == "3"


def test_repair_moves_the_boxed_answer_and_verification_still_decides() -> None:
    good_plan = _row("Leo had 44 buttons and lost 12. 44 - 12 = 28. He shares 28 among 4 friends. 28 / 4 = 7.", "7", "8")
    wrong_plan = _row("Leo had 44 buttons and lost 12. 44 + 12 = 56. He shares 56 among 4 friends. 56 / 4 = 14.", "14",
                      "8", index=1)
    fixed, found = repair_row(good_plan)
    assert fixed["reply"]["answer"] == "<answer>\\boxed{8}</answer>"
    assert "44 - 12 = 32. He shares 32 among 4 friends. 32 / 4 = 8." in fixed["reply"]["raw"]
    assert fixed["calculator"]["fixes"] == found.fixes and good_plan["reply"]["answer"].endswith("{7}</answer>")

    stage = calculator_stage([good_plan, wrong_plan, {"prompt_id": "q2", "status": "error", "reply": None}])
    assert stage.n_kept == 3 and stage.n_dropped == 0 and list(stage.tables["fixes"]["row"]) == ["q1#0"]
    verified = verify_stage(stage.kept)
    assert [r["sample_index"] for r in verified.kept] == [0]  # a wrong plan stays wrong

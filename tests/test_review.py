"""Human review: the decision log, resuming a review, applying decisions, the sample and the estimate."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from curation_rows import ANSWER, THINKING, make_row

from helpers.core.jsonl import read_jsonl
from helpers.core.rows import answer_of, row_id, thinking_of
from helpers.core.stats import wilson_interval
from helpers.curate.export import dataset_card, to_messages
from helpers.curate.funnel import Funnel, StageResult
from helpers.curate.review import (
    DECISIONS,
    append_decision,
    apply_reviews,
    bad_share_estimate,
    headless,
    headless_reason,
    load_decisions,
    load_reasons,
    make_decision,
    reply_text,
    review_sample,
    review_stage,
)
from helpers.curate.review_queue import ReviewQueue, start_review

EDITED = "<think>\nTom has 3. He buys 5 more: 3 + 5 = 8.\n</think>\n\n<answer>\\boxed{8}</answer>"


def rows(n: int = 6) -> list[dict]:
    return [make_row(prompt_id=f"p{i}", steps=1 + i % 3, verified={"correct": True, "prediction": "8",
                                                                      "method": "math-verify", "detail": ""})
            for i in range(n)]


def population(sizes: dict[str, int]) -> list[dict]:
    return [make_row(prompt_id=f"{group}-{i}", task=group) for group, size in sizes.items() for i in range(size)]


# --------------------------------------------------------------------------- the log


def test_decisions_are_appended_one_line_each_and_reloaded(tmp_path: Path) -> None:
    log = tmp_path / "datasets" / "curation" / "review.jsonl"
    append_decision(log, make_decision("p0#0", "accept", reviewer="ana"))
    append_decision(log, make_decision("p1#0", "reject", reviewer="ana", reason="wrong_answer: 3+5 is not 9"))
    lines = log.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 2
    first = json.loads(lines[0])
    assert set(first) == {"id", "decision", "reason", "reply", "reviewer", "time"}
    assert first["decision"] == "accept" and first["reason"] is None and first["reply"] is None
    assert first["time"].endswith("+00:00")
    loaded = load_decisions(log)
    assert list(loaded) == ["p0#0", "p1#0"] and loaded["p1#0"]["reason"] == "wrong_answer: 3+5 is not 9"
    assert load_decisions(tmp_path / "none.jsonl") == {}


def test_a_decision_is_checked_before_it_is_logged() -> None:
    with pytest.raises(ValueError, match="needs a reason"):
        make_decision("p0#0", "reject", reviewer="ana")
    with pytest.raises(ValueError, match="new reply"):
        make_decision("p0#0", "edit", reviewer="ana", reply="  ")
    with pytest.raises(ValueError, match="one of"):
        make_decision("p0#0", "maybe", reviewer="ana")
    with pytest.raises(ValueError, match="who reviewed"):
        make_decision("p0#0", "accept", reviewer="")
    assert DECISIONS == ("accept", "reject", "edit")


def test_the_last_decision_per_id_wins(tmp_path: Path) -> None:
    log = tmp_path / "review.jsonl"
    append_decision(log, make_decision("p0#0", "accept", reviewer="ana"))
    append_decision(log, make_decision("p1#0", "accept", reviewer="ana"))
    append_decision(log, make_decision("p0#0", "reject", reviewer="bo", reason="duplicate"))  # bo disagrees
    latest = load_decisions(log)
    assert latest["p0#0"]["decision"] == "reject" and latest["p0#0"]["reviewer"] == "bo"
    assert latest["p1#0"]["decision"] == "accept" and len(read_jsonl(log)) == 3  # the history stays
    kept, stats = apply_reviews(rows(2), log)
    assert [row_id(r) for r in kept] == ["p1#0"] and stats["rejected"] == 1 and stats["accepted"] == 1


def test_a_torn_last_line_is_skipped_then_repaired(tmp_path: Path) -> None:
    log = tmp_path / "review.jsonl"
    append_decision(log, make_decision("p0#0", "accept", reviewer="ana"))
    with log.open("a", encoding="utf-8") as handle:  # a kernel killed in the middle of a write
        handle.write('{"id": "p1#0", "decision": "rej')
    assert list(load_decisions(log)) == ["p0#0"]
    queue = ReviewQueue(rows(3), log, reviewer="ana")
    assert queue.repaired > 0 and log.read_text(encoding="utf-8").endswith("\n")
    assert queue.position == 1  # p1#0 was never decided
    queue.reject("other", "odd")
    assert [d["id"] for d in read_jsonl(log)] == ["p0#0", "p1#0"]  # strict read: every line whole


# --------------------------------------------------------------------------- the queue


def test_a_restart_in_the_middle_resumes_at_the_first_unreviewed_row(tmp_path: Path) -> None:
    data, log = rows(6), tmp_path / "review.jsonl"
    queue = ReviewQueue(data, log, reviewer="ana")
    assert queue.position == 0 and queue.current is data[0]
    queue.accept()
    queue.reject("wrong_answer", "3 + 5 is 8, not 9")
    queue.edit(EDITED)
    assert queue.position == 3
    del queue  # the kernel restarts

    again = ReviewQueue(data, log, reviewer="ana")
    assert again.position == 3 and row_id(again.current) == "p3#0"  # item 4
    assert again.progress_text().startswith("3 / 6 reviewed, 1 rejected, 1 edited (est. bad share ")
    assert again.decisions["p1#0"]["reason"] == "wrong_answer: 3 + 5 is 8, not 9"
    assert again.decisions["p2#0"]["reply"] == EDITED


def test_back_skip_and_changing_your_mind(tmp_path: Path) -> None:
    data, log = rows(4), tmp_path / "review.jsonl"
    queue = ReviewQueue(data, log, reviewer="ana", sample=["p2#0", "p0#0", "p3#0"])
    assert [row_id(r) for r in queue.items] == ["p2#0", "p0#0", "p3#0"]
    queue.skip()  # p2 left open
    queue.accept()  # p0
    assert queue.position == 2
    queue.back()
    queue.reject("duplicate")  # p0 again: now rejected; then on to the first open row after it
    assert load_decisions(log)["p0#0"]["decision"] == "reject" and queue.position == 2
    queue.accept()  # p3; the skipped p2 is next (wrap around)
    assert queue.position == 0
    queue.accept()
    assert queue.done and queue.current is None
    with pytest.raises(IndexError):
        queue.accept()
    assert queue.progress_text().startswith("3 / 3 reviewed, 1 rejected")
    # free text alone is filed under "other"; an unchanged edit is an accept
    queue.back()
    assert queue.reject("the units are missing")["reason"] == "other: the units are missing"
    queue.back()
    assert queue.edit(reply_text(queue.current))["decision"] == "accept"


def test_the_widget_buttons_and_keys_call_the_same_methods(tmp_path: Path) -> None:
    data, log = rows(4), tmp_path / "review.jsonl"
    queue = ReviewQueue(data, log, reviewer="ana")
    root = queue.widget
    buttons = [w for box in root.children if hasattr(box, "children") for w in box.children
               if type(w).__name__ == "Button"]
    labels = {b.description: b for b in buttons}
    assert {"Accept (a)", "Reject… (r)", "Edit… (e)", "◀ Back (b)", "Skip ▶ (n)"} <= set(labels)
    assert all(b.layout.width == "auto" for b in buttons)
    assert "p0#0" in queue._w["row"].value and "Question" in queue._w["row"].value

    labels["Accept (a)"].click()
    assert load_decisions(log)["p0#0"]["decision"] == "accept"
    keys = queue._w["keys"]
    keys.value = "r"  # opens the reasons; the key box clears itself
    assert keys.value == "" and queue.mode == "reject" and queue._w["reject_box"].layout.display is None
    keys.value = "2"
    assert load_decisions(log)["p1#0"]["reason"] == list(load_reasons())[1] == "bad_reasoning"
    keys.value = "e"
    assert queue._w["editor"].value == reply_text(data[2])
    queue._w["editor"].value = EDITED
    save = next(w for w in queue._w["edit_box"].children[1].children if w.description == "Save edit")
    save.click()
    assert load_decisions(log)["p2#0"] == {**load_decisions(log)["p2#0"], "decision": "edit", "reply": EDITED}
    assert queue.press("n") == "next" and queue.done
    assert "3 / 4 reviewed, 1 rejected, 1 edited" in queue._w["progress"].value


# --------------------------------------------------------------------------- applying decisions


def test_an_edit_replaces_the_assistant_reply_and_a_reject_drops_the_row(tmp_path: Path) -> None:
    data = rows(3)
    decisions = [make_decision("p0#0", "edit", reviewer="ana", reply=EDITED),
                 make_decision("p1#0", "reject", reviewer="ana", reason="bad_reasoning")]
    kept, stats = apply_reviews(data, decisions)
    assert [row_id(r) for r in kept] == ["p0#0", "p2#0"]
    edited = kept[0]
    assert thinking_of(edited) == "Tom has 3. He buys 5 more: 3 + 5 = 8." and answer_of(edited) == ANSWER
    assert to_messages(edited)["messages"][-1] == {"role": "assistant", "content": EDITED}
    assert thinking_of(data[0]) == THINKING  # the input row is untouched
    assert edited["review"]["original_reply"] == reply_text(data[0]) and edited["review"]["check"]["correct"] is True
    assert stats["edited"] == 1 and stats["rejected"] == 1 and stats["unreviewed"] == 1
    assert stats["reject_reasons"] == {"bad_reasoning": 1} and stats["kept"] == 2

    wrong = [make_decision("p2#0", "edit", reviewer="ana", reply="<think>\n3 + 5 = 9\n</think>\n\n\\boxed{9}")]
    _, stats = apply_reviews(data, wrong)
    assert stats["edits_failing_check"] == 1  # a human edit that no longer matches the reference is flagged

    exported = {"id": "x", "messages": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "old"}]}
    (out,), _ = apply_reviews([exported], [make_decision("x", "edit", reviewer="ana", reply="new")])
    assert out["messages"][-1]["content"] == "new" and exported["messages"][-1]["content"] == "old"


def test_unreviewed_rows_are_kept_or_dropped_by_policy() -> None:
    data = rows(3)
    decisions = [make_decision("p0#0", "accept", reviewer="ana")]
    assert len(apply_reviews(data, decisions)[0]) == 3
    kept, stats = apply_reviews(data, decisions, unreviewed="drop")
    assert [row_id(r) for r in kept] == ["p0#0"] and stats["stage"].drop_counts == {"not_reviewed": 2}
    with pytest.raises(ValueError, match="unreviewed"):
        apply_reviews(data, decisions, unreviewed="maybe")


def test_the_review_is_a_funnel_stage_and_shows_in_the_dataset_card(tmp_path: Path) -> None:
    data = rows(4)
    funnel = Funnel([StageResult("select", data)])
    log = tmp_path / "review.jsonl"
    append_decision(log, make_decision("p3#0", "reject", reviewer="ana", reason="wrong_answer: 9"))
    result = funnel.add(review_stage(data, log))
    assert result.stage == "human_review" and result.summary() == \
        "human_review: 4 in, 3 kept, 1 dropped (reviewer_wrong_answer 1)"
    table = funnel.table().set_index("stage")
    assert table.loc["human_review", "kept"] == 3 and table.loc["human_review", "reviewer_wrong_answer"] == 1
    assert result.dropped[0]["drop_detail"] == "ana: wrong_answer: 9"
    assert list(result.tables["decisions"]["row"]) == ["p3#0"]
    assert "| human_review |" in dataset_card(result.kept, source="test", funnel=funnel)


# --------------------------------------------------------------------------- sample and estimate


def test_the_sample_is_stratified_proportionally_and_deterministic() -> None:
    rows_ = population({"easy": 2000, "medium": 600, "hard": 300, "rare": 100})
    sample = review_sample(rows_, 50, strata_key="task", seed=1)
    assert len(sample) == 50 and len({row_id(r) for r in sample}) == 50
    assert Counter(r["task"] for r in sample) == {"easy": 33, "medium": 10, "hard": 5, "rare": 2}
    assert [row_id(r) for r in review_sample(rows_, 50, strata_key="task", seed=1)] == [row_id(r) for r in sample]
    assert {row_id(r) for r in review_sample(rows_, 50, strata_key="task", seed=2)} != {row_id(r) for r in sample}

    tiny = population({"big": 2990, "a": 5, "b": 5})  # every stratum is seen, however small
    assert Counter(r["task"] for r in review_sample(tiny, 10, strata_key="task")) == {"big": 8, "a": 1, "b": 1}
    assert len(review_sample(tiny[:7], 50)) == 7 and review_sample(tiny, 0) == []
    by_meta = review_sample(rows(9), 3, strata_key="steps")  # a field of row["meta"]
    assert sorted(r["meta"]["steps"] for r in by_meta) == [1, 2, 3]


def test_wilson_interval_matches_published_values() -> None:
    # Newcombe (1998), Statistics in Medicine 17:857-872, Table I, method 3 (score interval)
    for k, n, low, high in [(81, 263, 0.2553, 0.3662), (15, 148, 0.0624, 0.1605),
                            (0, 20, 0.0, 0.1611), (1, 29, 0.0061, 0.1718)]:
        assert wilson_interval(k, n) == pytest.approx((low, high), abs=1e-4)
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_bad_share_estimate_simple_and_stratified() -> None:
    sample = population({"x": 20})
    decisions = [make_decision(r, "reject" if i < 2 else "accept", reviewer="ana", reason="other")
                 for i, r in enumerate(sample)]
    est = bad_share_estimate(decisions, sample, 3000)
    assert (est.reviewed, est.rejected, est.share) == (20, 2, 0.1)
    assert (est.low, est.high) == pytest.approx((0.0279, 0.3010), abs=1e-4)  # Wilson 2/20
    assert est.bad_rows == 300 and est.bad_rows_range == (83, 904)
    assert est.summary().startswith("2 of 20 reviewed rows rejected: bad share 10% (95% CI 3%–30%)")
    assert bad_share_estimate([], sample, 3000).reviewed == 0

    # strata A (80 rows) and B (20 rows); A: 0 of 8 bad, B: 1 of 2 bad.
    pop = population({"A": 80, "B": 20})
    reviewed = pop[:8] + pop[80:82]
    decisions = [make_decision(r, "reject" if row_id(r) == "B-0#0" else "accept", reviewer="ana", reason="other")
                 for r in reviewed]
    est = bad_share_estimate(decisions, reviewed, strata_key="task", population=pop)
    # share = 0.8 * 0 + 0.2 * 0.5 = 0.1; variance = 0.2² * 0.25 / 2 = 0.005; n_eff = 0.09 / 0.005 = 18
    assert est.share == pytest.approx(0.1) and est.population_size == 100
    assert (est.low, est.high) == pytest.approx((0.0262, 0.3145), abs=1e-4)  # Wilson at p = 0.1, n = 18
    assert "effective sample size (18.0)" in est.method and "stratum-weighted bad share 10%" in est.summary()
    plain = bad_share_estimate(decisions, reviewed, 100)  # unweighted: 1 of 10
    assert plain.share == pytest.approx(0.1) and plain.high != pytest.approx(est.high, abs=1e-3)


# --------------------------------------------------------------------------- headless runs


def test_headless_runs_skip_the_queue(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert headless({"COURSE_HEADLESS": "1"}, check_frontend=False)
    assert headless_reason({"REVIEW": "0"}, check_frontend=False) == "REVIEW=0"
    assert headless({"PYTEST_CURRENT_TEST": "test_x.py::t"}, check_frontend=False)
    assert headless({"COURSE_RUN_DIR": "/w/runs/course-1"}, check_frontend=False)
    assert not headless({}, check_frontend=False) and not headless({"CI": "false"}, check_frontend=False)
    assert not headless({"REVIEW": "1", "CI": "true"})  # REVIEW=1 forces the queue
    assert headless()  # this very test: pytest, no Jupyter kernel

    log, data = tmp_path / "review.jsonl", rows(3)
    append_decision(log, make_decision("p1#0", "accept", reviewer="ana"))
    assert start_review(data, log, sample=data[:2], env={"COURSE_HEADLESS": "1"}) is None
    out = capsys.readouterr().out
    assert "Human review skipped (COURSE_HEADLESS=1). 1 of 2 sampled rows have a decision" in out
    assert "open this notebook in Jupyter" in out and len(read_jsonl(log)) == 1
    assert start_review(data, log, sample=[], env={"REVIEW": "1"}) is None
    assert "no row to review" in capsys.readouterr().out

    queue = start_review(data, log, reviewer="bo", sample=data[:2], env={"REVIEW": "1"})
    assert isinstance(queue, ReviewQueue) and queue.position == 0 and queue.reviewer == "bo"

"""Case E's judge evaluation with scripted judges (no model, no server): parsing, counts, retention, bias checks."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from helpers.core.stats import mean_ci, t_critical
from helpers.evaluate.judge import (
    JUDGE_COLUMNS,
    agreement_with_metric,
    judge_answers,
    judge_frame,
    judge_messages,
    judge_retention,
    pair_messages,
    paired_scores,
    pairwise,
    parse_preference,
    parse_score,
    report,
    score_summary,
    swap_check,
)
from helpers.evaluate.roi import deployment_verdict
from helpers.teacher.prompts import load_prompt

# --------------------------------------------------------------------------- parsing scores

REPLIES = [
    ("Score: 7", 7.0),
    ("7/10", 7.0),
    ("**8.5**", 8.5),
    ("score = 9 out of 10", 9.0),
    ("<score>6</score>", 6.0),
    ("The answer names both parties.\n<score>6/10</score>", 6.0),
    ("评分：8分", 8.0),
    ("得分: 7/10", 7.0),
    ("评分：八分", 8.0),
    ("得分：七分", 7.0),
    ("我给八分。", 8.0),
    ("评分：８", 8.0),  # full-width digit
    ("满分10分，我给8分。", 8.0),
    ("我给8分（满分10分）", 8.0),
    ("满分100分，得分：85", 8.5),
    ("seven", 7.0),
    ("I'd give it a seven out of ten.", 7.0),
    ("Score: ten", 10.0),
    ("80/100", 8.0),
    ("Score: 80%", 8.0),
    ("Score: 8.5/10", 8.5),
    ("Final score: **8**/10", 8.0),
    ("**Score:** 9", 9.0),
    ("Rating (0-10): 8", 8.0),
    ("Score: 8 (out of 10)", 8.0),
    ("The score is 9.", 9.0),
    ("SCORE: 3", 3.0),
    ("score: 0", 0.0),
    # reasoning with several numbers before the final score
    ("The answer misses 2 of the 3 parties and gets the amount (5,000 CNY) right.\nScore: 4", 4.0),
    ("3/4 fields are correct, dated 2024/10/05. Overall: 6/10", 6.0),
    ("Initial score: 5. After checking the dates again, final score: 7", 7.0),
    ("采用10分制。回答遗漏了违约条款，给6分", 6.0),
    # the judge's own thinking is not the reply
    ("<think>maybe 3/10, or Score: 2</think>\nScore: 9", 9.0),
    ("it could be 2/10 ...</think> Score: 9", 9.0),
]

UNSCORED = [
    "Score: 11",
    "Score: -1",
    "15/10",
    "Score: eleven",
    "Score: 7-8",  # a range is not a score
    "Score: 3/4",  # not on a 0-10 scale
    "",
    None,
    "The answer is good.",
    "I cannot decide between 6 and 7.",
    "Score: N/A",
    "这个回答十分准确。",  # 十分 = "very", not ten points
    "It took 3分钟.",
    "<think>Score: 9</think>",  # only thinking, no reply
]


@pytest.mark.parametrize("reply,expected", REPLIES)
def test_parse_score_reads_real_looking_replies(reply: str, expected: float) -> None:
    assert parse_score(reply) == pytest.approx(expected)


@pytest.mark.parametrize("reply", UNSCORED)
def test_parse_score_gives_none_when_there_is_no_valid_score(reply: str | None) -> None:
    assert parse_score(reply) is None


def test_a_labelled_out_of_range_score_does_not_fall_back_to_an_earlier_number() -> None:
    assert parse_score("Parts: 7/10 of the facts.\nScore: 12") is None


# --------------------------------------------------------------------------- parsing preferences


@pytest.mark.parametrize("reply,expected", [
    ("Both are close.\nPreference: A", "first"),
    ("Preference: B", "second"),
    ("Preference: tie", "tie"),
    ("Preference: a tie", "tie"),
    ("Verdict: Answer A", "first"),
    ("偏好：A", "first"),
    ("偏好：平局", "tie"),
    ("[[B]]", "second"),
    ("<preference>tie</preference>", "tie"),
    ("A", "first"),
    ("Answer B is better.", "second"),
    ("It's a tie.", "tie"),
    ("I first leaned to A, but on reflection.\nPreference: B", "second"),
    ("<think>Preference: A</think>Preference: B", "second"),
])
def test_parse_preference(reply: str, expected: str) -> None:
    assert parse_preference(reply) == expected


@pytest.mark.parametrize("reply", ["", "hmm, hard to say", "Answer A is better. Answer B is better.", None])
def test_parse_preference_none_when_unclear(reply: str | None) -> None:
    assert parse_preference(reply) is None


# --------------------------------------------------------------------------- prompts


def test_messages_come_from_the_prompt_files_in_both_languages() -> None:
    en = judge_messages("Who pays?", {"payer": "Party A"}, "Party B pays.")
    assert [m["role"] for m in en] == ["system", "user"]
    assert en[0]["content"] == load_prompt("judge_system").text
    assert "Who pays?" in en[1]["content"] and '"payer": "Party A"' in en[1]["content"]
    assert "Party B pays." in en[1]["content"] and "Score: N" in en[1]["content"]
    zh = judge_messages("谁付款？", "甲方", "乙方", lang="zh")
    assert zh[0]["content"] == load_prompt("judge_system_zh").text and "评分：N" in zh[1]["content"]
    pair = pair_messages("q", "ref", "FIRST-ANSWER", "SECOND-ANSWER")
    text = pair[1]["content"]
    assert text.index("FIRST-ANSWER") < text.index("SECOND-ANSWER") and "Preference: tie" in text
    assert "偏好：平局" in pair_messages("q", "ref", "a", "b", lang="zh-CN")[1]["content"]
    with pytest.raises(ValueError, match="not 'fr'"):
        judge_messages("q", "r", "a", lang="fr")


def test_new_prompt_headers_list_the_variables_they_use() -> None:
    for name in ("judge_system", "judge_user", "judge_pair_user", "judge_system_zh", "judge_user_zh",
                 "judge_pair_user_zh"):
        template = load_prompt(name)
        assert template.description
        assert sorted(template.header.get("variables", [])) == sorted(template.variables), name


# --------------------------------------------------------------------------- asking the judge


def _items(rows: list[tuple[str, str, str]]) -> pd.DataFrame:
    """``(id, model, answer)`` rows with a shared question and reference per id."""
    return pd.DataFrame([{"id": i, "model": m, "question": f"question {i}", "reference": f"reference {i}",
                          "answer": a} for i, m, a in rows], columns=list(JUDGE_COLUMNS))


class CountingJudge:
    """A fake batch chat: replies keyed by the answer in the prompt, records every batch."""

    def __init__(self, replies: dict[str, str | Exception]) -> None:
        self.replies = replies
        self.batches: list[int] = []

    def __call__(self, chats):
        self.batches.append(len(chats))
        out = []
        for chat in chats:
            user = chat[-1]["content"]
            out.append(next(r for key, r in self.replies.items() if key in user))
        return out


def test_judge_answers_asks_once_per_row_and_keeps_unscored_rows_visible() -> None:
    items = _items([("1", "teacher", "ANS-GOOD"), ("1", "student", "ANS-OK"), ("2", "teacher", "ANS-VAGUE"),
                    ("2", "student", "ANS-FAIL")])
    judge = CountingJudge({"ANS-GOOD": "All facts match.\nScore: 9", "ANS-OK": "得分: 7/10",
                           "ANS-VAGUE": "Decent answer overall.", "ANS-FAIL": TimeoutError("read timed out")})
    scored = judge_answers(items, judge)
    assert judge.batches == [4]
    assert scored["judge_score"].iloc[:2].tolist() == [9.0, 7.0]
    assert scored["judge_score"].iloc[2:].isna().all()  # never a default 5
    assert scored["judge_parsed"].tolist() == [True, True, False, False]
    assert scored["judge_reply"].iloc[2] == "Decent answer overall." and pd.isna(scored["judge_reply"].iloc[3])
    assert scored["judge_error"].iloc[2] == "unparseable score"
    assert "TimeoutError" in scored["judge_error"].iloc[3]
    assert list(items.columns) == list(JUDGE_COLUMNS), "the input frame is not modified"
    summary = score_summary(scored)
    assert summary.loc["teacher", ["n", "parsed", "unparseable", "failed"]].tolist() == [2, 1, 1, 0]
    assert summary.loc["student", ["n", "parsed", "unparseable", "failed"]].tolist() == [2, 1, 0, 1]
    assert summary.loc["teacher", "mean_score"] == 9.0


def test_judge_answers_needs_the_columns_and_a_judge() -> None:
    with pytest.raises(KeyError, match="reference"):
        judge_answers(pd.DataFrame({"id": [1], "model": ["m"], "question": ["q"], "answer": ["a"]}), lambda c: [])
    with pytest.raises(ValueError, match="endpoint"):
        judge_answers(_items([("1", "m", "a")]))
    with pytest.raises(ValueError, match="returned 0 replies for 1"):
        judge_answers(_items([("1", "m", "a")]), lambda chats: [])


# --------------------------------------------------------------------------- summaries


def _scored(rows: list[tuple[str, str, float | None]]) -> pd.DataFrame:
    frame = pd.DataFrame([{"id": i, "model": m, "judge_score": math.nan if s is None else s,
                           "judge_reply": "r"} for i, m, s in rows])
    frame["judge_parsed"] = frame["judge_score"].notna()
    return frame


# teacher / student: 1 tie (1 point), 2 student, 3 tie, 4 teacher, 5 and 6 unscored, 7 teacher (1.5 points)
PAIRS = _scored([("1", "T", 8), ("1", "S", 7), ("2", "T", 7), ("2", "S", 9), ("3", "T", 9), ("3", "S", 9),
                 ("4", "T", 5), ("4", "S", 3), ("5", "T", None), ("5", "S", 8), ("6", "T", 6), ("6", "S", None),
                 ("7", "T", 10), ("7", "S", 8.5)])


def test_pairwise_counts_match_a_hand_count() -> None:
    assert pairwise(PAIRS, "T", "S") == {"teacher": "T", "student": "S", "margin": 0.1, "items": 7,
                                         "teacher_wins": 2, "student_wins": 1, "ties": 2, "unscored": 2}
    strict = pairwise(PAIRS, "T", "S", margin=0.0)  # the one-point gap of item 1 is now a teacher win
    assert (strict["teacher_wins"], strict["ties"], strict["unscored"]) == (3, 1, 2)
    table = paired_scores(PAIRS, "T", "S").set_index("id")
    assert table.loc["2", "diff"] == pytest.approx(0.2) and table.loc["5", "outcome"] == "unscored"


def test_an_item_only_one_model_answered_is_unscored_not_a_tie() -> None:
    extra = pd.concat([PAIRS, _scored([("8", "T", 7)])], ignore_index=True)
    assert pairwise(extra, "T", "S")["unscored"] == 3


def test_judge_retention_uses_items_both_models_were_scored_on() -> None:
    # items 1, 2, 3, 4, 7: teacher 8+7+9+5+10 = 39, student 7+9+9+3+8.5 = 36.5
    assert judge_retention(PAIRS, "T", "S") == pytest.approx(36.5 / 39)
    with pytest.raises(KeyError, match="no rows of model 'X'"):
        judge_retention(PAIRS, "T", "X")


def test_t_critical_matches_the_printed_table() -> None:
    for df, value in [(1, 12.7062), (2, 4.3027), (3, 3.1824), (9, 2.2622), (30, 2.0423), (5000, 1.9604)]:
        assert t_critical(0.95, df) == pytest.approx(value, abs=1e-4)
    assert t_critical(0.99, 10) == pytest.approx(3.1693, abs=1e-4)


def test_score_summary_ci_matches_a_hand_computation() -> None:
    # 7, 8, 9, 6: mean 7.5, sd sqrt(5/3), se sqrt(5/3)/2, t(0.975, 3) = 3.182446
    scored = _scored([("1", "m", 7), ("2", "m", 8), ("3", "m", 9), ("4", "m", 6), ("5", "m", None)])
    row = score_summary(scored).loc["m"]
    half = 3.182446 * math.sqrt(5 / 3) / 2
    assert (row["n"], row["parsed"], row["unparseable"], row["failed"]) == (5, 4, 1, 0)
    assert row["mean_score"] == pytest.approx(7.5)
    assert row["ci_low"] == pytest.approx(7.5 - half, abs=1e-5) and row["ci_high"] == pytest.approx(7.5 + half, abs=1e-5)
    mean, low, high = mean_ci([4.0])
    assert mean == 4.0 and math.isnan(low) and math.isnan(high)


def test_report_puts_both_retentions_and_their_verdicts_side_by_side() -> None:
    table = report(PAIRS, "T", "S", metric_retention=0.85, break_even_months=2.0)
    assert table.loc["teacher wins", "value"] == 2 and table.loc["ties", "value"] == 2
    assert table.loc["unscored pairs", "value"] == 2
    assert table.loc["retention (judge)", "value"] == pytest.approx(round(36.5 / 39, 3))
    assert table.loc["verdict (judge)", "value"] == deployment_verdict(36.5 / 39, 2.0)
    assert table.loc["verdict (judge)", "value"].startswith("DEPLOY")
    assert table.loc["verdict (task metric)", "value"].startswith("KEEP")
    assert table.loc["T mean judge score", "value"] == pytest.approx(round((8 + 7 + 9 + 5 + 6 + 10) / 6, 2))


# --------------------------------------------------------------------------- judge checks


SWAP_ITEMS = _items([("1", "T", "teacher answer one"), ("1", "S", "student answer one"),
                     ("2", "T", "teacher answer two"), ("2", "S", "student answer two"),
                     ("3", "T", "teacher answer three"), ("3", "S", "student answer three")])


def _pair_judge(decide):
    """A fake batch judge: ``decide(first, second) -> reply`` on the answers shown as A and B."""
    calls: list[int] = []

    def chat(chats):
        calls.append(len(chats))
        out = []
        for chat_ in chats:
            text = chat_[-1]["content"]
            first = text.split("Answer A:\n", 1)[1].split("\n", 1)[0]
            second = text.split("Answer B:\n", 1)[1].split("\n", 1)[0]
            out.append(decide(first, second))
        return out

    chat.calls = calls
    return chat


def test_a_judge_that_always_prefers_the_first_answer_flips_every_verdict() -> None:
    judge = _pair_judge(lambda first, second: "Preference: A")
    check = swap_check(SWAP_ITEMS, "T", "S", judge)
    assert judge.calls == [6]
    assert (check.n, check.parsed, check.flips, check.reversals, check.unparseable) == (3, 3, 3, 3, 0)
    assert check.flip_rate == 1.0 and check.first_slot_rate == 1.0
    assert check.table["teacher_first"].tolist() == ["teacher"] * 3
    assert check.table["student_first"].tolist() == ["student"] * 3


def test_a_consistent_judge_never_flips() -> None:
    prefers_teacher = _pair_judge(lambda first, second: "Preference: A" if first.startswith("teacher") else
                                  "Preference: B")
    check = swap_check(SWAP_ITEMS, "T", "S", prefers_teacher)
    assert (check.flips, check.flip_rate, check.first_slot_rate) == (0, 0.0, 0.5)
    ties = swap_check(SWAP_ITEMS, "T", "S", _pair_judge(lambda first, second: "Preference: tie"))
    assert ties.flips == 0 and math.isnan(ties.first_slot_rate)


def test_swap_check_counts_unclear_verdicts_apart() -> None:
    def decide(first: str, second: str) -> str:
        if "one" in first:
            return "I cannot tell."
        if "two" in first and first.startswith("student"):
            return "Preference: tie"  # teacher won the other order: a flip, not a reversal
        return "Preference: A" if first.startswith("teacher") else "Preference: B"

    check = swap_check(SWAP_ITEMS, "T", "S", _pair_judge(decide))
    assert (check.n, check.unparseable, check.parsed, check.flips, check.reversals) == (3, 1, 2, 1, 0)
    assert check.to_dict()["flip_rate"] == 0.5


def test_agreement_with_metric_matches_a_hand_computed_kappa() -> None:
    scores = [9, 8, 7, 6, 5, 6, 2, 1, 0, 4]  # judge passes (>= 5): 6 of 10
    correct = [1, 1, 1, 1, 1, 0, 0, 0, 0, 1]  # metric right: 6 of 10; they agree on 8
    frame = pd.DataFrame({"judge_score": scores, "correct": [bool(c) for c in correct]})
    result = agreement_with_metric(frame)
    # p_o = 0.8, p_e = 0.6 * 0.6 + 0.4 * 0.4 = 0.52, kappa = 0.28 / 0.48
    assert result["n"] == 10 and result["agreement"] == pytest.approx(0.8)
    assert result["kappa"] == pytest.approx(0.28 / 0.48) and result["reason"] == ""
    unscored = frame.assign(judge_score=[math.nan] + scores[1:])
    assert agreement_with_metric(unscored)["n"] == 9
    assert agreement_with_metric(frame, threshold=8.5)["agreement"] == pytest.approx(0.5)


def test_agreement_without_an_exact_metric_says_why() -> None:
    result = agreement_with_metric(pd.DataFrame({"judge_score": [7.0, 3.0]}))
    assert result["n"] == 0 and math.isnan(result["kappa"]) and "no exact metric" in result["reason"]
    none = agreement_with_metric(pd.DataFrame({"judge_score": [7.0], "correct": [None]}))
    assert none["n"] == 0 and none["reason"]
    same = agreement_with_metric(pd.DataFrame({"judge_score": [9.0, 8.0], "correct": [True, True]}))
    assert same["agreement"] == 1.0 and math.isnan(same["kappa"]) and "undefined" in same["reason"]


# --------------------------------------------------------------------------- notebook 06's use


def test_judge_frame_takes_the_first_items_of_the_set_for_the_judged_models() -> None:
    items = pd.DataFrame([
        {"dataset": "headlines", "model": m, "prompt_id": p, "question": q, "reference": "sports",
         "prediction": pred, "correct": pred == "sports"}
        for p, q in (("h1", "Striker scores twice"), ("h2", "前锋梅开二度"), ("h3", "Team wins cup"))
        for m, pred in (("teacher", "sports"), ("distilled", None), ("base", "culture"))]
        + [{"dataset": "gsm8k", "model": "teacher", "prompt_id": "g1", "question": "1+1?", "reference": "2",
            "prediction": "2", "correct": True}])
    frame = judge_frame(items, "headlines", ["teacher", "distilled"], n=2)
    assert list(frame["id"]) == ["h1", "h1", "h2", "h2"] and set(frame["model"]) == {"teacher", "distilled"}
    assert list(frame["answer"]) == ["sports", "(no answer)", "sports", "(no answer)"]
    assert list(frame["lang"]) == ["en", "en", "zh", "zh"]
    assert set(JUDGE_COLUMNS) <= set(frame.columns) and "correct" in frame.columns


def test_worked_verdicts_go_before_the_question_in_the_items_language() -> None:
    plain = judge_messages("q", "r", "a")
    shown = judge_messages("q", "r", "a", shots=2)
    assert [m["role"] for m in shown] == ["system", "user", "assistant", "user", "assistant", "user"]
    assert shown[0] == plain[0] and shown[-1] == plain[-1]
    assert "Score: 10" in shown[2]["content"]
    assert "评分" in judge_messages("问题", "r", "a", lang="zh", shots=1)[2]["content"]
    pair = pair_messages("q", "r", "A-text", "B-text", shots=3)
    assert [m["role"] for m in pair].count("assistant") == 3 and "Preference:" in pair[2]["content"]
    items = _items([("1", "teacher", "ANS-GOOD")]).assign(lang=["zh"])
    seen = []

    def judge(chats):
        seen.extend(chats)
        return ["评分：8"]
    assert judge_answers(items, judge, shots=1)["judge_score"].tolist() == [8.0]
    assert "参考答案" in seen[0][-1]["content"], "the row's lang column chooses the Chinese prompt"


def test_the_judge_endpoint_is_its_own_when_configured(monkeypatch) -> None:
    from helpers.teacher.server import judge_endpoint

    monkeypatch.setenv("JUDGE_BASE_URL", "http://judge.example/v1/")
    monkeypatch.setenv("JUDGE_MODEL", "judge-model")
    monkeypatch.setenv("JUDGE_API_KEY", "sk-judge")
    endpoint, server = judge_endpoint()
    assert server is None and endpoint.base_url == "http://judge.example/v1" and endpoint.model == "judge-model"
    monkeypatch.delenv("JUDGE_MODEL")
    with pytest.raises(ValueError, match="JUDGE_MODEL"):
        judge_endpoint()


def test_the_report_withholds_verdicts_when_the_teacher_is_weak() -> None:
    scored = _scored([("1", "teacher", 2.0), ("1", "student", 3.0), ("2", "teacher", 1.0), ("2", "student", 1.0)])
    table = report(scored, "teacher", "student", metric_retention=1.5, break_even_months=1.0,
                   metric_teacher_quality=0.1)
    assert table.loc["verdict (judge)", "value"].startswith("NO VERDICT")  # teacher mean 1.5 / 10
    assert table.loc["verdict (task metric)", "value"].startswith("NO VERDICT")


def test_the_judges_verdict_needs_enough_pairs_and_a_judge_that_agrees_with_the_metric() -> None:
    rows = [(str(i), m, 8.0) for i in range(6) for m in ("teacher", "student")]
    kwargs = dict(metric_retention=1.0, break_even_months=1.0)
    assert report(_scored(rows), "teacher", "student", **kwargs).loc["verdict (judge)", "value"].startswith("DEPLOY")
    few = report(_scored(rows[:8]), "teacher", "student", **kwargs).loc["verdict (judge)", "value"]
    assert few.startswith("NO VERDICT") and "only 4 items" in few
    chance = report(_scored(rows), "teacher", "student", judge_kappa=0.0, **kwargs).loc["verdict (judge)", "value"]
    assert chance.startswith("NO VERDICT") and "kappa 0.00" in chance
    unknown = report(_scored(rows), "teacher", "student", judge_kappa=float("nan"), **kwargs)
    assert unknown.loc["verdict (judge)", "value"].startswith("DEPLOY"), "no exact metric: nothing to compare with"

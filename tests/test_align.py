"""Stage 5: the judge / rewrite loop with a scripted chat function (no model needed)."""

from __future__ import annotations

import re

import pytest
from curation_rows import THINKING, make_row

from helpers.curate.align import AlignmentAborted, align_stage, merge_aligned, parse_rewrite, parse_verdict
from helpers.curate.funnel import StageResult
from helpers.teacher.prompts import load_prompt


def _marker(name: str) -> str:
    """The longest literal part of a prompt file: tells which prompt a call used."""
    return max(re.split(r"\$\w+", load_prompt(name).text), key=len)


MARKERS = {kind: _marker(f"align_{kind}") for kind in ("judge", "expand", "shorten")}
EXPANDED = ("Tom starts with 3 apples.\nHe then buys 5 more apples.\n"
            "We add the two amounts: 3 + 5 = 8.\nSo Tom has 8 apples.")
GOOD_REWRITE = f"<reasoning>\n{EXPANDED}\n</reasoning>\n<answer>\\boxed{{8}}</answer>"


class Script:
    """A fake batch teacher: pops scripted replies per prompt kind and records every call.

    A scripted exception stands for a call that failed after the engine's retries.
    """

    def __init__(self, judge: list[str], rewrite: list[str] | None = None) -> None:
        self.replies = {"judge": list(judge), "rewrite": list(rewrite or [])}
        self.calls: list[str] = []
        self.batches: list[int] = []

    def one(self, messages: list[dict[str, str]]) -> str | Exception:
        content = messages[-1]["content"]
        kind = next(k for k, mark in MARKERS.items() if mark in content)
        self.calls.append(kind)
        queue = self.replies["judge" if kind == "judge" else "rewrite"]
        return queue.pop(0) if len(queue) > 1 else queue[0]

    def __call__(self, chats: list[list[dict[str, str]]]) -> list[str | Exception]:
        self.batches.append(len(chats))
        return [self.one(chat) for chat in chats]


def test_passes_on_round_two_after_expansion() -> None:
    chat = Script(judge=['{"verdict": "too_terse", "reason": "skips the addition"}',
                         '{"verdict": "right"}'], rewrite=[GOOD_REWRITE])
    result = align_stage([make_row()], chat, max_rounds=3)
    (row,) = result.kept
    assert chat.calls == ["judge", "expand", "judge"]
    assert row["align"]["rounds"] == 2 and row["align"]["rewritten"]
    assert row["reply"]["thinking"] == EXPANDED
    assert row["align"]["original_thinking"] == THINKING
    assert [h["verdict"] for h in row["align"]["history"]] == ["too_terse", "right"]
    assert row["align"]["history"][0]["action"] == "expand"
    assert row["align"]["history"][0]["reason"] == "skips the addition"
    assert result.tables["rounds"]["verdicts"].tolist() == ["too_terse -> right"]


def test_right_at_once_keeps_the_row_unchanged() -> None:
    chat = Script(judge=["right"])
    result = align_stage([make_row()], chat)
    assert result.kept[0]["reply"]["thinking"] == THINKING
    assert result.kept[0]["align"]["rounds"] == 1 and not result.kept[0]["align"]["rewritten"]
    assert chat.calls == ["judge"]


def test_never_passing_is_dropped_after_max_rounds() -> None:
    shortened = GOOD_REWRITE
    chat = Script(judge=['{"verdict": "too_convoluted"}'], rewrite=[shortened])
    result = align_stage([make_row()], chat, max_rounds=3)
    assert result.n_kept == 0
    (row,) = result.dropped
    assert row["drop_reason"] == "alignment_failed"
    assert "too_convoluted after 3 round(s)" in row["drop_detail"]
    assert row["align"]["rounds"] == 3
    assert chat.calls == ["judge", "shorten", "judge", "shorten", "judge"]  # no rewrite after the last judge


def test_unparseable_verdict_is_a_failed_round_not_a_crash() -> None:
    chat = Script(judge=["I would rather not say.", "Verdict: RIGHT"])
    result = align_stage([make_row()], chat, max_rounds=2)
    (row,) = result.kept
    first, second = row["align"]["history"]
    assert first["verdict"] is None and "unparseable" in first["note"]
    assert second["verdict"] == "right"

    always_garbage = Script(judge=["¯\\_(ツ)_/¯"])
    result = align_stage([make_row()], always_garbage, max_rounds=2)
    assert result.dropped[0]["drop_reason"] == "alignment_failed"
    assert "no parseable verdict" in result.dropped[0]["drop_detail"]
    assert always_garbage.calls == ["judge", "judge"]


def test_rewrite_that_changes_the_answer_is_rejected() -> None:
    wrong = GOOD_REWRITE.replace("\\boxed{8}", "\\boxed{9}")
    chat = Script(judge=["too_terse", "right"], rewrite=[wrong])
    result = align_stage([make_row()], chat)
    (row,) = result.kept  # round 2 re-judges the original, which passes
    assert not row["align"]["rewritten"] and row["reply"]["thinking"] == THINKING
    assert "no longer verifies" in row["align"]["history"][0]["note"]


def test_rewrite_in_the_wrong_format_is_a_failed_round() -> None:
    chat = Script(judge=["too_terse", "too_terse"], rewrite=["Here is a better version: 3 + 5 = 8"])
    result = align_stage([make_row()], chat, max_rounds=2)
    assert result.dropped[0]["drop_reason"] == "alignment_failed"
    assert "format" in result.dropped[0]["align"]["history"][0]["note"]


def test_chat_errors_are_reported_and_abort_when_a_whole_round_fails() -> None:
    flaky = Script(judge=[ConnectionError("reset"), "right", "right"])  # row 0 fails once, row 1 passes
    result = align_stage([make_row(prompt_id="p0"), make_row(prompt_id="p1")], flaky)
    assert result.n_kept == 2 and flaky.batches == [2, 1]  # round 2 re-asks only the failed row
    assert "judge call failed: ConnectionError: reset" in result.kept[0]["align"]["history"][0]["note"]

    def half_dead(chats: list) -> list:  # p0's calls always fail, p1 is judged "too terse" for ever
        return [ConnectionError("refused") if "p0 question" in c[-1]["content"] else "too_terse" for c in chats]

    rows = [make_row(prompt_id="p0", question="p0 question"), make_row(prompt_id="p1")]
    result = align_stage(rows, half_dead, max_rounds=2)
    by_id = {r["prompt_id"]: r for r in result.dropped}
    assert by_id["p0"]["drop_reason"] == "alignment_error" and "refused" in by_id["p0"]["drop_detail"]
    assert by_id["p1"]["drop_reason"] == "alignment_failed"

    dead = Script(judge=[ConnectionError("refused")])
    with pytest.raises(AlignmentAborted, match="refused"):
        align_stage([make_row(prompt_id=f"p{i}") for i in range(3)], dead, max_rounds=2)


def test_each_round_is_one_batch_of_calls() -> None:
    rows = [make_row(prompt_id=f"p{i}") for i in range(6)]
    batches: list[int] = []

    def chat(chats: list[list[dict[str, str]]]) -> list[str]:
        batches.append(len(chats))
        replies = []
        for messages in chats:
            content = messages[-1]["content"]
            if MARKERS["judge"] not in content:
                replies.append(GOOD_REWRITE)
            else:
                replies.append("right" if "He then buys" in content else "too_terse")
        return replies

    result = align_stage(rows, chat)
    assert result.n_kept == 6 and [r["prompt_id"] for r in result.kept] == [f"p{i}" for i in range(6)]
    assert all(r["align"]["rounds"] == 2 for r in result.kept)
    assert batches == [6, 6, 6]  # judge all, rewrite all, judge all again


def test_replies_may_be_teacher_replies_and_a_wrong_count_is_an_error() -> None:
    from helpers.teacher.client import normalize_reply

    as_reply = lambda chats: [normalize_reply("right", None, "stop", None, 0.1, "t") for _ in chats]  # noqa: E731
    assert align_stage([make_row()], as_reply).n_kept == 1
    with pytest.raises(ValueError, match="returned 0 replies for 1 chats"):
        align_stage([make_row()], lambda chats: [])


@pytest.mark.parametrize("text, label", [
    ('{"verdict": "too_terse", "reason": "x"}', "too_terse"),
    ('```json\n{"label": "Too Convoluted"}\n```', "too_convoluted"),
    ('Sure. {"verdict": "right"} Hope that helps', "right"),
    ("<think>maybe too terse? no.</think>\nVerdict: **right**", "right"),
    ("RIGHT", "right"),
    ("just right.", "right"),
    ("The chain is too convoluted for a small model.", "too_convoluted"),
    ("It is too terse in places but too convoluted elsewhere.", None),
    ('{"verdict": "excellent"}', None),
    ("", None),
])
def test_parse_verdict(text: str, label: str | None) -> None:
    assert parse_verdict(text)[0] == label


def test_parse_rewrite() -> None:
    assert parse_rewrite(GOOD_REWRITE) == (EXPANDED, "<answer>\\boxed{8}</answer>")
    assert parse_rewrite("<think>plan</think><reasoning>a</reasoning>\\boxed{1}") == ("a", "\\boxed{1}")
    assert parse_rewrite("<reasoning>a</reasoning>") is None
    assert parse_rewrite("no tags") is None


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        align_stage([make_row()], Script(judge=["right"]), max_rounds=0)
    with pytest.raises(TypeError):
        align_stage([make_row()], "not callable")  # type: ignore[arg-type]


def test_merge_aligned_replaces_passed_and_handles_failed_rows() -> None:
    rows = [make_row(prompt_id=f"p{i}") for i in range(4)]
    chat = Script(judge=['{"verdict": "too_terse"}', '{"verdict": "right"}'], rewrite=[GOOD_REWRITE])
    aligned = align_stage(rows[:1], chat, max_rounds=2)
    never = align_stage(rows[1:2], Script(judge=["too_convoluted"], rewrite=["nonsense"]),
                        max_rounds=2)
    sample = StageResult("align", aligned.kept + never.kept, aligned.dropped + never.dropped)

    lenient = merge_aligned(rows, sample, drop_failed=False)
    assert [r["prompt_id"] for r in lenient.kept] == ["p0", "p1", "p2", "p3"]
    assert lenient.kept[0]["reply"]["thinking"] == EXPANDED and lenient.kept[0]["align"]["passed"]
    assert lenient.kept[1]["reply"] == rows[1]["reply"]  # the judge's "no" deletes nothing
    assert lenient.kept[1]["align"] == {**lenient.kept[1]["align"], "passed": False, "rewritten": False}
    assert "align" not in lenient.kept[2]
    assert lenient.tables["outcome"]["row"].tolist() == ["p0#0", "p1#0"]

    strict = merge_aligned(rows, sample, drop_failed=True)
    assert [r["prompt_id"] for r in strict.kept] == ["p0", "p2", "p3"]
    (dropped,) = strict.dropped
    assert dropped["drop_reason"] == "alignment_failed" and dropped["reply"] == rows[1]["reply"]

    with pytest.raises(ValueError, match="not among"):
        merge_aligned(rows[2:], sample, drop_failed=True)

"""Tests of helpers.teacher.parsing: boxed answers, think/answer tags, section markers, numbers."""

from __future__ import annotations

import pytest

from helpers.teacher.parsing import (
    DEFAULT_SECTION_MARKERS,
    FormatFlags,
    extract_boxed,
    normalize_number,
    parse_sections,
    split_thinking,
)

# --------------------------------------------------------------------------- extract_boxed


@pytest.mark.parametrize("text, expected", [
    (r"so \boxed{42}.", "42"),
    (r"\boxed{\frac{1}{2}}", r"\frac{1}{2}"),                    # nested braces
    (r"\boxed{ {a}{b{c}} }", "{a}{b{c}}"),                        # deeper nesting, trimmed
    (r"first \boxed{1} then \boxed{2}", "2"),                     # last box wins
    (r"\boxed{\{1, 2\}}", r"\{1, 2\}"),                           # escaped braces are literal
    (r"\fbox{7}", "7"),
    (r"\boxed {8}", "8"),                                         # space before the brace
    (r"\boxed 9 apples", "9"),                                    # short form
    (r"\boxed{}", ""),
    (r"\boxed{\boxed{3}}", r"\boxed{3}"),                         # a box in a box is part of the outer one
])
def test_extract_boxed_finds_the_last_complete_box(text: str, expected: str) -> None:
    assert extract_boxed(text) == expected


@pytest.mark.parametrize("text", [None, "", "no box here", r"\boxed{12", r"\boxed{1} and then \boxed{2"])
def test_extract_boxed_none_when_absent_or_unclosed(text: str | None) -> None:
    assert extract_boxed(text) is None


# --------------------------------------------------------------------------- split_thinking


def test_split_thinking_well_formed() -> None:
    parsed = split_thinking("<think>\n5 + 3 = 8.\n</think>\n<answer>\\boxed{8}</answer>")
    assert parsed.thinking == "5 + 3 = 8."
    assert parsed.answer == "<answer>\\boxed{8}</answer>"  # the rest of the reply, tags kept
    assert parsed.final == "\\boxed{8}"
    assert parsed.boxed == "8"
    assert parsed.flags.ok and str(parsed.flags) == "ok"


def test_split_thinking_is_case_and_space_tolerant() -> None:
    parsed = split_thinking("< THINK >a b</ Think >  The answer is \\boxed{2}")
    assert parsed.thinking == "a b"
    assert parsed.answer == "The answer is \\boxed{2}"
    assert parsed.flags.ok


def test_split_thinking_missing_open_tag() -> None:
    parsed = split_thinking("I count 2 and 2.\n</think>\n\\boxed{4}")
    assert parsed.thinking == "I count 2 and 2."
    assert parsed.boxed == "4"
    assert parsed.flags.ok


def test_split_thinking_unclosed_think_is_all_thinking_and_flagged() -> None:
    parsed = split_thinking("<think>I start and \\boxed{3} is maybe")
    assert parsed.thinking == "I start and \\boxed{3} is maybe"
    assert parsed.answer == ""
    assert parsed.boxed is None  # a box inside unfinished thinking is not an answer
    assert parsed.flags.unclosed_think and parsed.flags.missing_answer and parsed.flags.missing_boxed
    assert not parsed.flags.ok
    assert "unclosed_think" in str(parsed.flags)


def test_split_thinking_no_tags() -> None:
    parsed = split_thinking("The answer is \\boxed{5}.")
    assert parsed.thinking is None
    assert parsed.answer == "The answer is \\boxed{5}."
    assert parsed.flags.problems == ("missing_think",)
    assert split_thinking("The answer is \\boxed{5}.", expect_think=False).flags.ok


def test_split_thinking_answer_tags() -> None:
    unclosed = split_thinking("<think>x</think><answer>\\boxed{4}")
    assert unclosed.final == "\\boxed{4}" and unclosed.flags.unclosed_answer
    no_tag = split_thinking("<think>x</think>\\boxed{4}", expect_answer_tag=True)
    assert no_tag.flags.missing_answer
    assert split_thinking("<think>x</think><answer>\\boxed{4}</answer>", expect_answer_tag=True).flags.ok


def test_split_thinking_empty_and_boxless() -> None:
    empty = split_thinking("   ")
    assert empty.flags.empty and not empty.flags.ok
    boxless = split_thinking("<think>t</think>Sports", expect_boxed=True)
    assert boxless.flags.problems == ("missing_boxed",)
    assert split_thinking("<think>t</think>Sports", expect_boxed=False).flags.ok


def test_format_flags_problems_order_and_ok() -> None:
    flags = FormatFlags(missing_think=True, missing_boxed=True)
    assert flags.problems == ("missing_think", "missing_boxed")
    assert not flags.ok
    assert FormatFlags().ok


# --------------------------------------------------------------------------- sections


def test_sections_english_with_markdown() -> None:
    text = ('**Thinking process:** The text names Ada Lim of Rivet Labs.\n\n'
            '**Final answer:**\n{"person": "Ada Lim", "organisation": "Rivet Labs"}')
    sections = parse_sections(text)
    assert sections.thinking == "The text names Ada Lim of Rivet Labs."
    assert sections.answer == '{"person": "Ada Lim", "organisation": "Rivet Labs"}'
    assert sections.flags.ok and sections.missing == ()


def test_sections_chinese_full_width_and_ascii_colons() -> None:
    text = "思考过程：文中提到了张伟。\n最终答案:{\"person\": \"张伟\"}"
    sections = parse_sections(text)
    assert sections.thinking == "文中提到了张伟。"
    assert sections.answer == '{"person": "张伟"}'
    assert parse_sections("## 思考过程\n先读\n## 最终答案\n42").answer == "42"


def test_sections_last_final_answer_wins_and_case_insensitive() -> None:
    text = "THINKING PROCESS: so the final answer: maybe 3?\nfinal   answer： 4"
    sections = parse_sections(text)
    assert sections.thinking == "so the final answer: maybe 3?"
    assert sections.answer == "4"


def test_sections_missing_marker_is_flagged() -> None:
    sections = parse_sections("Thinking process: I looked everywhere.")
    assert sections.answer is None
    assert sections.missing == ("answer",)
    assert sections.flags.missing_answer and not sections.flags.missing_think
    nothing = parse_sections("")
    assert nothing.flags.empty and nothing.missing == ("thinking", "answer")


def test_sections_custom_markers() -> None:
    markers = {**DEFAULT_SECTION_MARKERS, "confidence": ("Confidence",)}
    sections = parse_sections("Thinking process: hm\nFinal answer: B\nConfidence: high", markers)
    assert sections.fields == {"thinking": "hm", "answer": "B", "confidence": "high"}
    only = parse_sections("Reasoning: a\nVerdict: yes", {"reasoning": ("Reasoning",), "verdict": ("Verdict",)},
                          required=("verdict",))
    assert only.fields == {"reasoning": "a", "verdict": "yes"} and only.flags.ok


# --------------------------------------------------------------------------- numbers


@pytest.mark.parametrize("raw, expected", [
    ("1,234", "1234"),
    ("$5.00", "5"),
    ("5.0", "5"),
    ("5.50", "5.5"),
    ("-0.50", "-0.5"),
    ("\u22123", "-3"),              # unicode minus
    ("\uff18 apples", "8"),        # full-width digit and a unit
    (r"\$1,000", "1000"),
    (r"\frac{3}{4}", "0.75"),
    ("6/3", "2"),
    ("1/3", "1/3"),
    (r"\boxed{12}", "12"),
    ("The answer is 42.", "42"),
    (r"18 \text{ km}", "18"),
    (7, "7"),
    (2.0, "2"),
])
def test_normalize_number(raw: object, expected: str) -> None:
    assert normalize_number(raw) == expected


@pytest.mark.parametrize("raw", [None, "", "abc", "3 + 5 = 8", "1,2345", "1/0", True])
def test_normalize_number_none_when_not_a_single_number(raw: object) -> None:
    assert normalize_number(raw) is None

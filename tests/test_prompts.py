"""Prompt templates: files load, render without brace clashes, fail loudly on bad input."""

from __future__ import annotations

import string

import pytest

from helpers.tasks.headlines import classification_messages
from helpers.tasks.math import math_messages
from helpers.tasks.word_problems import fewshot_exemplars
from helpers.teacher.prompts import list_prompts, load_prompt, render

OWN_TEMPLATES = ["math_system", "math_user", "reply_format", "classification_label_reply"]


def test_own_templates_are_listed_and_documented():
    names = list_prompts()
    assert "README" not in names
    for name in OWN_TEMPLATES:
        assert name in names
        template = load_prompt(name)
        assert template.description, f"{name} has no description in its header"
        assert not template.text.startswith("---"), "the header leaked into the body"
        declared = template.header.get("variables", [])
        assert sorted(declared) == sorted(template.variables), f"{name}: header variables out of date"
        assert string.Template(template.text).is_valid(), f"{name} has a stray '$'"


def test_every_prompt_file_loads():
    # align_* files (another module) have no header: they must still load.
    for name in list_prompts():
        assert load_prompt(name).text.strip()


def test_math_user_keeps_literal_braces_and_matches_evalscope():
    question = "Tom has {5} apples and $3. How many?"
    text = render("math_user", question=question)
    assert text == question + "\nPlease reason step by step, and put your final answer within \\boxed{}."
    from evalscope.benchmarks.gsm8k.gsm8k_adapter import PROMPT_TEMPLATE  # a declared dependency: must import

    assert text == PROMPT_TEMPLATE.format(question=question)


def test_render_refuses_missing_and_unknown_variables():
    with pytest.raises(ValueError, match="missing question"):
        render("math_user")
    with pytest.raises(ValueError, match="unknown questoin"):
        render("math_user", question="q", questoin="typo")
    with pytest.raises(FileNotFoundError, match="available"):
        load_prompt("no_such_prompt")


def test_stray_dollar_in_a_template_file_is_reported(tmp_path):
    (tmp_path / "bad.txt").write_text("---\ndescription: x\n---\nPay $5 for $item\n", encoding="utf-8")
    template = load_prompt("bad", directory=tmp_path)
    assert template.description == "x"
    with pytest.raises(ValueError, match=r"\$\$"):
        template.render(item="tea")


def test_header_without_closing_line_is_an_error(tmp_path):
    (tmp_path / "open.txt").write_text("---\ndescription: x\nbody\n", encoding="utf-8")
    with pytest.raises(ValueError, match="closing"):
        load_prompt("open", directory=tmp_path)


def test_math_messages_zero_shot_and_system_switch():
    msgs = math_messages("What is 2 + 3?")
    assert [m["role"] for m in msgs] == ["system", "user"]
    assert "<think>" in msgs[0]["content"] and "<answer>" in msgs[0]["content"]
    assert msgs[1]["content"].startswith("What is 2 + 3?\n")
    assert [m["role"] for m in math_messages("q", system=False)] == ["user"]
    with pytest.raises(ValueError):
        math_messages("   ")


def test_math_messages_rejects_broken_shots():
    with pytest.raises(ValueError, match="alternate"):
        math_messages("q", shots=[{"role": "assistant", "content": "x"}, {"role": "user", "content": "y"}])
    with pytest.raises(ValueError, match="alternate"):
        math_messages("q", shots=[{"role": "user", "content": "x"}])
    with pytest.raises(ValueError, match="role"):
        math_messages("q", shots=[{"role": "bot", "content": "x"}, {"role": "assistant", "content": "y"}])


def test_fewshot_exemplars_format():
    shots = fewshot_exemplars(3, seed=0, steps=1)
    assert [m["role"] for m in shots] == ["user", "assistant"] * 3
    for m in shots[1::2]:
        content = m["content"]
        assert content.startswith("<think>") and "</think>\n<answer>\\boxed{" in content
        assert content.endswith("}</answer>")
    msgs = math_messages("Q?", shots=shots)
    assert [m["role"] for m in msgs] == ["system"] + ["user", "assistant"] * 3 + ["user"]
    assert fewshot_exemplars(0) == []
    assert fewshot_exemplars(3, seed=5) == fewshot_exemplars(3, seed=5)
    assert fewshot_exemplars(3, seed=5) != fewshot_exemplars(3, seed=6)


def test_classification_messages():
    msgs = classification_messages("Team wins cup")
    assert [m["role"] for m in msgs] == ["system", "user", "assistant", "user"]
    assert "- sports: matches" in msgs[0]["content"]
    assert msgs[2]["content"].endswith("<answer>business</answer>") and "<think>" in msgs[2]["content"]
    assert msgs[-1]["content"].startswith("Headline: Team wins cup")
    assert [m["role"] for m in classification_messages("x", exemplar=False)] == ["system", "user"]
    zh = classification_messages("球队夺冠", lang="zh")
    assert zh[-1]["content"].startswith("标题：球队夺冠") and "标签" in zh[0]["content"]

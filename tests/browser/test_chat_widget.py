"""Notebook 05's chat (helpers.merge.chat.chat_view) in a real browser, with fake responders (no model)."""

from __future__ import annotations

import pytest
from jlab import Lab, missing_reason, write_notebook

if missing_reason():  # before importing selenium: without it the module is skipped, not an error
    pytest.skip(f"browser test: {missing_reason()}", allow_module_level=True)

from selenium.webdriver.common.by import By  # noqa: E402

pytestmark = pytest.mark.browser

SETUP = r'''
from helpers.merge.chat import chat_view

def teacher(question):
    return ("<think>\nTom has 3 apples and buys 9 more: 3 + 9 = 12.\n</think>\n\n"
            "Tom has 3 + 9 = 12 apples.\n\n\\boxed{12}")

def distilled(question):
    return "3 + 9 = 12, so the answer is \\boxed{12}."

def base(question):
    # a long unbroken token (a formula, a url) is what pushes a column sideways
    return "Let me see: " + "3+9=" * 40 + "12 so \\boxed{\\frac{24}{2}}"

view = chat_view({"base student": base, "distilled student": distilled, "teacher": teacher})
view
'''

QUESTION = "Tom has 3 apples and buys 9 more. How many apples does he have?"


def test_chat_asks_every_model_and_shows_the_boxed_answer(lab: Lab) -> None:
    write_notebook(lab.server.root / "chat.ipynb", [SETUP])
    lab.open_notebook("chat.ipynb")
    lab.run_all_cells()
    out = lab.output()
    box = lab.wait_for("textarea", root=out)
    lab.type_into(box, QUESTION)
    lab.shot("chat-1-question")
    lab.click("Ask all models", out)
    # every column answers (the fake responders are instant; the round trip is the kernel's)
    lab.wait(lambda _: all("answer:" in c.text for c in out.find_elements(By.CSS_SELECTOR, ".widget-html")[-3:])
             and len(out.find_elements(By.CSS_SELECTOR, ".widget-html")) >= 3, what="three replies")
    lab.shot("chat-2-replies")
    columns = out.find_elements(By.CSS_SELECTOR, ".widget-html")[-3:]
    texts = {c.text.splitlines()[0].split(" (")[0]: c.text for c in columns}
    assert set(texts) == {"base student", "distilled student", "teacher"}, texts
    assert "3 + 9 = 12" in texts["teacher"] and "Tom has 3 apples" in texts["teacher"]  # thinking shown
    assert "answer: 12" in texts["distilled student"] and "answer: 12" in texts["teacher"]

    # \boxed{} is rendered, not printed raw
    for name, text in texts.items():
        assert "\\boxed" not in text, f"{name}: raw \\boxed in the reply: {text!r}"
    boxed = [b.text for b in out.find_elements(By.CSS_SELECTOR, ".boxed-answer")]
    assert boxed.count("12") >= 2 and "\\frac{24}{2}" in boxed, boxed

    # labels not cut off, no sideways scrolling of the row of columns nor of the output
    assert not lab.overflowing(out, "button.widget-button"), lab.overflowing(out, "button.widget-button")
    row = out.find_elements(By.CSS_SELECTOR, ".widget-hbox")[-1]
    assert lab.scroll_overflow(row) <= 0, f"the chat row scrolls sideways by {lab.scroll_overflow(row)} px"
    assert not lab.overflowing(row, ".widget-html, .widget-html-content"), lab.overflowing(row, ".widget-html")
    area = out.find_element(By.CSS_SELECTOR, ".jp-OutputArea-output")
    assert lab.scroll_overflow(area) <= 0, f"the output scrolls sideways by {lab.scroll_overflow(area)} px"

    # the same in a narrow window: the columns shrink and wrap their text instead of scrolling
    with lab.window_width(820):
        lab.shot("chat-3-narrow")
        assert lab.scroll_overflow(row) <= 0, f"narrow: the chat row scrolls sideways by {lab.scroll_overflow(row)} px"
        assert lab.scroll_overflow(area) <= 0, f"narrow: the output scrolls sideways by {lab.scroll_overflow(area)} px"
        assert not lab.overflowing(out, "button.widget-button"), lab.overflowing(out, "button.widget-button")

    # the button is usable again (disabled only while the models answer)
    assert lab.button("Ask all models", out).is_enabled()

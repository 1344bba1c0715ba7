"""Notebook 03's review queue (helpers.curate.review_queue.ReviewQueue via start_review) in a real browser.

Buttons, the reason dropdown, the editor and the Keys box are used through the page;
every decision must be a new line in the JSONL log at once.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from jlab import REPO, Lab, missing_reason, write_notebook

if missing_reason():  # before importing selenium: without it the module is skipped, not an error
    pytest.skip(f"browser test: {missing_reason()}", allow_module_level=True)

from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import Select  # noqa: E402

pytestmark = pytest.mark.browser

HAS_QUEUE = (REPO / "helpers" / "curate" / "review_queue.py").is_file() or (
    importlib.util.find_spec("helpers.curate.review_queue") is not None)

SETUP = r'''
from pathlib import Path
from helpers.curate.review_queue import start_review

LOG = Path(LOG_PATH)

def row(i, thinking, answer):
    return {"prompt_id": f"p{i}", "sample_index": 0, "task": "word_problem", "status": "ok",
            "question": f"Tom has 3 apples and buys 5 more (row {i}). How many apples does he have?",
            "reference": "8", "meta": {"steps": 1},
            "reply": {"thinking": thinking, "answer": answer, "raw": f"<think>{thinking}</think>{answer}"},
            "verified": {"correct": answer == "\\boxed{8}", "prediction": answer[-2], "method": "math-verify",
                         "detail": ""}}

rows = [row(0, "3 + 5 = 8.", "\\boxed{8}"), row(1, "3 + 5 = 9.", "\\boxed{9}"),
        row(2, "3 and 5 make eight.", "\\boxed{8}")]
# start_review is what notebook 03 calls; this kernel is a real Jupyter one with a person (the test) at it
queue = start_review(rows, LOG, reviewer="browser-test")
'''

BUTTONS = ("Accept (a)", "Reject… (r)", "Edit… (e)", "◀ Back (b)", "Skip ▶ (n)")
EDITED = "<think>\n3 and 5 make 8.\n</think>\n\n\\boxed{8}"


def log_lines(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


needs_queue = pytest.mark.skipif(
    not HAS_QUEUE, reason="helpers/curate/review_queue.py (ReviewQueue) is not written yet; this will check that "
    "Accept / Reject with a reason / Edit / Back and the Keys box append decision lines to the review log, and "
    "that the queue's labels are not cut off")


def open_queue(lab: Lab, log: Path, name: str = "review.ipynb"):
    """A notebook that calls start_review on three rows, run; returns its output area."""
    write_notebook(lab.server.root / name, [SETUP.replace("LOG_PATH", repr(str(log)))])
    lab.open_notebook(name)
    lab.run_all_cells()
    return lab.output()


@needs_queue
def test_review_queue_decisions_go_to_the_log(lab: Lab, tmp_path: Path) -> None:
    log = tmp_path / "review_log.jsonl"
    out = open_queue(lab, log)
    assert "Human review skipped" not in out.text, out.text
    for label in BUTTONS:
        lab.button(label, out)
    progress = out.find_elements(By.CSS_SELECTOR, ".widget-html")[0]
    row_view = out.find_elements(By.CSS_SELECTOR, ".widget-html")[1]
    assert "0 / 3 reviewed" in progress.text and "browser-test" in progress.text
    assert "p0#0" in row_view.text and "row 1 of 3" in row_view.text
    lab.shot("review-1-opened")

    # labels not cut off, nothing scrolls sideways
    assert not lab.overflowing(out, "button.widget-button"), lab.overflowing(out, "button.widget-button")
    area = out.find_element(By.CSS_SELECTOR, ".jp-OutputArea-output")
    assert lab.scroll_overflow(area) <= 0, f"the output scrolls sideways by {lab.scroll_overflow(area)} px"

    # Accept: one line in the log, the next row is shown
    lab.click("Accept (a)", out)
    lab.wait(lambda _: len(log_lines(log)) == 1, what="the accept line in the log")
    assert log_lines(log)[0] | {"time": None} == {"id": "p0#0", "decision": "accept", "reason": None, "reply": None,
                                                  "reviewer": "browser-test", "time": None}
    lab.wait(lambda _: "p1#0" in row_view.text and "1 / 3 reviewed" in progress.text, what="row 2")
    assert "3 + 5 = 9." in row_view.text and "wrong" in row_view.text  # the reply and the verifier's verdict

    # Reject… shows the reason box; pick a reason, say why, Reject
    lab.click("Reject… (r)", out)
    reason = Select(lab.wait_for(".widget-dropdown select", root=out))
    reason.select_by_visible_text("Wrong answer")
    why = lab.wait_for("input[placeholder='what is wrong (optional)']", root=out)
    lab.type_into(why, "3+5 is not 9")
    lab.shot("review-2-rejecting")
    assert not lab.overflowing(out, "button.widget-button"), lab.overflowing(out, "button.widget-button")
    lab.click("Reject", out)
    lab.wait(lambda _: len(log_lines(log)) == 2, what="the reject line in the log")
    assert log_lines(log)[1]["id"] == "p1#0" and log_lines(log)[1]["decision"] == "reject"
    assert log_lines(log)[1]["reason"] == "wrong_answer: 3+5 is not 9"
    lab.wait(lambda _: "p2#0" in row_view.text and "1 rejected" in progress.text, what="row 3")

    # the Keys box: "e" opens the editor; Save edit logs the new reply
    keys = lab.wait_for("input[placeholder^='click here, then type']", root=out)
    keys.click()
    keys.send_keys("e")
    editor = lab.wait_for(".widget-textarea textarea", root=out)
    lab.wait(lambda _: "make eight" in editor.get_attribute("value"), what="the reply in the editor")
    lab.type_into(editor, EDITED)
    lab.shot("review-3-editing")
    lab.click("Save edit", out)
    lab.wait(lambda _: len(log_lines(log)) == 3, what="the edit line in the log")
    assert log_lines(log)[2]["decision"] == "edit" and log_lines(log)[2]["reply"] == EDITED
    lab.wait(lambda _: "All 3 rows have been seen" in row_view.text and "3 / 3 reviewed" in progress.text,
             what="the end of the queue")

    # change of mind through the keys: b (back to row 3, shown as edited), a (accept it after all)
    keys.click()
    keys.send_keys("b")
    lab.wait(lambda _: "p2#0" in row_view.text and "(edited)" in row_view.text, what="row 3 again, edited")
    keys.send_keys("a")
    lab.wait(lambda _: len(log_lines(log)) == 4, what="the changed decision in the log")
    assert [(d["id"], d["decision"]) for d in log_lines(log)] == [
        ("p0#0", "accept"), ("p1#0", "reject"), ("p2#0", "edit"), ("p2#0", "accept")]
    lab.wait(lambda _: "All 3 rows have been seen" in row_view.text, what="the end again")
    lab.shot("review-4-done")
    assert lab.scroll_overflow(area) <= 0, f"the output scrolls sideways by {lab.scroll_overflow(area)} px"


@needs_queue
def test_a_review_goes_on_where_it_stopped_after_the_kernel_is_gone(lab: Lab, tmp_path: Path) -> None:
    log = tmp_path / "review_log.jsonl"
    out = open_queue(lab, log, "review_restart.ipynb")
    progress, row_view = out.find_elements(By.CSS_SELECTOR, ".widget-html")[:2]
    lab.click("Accept (a)", out)
    lab.wait(lambda _: "p1#0" in row_view.text and len(log_lines(log)) == 1, what="row 2")
    lab.click("Accept (a)", out)
    lab.wait(lambda _: "p2#0" in row_view.text and len(log_lines(log)) == 2, what="row 3")
    lab.server.shutdown_kernels()  # as after a kernel restart, a crash or a closed laptop: only the log is left
    out = open_queue(lab, log, "review_restart.ipynb")  # the same cell, run again in a new kernel
    progress, row_view = out.find_elements(By.CSS_SELECTOR, ".widget-html")[:2]
    lab.wait(lambda _: "2 / 3 reviewed" in progress.text and "p2#0" in row_view.text,
             what="the queue to go on at row 3")
    lab.shot("review-6-after-restart")
    lab.click("Accept (a)", out)
    lab.wait(lambda _: len(log_lines(log)) == 3, what="the third decision")
    assert [d["id"] for d in log_lines(log)] == ["p0#0", "p1#0", "p2#0"], "nothing asked twice, nothing lost"


@needs_queue
def test_review_queue_fits_a_narrow_window(lab: Lab, tmp_path: Path) -> None:
    out = open_queue(lab, tmp_path / "review_log.jsonl", "review_narrow.ipynb")
    with lab.window_width(700):
        lab.click("Reject… (r)", out)
        lab.wait_for(".widget-dropdown select", root=out)
        lab.shot("review-5-narrow")
        assert not lab.overflowing(out, "button.widget-button"), lab.overflowing(out, "button.widget-button")
        area = out.find_element(By.CSS_SELECTOR, ".jp-OutputArea-output")
        assert lab.scroll_overflow(area) <= 0, f"the output scrolls sideways by {lab.scroll_overflow(area)} px"

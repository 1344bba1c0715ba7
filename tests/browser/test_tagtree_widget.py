"""Notebook 07's tag-tree editor (helpers.techniques.tagtree.tree_editor) in a real browser: edits saved to disk."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from jlab import Lab, missing_reason, write_notebook

if missing_reason():  # before importing selenium: without it the module is skipped, not an error
    pytest.skip(f"browser test: {missing_reason()}", allow_module_level=True)

from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import Select  # noqa: E402

pytestmark = pytest.mark.browser

SETUP = r'''
from pathlib import Path
from helpers.techniques.tagtree import TagTree, tree_editor

TREE_PATH = Path(TREE_FILE)
tree = TagTree.new("arithmetic")
tree.add("", "fractions", source="teacher")
tree.add("fractions", "halves", source="teacher")
tree.add("fractions", "quarters", source="teacher")
tree.add("", "percentages", source="teacher")
tree.save(TREE_PATH)
tree_editor(tree, on_change=lambda edited: edited.save(TREE_PATH))
'''

BUTTONS = ("Add under selected", "Rename selected", "Remove selected")


def saved(path: Path) -> dict:
    """``{full path: source}`` of every tag in the saved tree."""
    def walk(node: dict, prefix: tuple[str, ...]) -> dict:
        here = prefix + (node["name"],)
        out = {" > ".join(here): node["source"]}
        for child in node["children"]:
            out.update(walk(child, here))
        return out

    return walk(json.loads(path.read_text(encoding="utf-8"))["tree"], ())


def pick(lab: Lab, out, tag: str) -> None:
    """Select ``tag`` in the editor's list (options are indented by level; ``(added)`` marks a user's tag)."""
    select = Select(lab.wait_for(".widget-select select", root=out))
    labels = [o.get_attribute("textContent").strip().removesuffix("(added)").strip() for o in select.options]
    select.select_by_index(labels.index(tag))


def test_tree_editor_edits_are_shown_and_saved(lab: Lab, tmp_path: Path) -> None:
    tree_path = tmp_path / "tag_tree.json"
    write_notebook(lab.server.root / "tagtree.ipynb", [SETUP.replace("TREE_FILE", repr(str(tree_path)))])
    lab.open_notebook("tagtree.ipynb")
    lab.run_all_cells()
    out = lab.output()
    lab.wait_for(".widget-select select", root=out)
    for label in BUTTONS:
        lab.button(label, out)
    lab.shot("tagtree-1-opened")
    assert set(saved(tree_path)) == {"arithmetic", "arithmetic > fractions", "arithmetic > fractions > halves",
                                     "arithmetic > fractions > quarters", "arithmetic > percentages"}

    # labels not cut off ("Add under sele…"), nothing scrolls sideways
    assert not lab.overflowing(out, "button.widget-button"), lab.overflowing(out, "button.widget-button")
    area = out.find_element(By.CSS_SELECTOR, ".jp-OutputArea-output")
    assert lab.scroll_overflow(area) <= 0, f"the output scrolls sideways by {lab.scroll_overflow(area)} px"
    buttons_row = lab.button(BUTTONS[0], out).find_element(By.XPATH, "./ancestor::div[contains(@class, 'widget-hbox')][1]")
    assert lab.scroll_overflow(buttons_row) <= 0

    with lab.window_width(700):  # narrow: the buttons wrap to a second line, nothing is cut or scrolls
        lab.shot("tagtree-1b-narrow")
        assert not lab.overflowing(out, "button.widget-button"), lab.overflowing(out, "button.widget-button")
        assert lab.scroll_overflow(area) <= 0, f"narrow: the output scrolls sideways by {lab.scroll_overflow(area)} px"

    name = lab.wait_for(".widget-text input", root=out)
    status = out.find_elements(By.CSS_SELECTOR, ".widget-html")[-1]

    # add a tag under "fractions": the status says so, the list marks it, the file has it
    pick(lab, out, "fractions")
    lab.type_into(name, "thirds")
    lab.click("Add under selected", out)
    lab.wait(lambda _: "added 'arithmetic > fractions > thirds'" in status.text, what="the add message")
    assert "4 leaves now" in status.text, status.text
    lab.wait_for_file(tree_path, lambda _: "arithmetic > fractions > thirds" in saved(tree_path))
    assert saved(tree_path)["arithmetic > fractions > thirds"] == "user"
    chosen = Select(out.find_element(By.CSS_SELECTOR, ".widget-select select")).first_selected_option
    assert "thirds" in chosen.text and "(added)" in chosen.text
    lab.shot("tagtree-2-added")

    # rename
    pick(lab, out, "percentages")
    lab.type_into(name, "percent")
    lab.click("Rename selected", out)
    lab.wait(lambda _: "renamed to 'arithmetic > percent'" in status.text, what="the rename message")
    lab.wait_for_file(tree_path, lambda _: "arithmetic > percent" in saved(tree_path)
                      and "arithmetic > percentages" not in saved(tree_path))

    # remove a subtree
    pick(lab, out, "halves")
    lab.click("Remove selected", out)
    lab.wait(lambda _: "removed 'arithmetic > fractions > halves'" in status.text, what="the remove message")
    lab.wait_for_file(tree_path, lambda _: "arithmetic > fractions > halves" not in saved(tree_path))
    lab.shot("tagtree-3-renamed-removed")

    # a refused edit: the error is shown (in red) and the file is left as it was
    before = tree_path.read_text(encoding="utf-8")
    pick(lab, out, "fractions")
    lab.type_into(name, "Thirds")
    lab.click("Add under selected", out)
    lab.wait(lambda _: "already has a tag 'thirds'" in status.text, what="the error message")
    assert status.find_elements(By.CSS_SELECTOR, "span[style*='color']"), "the error is not coloured"
    assert tree_path.read_text(encoding="utf-8") == before
    lab.shot("tagtree-4-refused")
    assert set(saved(tree_path)) == {"arithmetic", "arithmetic > fractions", "arithmetic > fractions > quarters",
                                     "arithmetic > fractions > thirds", "arithmetic > percent"}

"""The tag tree of notebook 07: paths, edits, JSON round trip, broken files, plot and editor."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))


from helpers.techniques.tagtree import TagTree, split_path, tree_editor  # noqa: E402


def small_tree() -> TagTree:
    tree = TagTree.new("everyday arithmetic", levels=2)
    for branch, leaves in {"Fractions": ["Halves", "Thirds"], "Money": ["Change"]}.items():
        tree.add("", branch, source="teacher")
        for leaf in leaves:
            tree.add(branch, leaf, source="teacher")
    return tree


def test_tree_paths_prune_add_rename() -> None:
    tree = small_tree()
    assert tree.leaves() == [("everyday arithmetic", "Fractions", "Halves"),
                             ("everyday arithmetic", "Fractions", "Thirds"),
                             ("everyday arithmetic", "Money", "Change")]
    assert tree.depth() == 2 and len(tree) == 6
    removed = tree.prune("fractions/THIRDS")  # case-insensitive
    assert removed.name == "Thirds"
    assert tree.add("Fractions", "Quarters") == ("everyday arithmetic", "Fractions", "Quarters")
    assert tree.node("Fractions/Quarters").source == "user"
    # a full path copied from tree.leaves() / the table works too
    assert tree.resolve("everyday arithmetic > Money > Change") == ("everyday arithmetic", "Money", "Change")
    assert tree.add(["everyday arithmetic", "Money", "Change"], "Coins")[-1] == "Coins"
    assert tree.rename("Money", "Money and change") == ("everyday arithmetic", "Money and change")
    assert ("everyday arithmetic", "Money and change", "Change", "Coins") in tree.leaves()
    tree.prune("Money and change")
    assert tree.leaves() == [("everyday arithmetic", "Fractions", "Halves"),
                             ("everyday arithmetic", "Fractions", "Quarters")]
    assert "Quarters  (added)" in tree.render()
    assert list(tree.table()["leaf"]) == ["Halves", "Quarters"]


def test_tree_edit_errors_are_clear() -> None:
    tree = small_tree()
    with pytest.raises(KeyError, match="no tag 'Fifths' under 'everyday arithmetic > Fractions'.*Halves"):
        tree.prune("Fractions/Fifths")
    with pytest.raises(ValueError, match="root"):
        tree.prune("")
    with pytest.raises(ValueError, match="already has a tag 'Halves'"):
        tree.add("Fractions", "halves")
    with pytest.raises(ValueError, match="cannot contain '/'"):
        tree.add("Fractions", "halves/quarters")
    with pytest.raises(ValueError, match="non-empty"):
        tree.add("", "  ")
    with pytest.raises(ValueError, match="already has a tag 'Money'"):
        tree.rename("Fractions", "money")
    assert split_path("a / b > c") == ["a", "b", "c"]
    with pytest.raises(TypeError):
        split_path(3)  # type: ignore[arg-type]


def test_tree_json_round_trip(tmp_path: Path) -> None:
    tree = small_tree()
    tree.add("Money", "Coins")
    path = tree.save(tmp_path / "sub" / "tree.json")
    loaded = TagTree.load(path)
    assert loaded.to_dict() == tree.to_dict()
    assert loaded.leaves() == tree.leaves()
    assert loaded.meta == {"levels": 2}
    assert loaded.node("Money/Coins").source == "user"
    # the file is plain JSON a person can edit by hand
    data = json.loads(path.read_text(encoding="utf-8"))
    data["tree"]["children"][0]["children"].append({"name": "Fifths"})
    path.write_text(json.dumps(data), encoding="utf-8")
    assert ("everyday arithmetic", "Fractions", "Fifths") in TagTree.load(path).leaves()


def test_tree_load_refuses_broken_files(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        TagTree.load(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json", encoding="utf-8")
    with pytest.raises(ValueError, match="not valid JSON"):
        TagTree.load(bad)
    bad.write_text(json.dumps({"tree": {"name": "a", "children": [{"name": "b"}, {"name": "B"}]}}))
    with pytest.raises(ValueError, match="two children named"):
        TagTree.load(bad)
    bad.write_text(json.dumps({"tree": {"name": "a", "children": [{"name": "x", "source": "robot"}]}}))
    with pytest.raises(ValueError, match="source"):
        TagTree.load(bad)


def test_tree_plot_and_editor() -> None:
    import matplotlib
    import matplotlib.pyplot

    matplotlib.use("Agg")
    tree = small_tree()
    tree.add("", "Time")
    ax = tree.plot()
    labels = {t.get_text() for t in ax.texts}
    assert {"everyday arithmetic", "Fractions", "Halves", "Thirds", "Money", "Change", "Time"} <= labels
    matplotlib.pyplot.close(ax.figure)

    saved: list[int] = []
    editor = tree_editor(tree, on_change=lambda t: saved.append(len(t.leaves())))
    picker, name, buttons, status = editor.children
    add, rename, remove = buttons.children
    picker.value = ("everyday arithmetic", "Money")
    name.value = "Coins"
    add.click()
    assert tree.node("Money/Coins").source == "user"
    picker.value = ("everyday arithmetic", "Fractions", "Thirds")
    remove.click()
    assert ("everyday arithmetic", "Fractions", "Thirds") not in tree.leaves()
    name.value = "Halves"  # already there: refused with a message, tree unchanged
    picker.value = ("everyday arithmetic", "Fractions")
    add.click()
    assert "already has a tag" in status.value
    assert saved == [5, 4]

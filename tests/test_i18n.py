"""The Chinese notebooks are generated from the English ones and must not drift."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
import yaml

from helpers.course import i18n


def _notebook(path: Path, markdown: list[str]) -> Path:
    nb = nbformat.v4.new_notebook()
    for i, text in enumerate(markdown):
        nb.cells.append(nbformat.v4.new_markdown_cell(text, id=f"m{i}"))
        nb.cells.append(nbformat.v4.new_code_cell(f"x = {i}", id=f"k{i}"))
    nbformat.write(nb, path)
    return path


@pytest.fixture
def course(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(i18n, "I18N_DIR", tmp_path / "i18n")
    return _notebook(tmp_path / "01_demo.ipynb", ["# Title", "Some teaching text."])


def test_translation_is_used_and_code_is_untouched(course: Path) -> None:
    i18n.stub("zh-CN", [course])
    table = i18n.load_translations(course, "zh-CN")
    assert set(table) == {"m0", "m1"} and all(v["text"].startswith(i18n.UNTRANSLATED_MARK) for v in table.values())
    assert [s.missing for s in i18n.check("zh-CN", [course])] == [["m0", "m1"]]

    table["m0"]["text"] = "# 标题"
    i18n.translation_path(course, "zh-CN").write_text(yaml.safe_dump(table, allow_unicode=True))
    status = i18n.check("zh-CN", [course])[0]
    assert status.translated == 1 and status.missing == ["m1"] and not status.ok

    built = i18n.render(course, "zh-CN")
    assert [c.source for c in built.cells] == ["# 标题", "x = 0", "Some teaching text.", "x = 1"]
    assert built.metadata["language_edition"]["generated_from"] == "01_demo.ipynb"


def test_a_changed_english_cell_makes_its_translation_stale(course: Path) -> None:
    path = i18n.translation_path(course, "zh-CN")
    path.parent.mkdir(parents=True)
    path.write_text(yaml.safe_dump({
        "m0": {"source_sha": i18n.source_sha("# Title"), "text": "# 标题"},
        "m1": {"source_sha": i18n.source_sha("Some teaching text."), "text": "一些教学文字。"},
    }, allow_unicode=True))
    assert i18n.check("zh-CN", [course])[0].ok

    nb = nbformat.read(course, as_version=4)
    nb.cells[2].source = "Some NEW teaching text."
    nbformat.write(nb, course)
    status = i18n.check("zh-CN", [course])[0]
    assert status.stale == ["m1"] and not status.ok
    # the outdated translation is not shown: the reader gets the current English text
    assert i18n.render(course, "zh-CN").cells[2].source == "Some NEW teaching text."


def test_orphaned_translations_are_reported(course: Path) -> None:
    path = i18n.translation_path(course, "zh-CN")
    path.parent.mkdir(parents=True)
    path.write_text(yaml.safe_dump({"gone": {"source_sha": "00000000", "text": "旧"}}, allow_unicode=True))
    assert i18n.check("zh-CN", [course])[0].orphaned == ["gone"]


@pytest.mark.parametrize("notebook", i18n.source_notebooks(), ids=lambda p: p.name)
def test_committed_chinese_notebooks_are_complete_and_up_to_date(notebook: Path) -> None:
    status = i18n.check("zh-CN", [notebook])[0]
    assert status.ok, (f"{notebook.name}: translations missing {status.missing} / stale {status.stale}; "
                       "run `python -m helpers i18n stub zh-CN`, translate, then `python -m helpers i18n build zh-CN`")
    built = i18n.built_path(notebook, "zh-CN")
    assert built.is_file(), f"{built} is missing: run `python -m helpers i18n build zh-CN`"
    on_disk = nbformat.read(built, as_version=4)
    fresh = i18n.render(notebook, "zh-CN")
    assert [(c.cell_type, c.source) for c in on_disk.cells] == [(c.cell_type, c.source) for c in fresh.cells], \
        f"{built} is out of date: run `python -m helpers i18n build zh-CN`"


def test_links_are_rewritten_for_the_edition_folder() -> None:
    text = "[sol](solutions/01_x.ipynb), [next](02_generate_data.ipynb), [web](https://a.b), [top](#t), [r](../README.md)"
    assert i18n.relink(text) == ("[sol](../solutions/01_x.ipynb), [next](02_generate_data.ipynb), [web](https://a.b), "
                                 "[top](#t), [r](../../README.md)")

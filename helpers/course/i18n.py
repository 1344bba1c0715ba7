"""Chinese (and other) editions of the notebooks, generated from ONE source.

A translation is a YAML file per notebook, ``notebooks/i18n/<lang>/<stem>.yaml``,
mapping a markdown cell's id to its text and a short hash of the English text it was
translated from. :func:`build` writes ``notebooks/<lang>/<notebook>.ipynb``: the English
notebook with each translated markdown cell swapped in; code cells are copied, so both
editions run the same code. When an English cell changes, :func:`check` reports its
translation as *stale* and the build keeps the English text there. The tests compare
every built notebook with a fresh build, so the editions cannot drift apart.

Command line: ``python -m helpers i18n status|stub|build zh-CN``.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
import yaml

from ..core.config import REPO_ROOT

NOTEBOOKS_DIR = REPO_ROOT / "notebooks"
I18N_DIR = NOTEBOOKS_DIR / "i18n"
LANGUAGES = ("zh-CN",)
UNTRANSLATED_MARK = "TODO-TRANSLATE"
"""Placeholder prefix written by :func:`stub`; such entries count as missing."""


def source_sha(text: str) -> str:
    """A short, stable fingerprint of an English markdown cell."""
    return hashlib.sha256(text.strip().encode("utf-8")).hexdigest()[:8]


def source_notebooks(folder: Path = NOTEBOOKS_DIR) -> list[Path]:
    """The English notebooks (numbered ``NN_*.ipynb`` at the top of ``notebooks/``)."""
    return sorted(p for p in folder.glob("[0-9][0-9]_*.ipynb"))


def translation_path(notebook: Path, lang: str) -> Path:
    return I18N_DIR / lang / f"{notebook.stem}.yaml"


def built_path(notebook: Path, lang: str) -> Path:
    return notebook.parent / lang / notebook.name


def load_translations(notebook: Path, lang: str) -> dict[str, dict[str, str]]:
    """``{cell id: {"source_sha": ..., "text": ...}}`` (empty when there is no file yet)."""
    path = translation_path(notebook, lang)
    if not path.is_file():
        return {}
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of cell id -> {{source_sha, text}}.")
    return data


@dataclass
class Status:
    """How complete one notebook's translation is."""

    notebook: str
    translated: int = 0
    missing: list[str] = field(default_factory=list)
    stale: list[str] = field(default_factory=list)
    orphaned: list[str] = field(default_factory=list)
    """Translated ids that no longer exist in the English notebook."""

    @property
    def ok(self) -> bool:
        return not (self.missing or self.stale)


def _markdown_cells(nb: nbformat.NotebookNode) -> list[nbformat.NotebookNode]:
    cells = [c for c in nb.cells if c.cell_type == "markdown"]
    if any("id" not in c for c in cells):
        raise ValueError("every markdown cell needs an id (nbformat >= 4.5); re-save the notebook with Jupyter.")
    return cells


def _usable(entry: dict[str, str] | None, english: str) -> bool:
    return bool(entry) and entry.get("source_sha") == source_sha(english) and \
        not str(entry.get("text", "")).startswith(UNTRANSLATED_MARK)


def check(lang: str, notebooks: list[Path] | None = None) -> list[Status]:
    """Missing, stale and orphaned translations per notebook."""
    result = []
    for path in notebooks or source_notebooks():
        nb = nbformat.read(path, as_version=4)
        table = load_translations(path, lang)
        status = Status(path.name)
        ids = set()
        for cell in _markdown_cells(nb):
            ids.add(cell.id)
            entry = table.get(cell.id)
            if _usable(entry, cell.source):
                status.translated += 1
            elif entry and entry.get("source_sha") != source_sha(cell.source):
                status.stale.append(cell.id)
            else:
                status.missing.append(cell.id)
        status.orphaned = sorted(set(table) - ids)
        result.append(status)
    return result


_LINK_RE = re.compile(r"\]\((?!https?:|mailto:|#|/)([^)\s]+)\)")
_CHAPTER_RE = re.compile(r"^[0-9][0-9]_[^/]*\.ipynb(#.*)?$")


def relink(markdown: str) -> str:
    """Point relative links one folder up, since an edition lives in ``notebooks/<lang>/``.

    Links to another chapter stay as they are: that chapter's edition sits beside this one.
    """
    return _LINK_RE.sub(lambda m: m.group(0) if _CHAPTER_RE.match(m.group(1)) else f"](../{m.group(1)})", markdown)


def render(notebook: Path, lang: str) -> nbformat.NotebookNode:
    """The ``lang`` edition of ``notebook`` (English text where no usable translation exists)."""
    nb = nbformat.read(notebook, as_version=4)
    table = load_translations(notebook, lang)
    for cell in _markdown_cells(nb):
        entry = table.get(cell.id)
        if _usable(entry, cell.source):
            cell.source = str(entry["text"]).rstrip("\n")
        cell.source = relink(cell.source)
    for cell in nb.cells:  # a built edition is a lesson, never a record of someone's run
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    nb.metadata["language_edition"] = {"lang": lang, "generated_from": notebook.name,
                                       "note": f"generated by `python -m helpers i18n build {lang}`; edit "
                                               f"notebooks/i18n/{lang}/{notebook.stem}.yaml, not this file"}
    return nb


def build(lang: str, notebooks: list[Path] | None = None) -> list[Path]:
    """Write ``notebooks/<lang>/*.ipynb`` for every source notebook; returns the paths written."""
    written = []
    for path in notebooks or source_notebooks():
        out = built_path(path, lang)
        out.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(render(path, lang), out)
        written.append(out)
    return written


def stub(lang: str, notebooks: list[Path] | None = None) -> list[Path]:
    """Add a placeholder entry (English text, marked) for every missing or stale cell.

    Existing good translations are kept; stale ones keep their old text under the
    new hash with the placeholder mark, so a translator sees what to revisit.
    """
    written = []
    for path in notebooks or source_notebooks():
        nb = nbformat.read(path, as_version=4)
        table = load_translations(path, lang)
        changed = False
        for cell in _markdown_cells(nb):
            entry = table.get(cell.id)
            if _usable(entry, cell.source):
                continue
            table[cell.id] = {"source_sha": source_sha(cell.source),
                              "text": f"{UNTRANSLATED_MARK}\n{cell.source}"}
            changed = True
        if changed or not translation_path(path, lang).is_file():
            out = translation_path(path, lang)
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(yaml.safe_dump(table, allow_unicode=True, sort_keys=False, width=10_000),
                           encoding="utf-8")
            written.append(out)
    return written


def cli_main(argv: list[str]) -> int:
    """``python -m helpers i18n {status,stub,build} [lang]``."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m helpers i18n", description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=["status", "stub", "build"])
    parser.add_argument("lang", nargs="?", default="zh-CN", choices=LANGUAGES)
    args = parser.parse_args(argv)
    if args.action == "build":
        for p in build(args.lang):
            print(f"wrote {p.relative_to(REPO_ROOT)}")
        return 0
    if args.action == "stub":
        for p in stub(args.lang):
            print(f"updated {p.relative_to(REPO_ROOT)}")
        return 0
    statuses = check(args.lang)
    for s in statuses:
        flag = "ok" if s.ok else "TODO"
        print(f"{flag:4} {s.notebook}: {s.translated} translated, missing {s.missing or '-'}, "
              f"stale {s.stale or '-'}" + (f", orphaned {s.orphaned}" if s.orphaned else ""))
    return 0 if all(s.ok for s in statuses) else 1

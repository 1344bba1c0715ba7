"""The package layout the README promises: stages in pipeline order, each importing only core and earlier stages.

A stage (``helpers/<stage>/``) may import ``helpers.core`` and the stages before it,
never a later one; ``core`` imports nothing of ours; there is no import cycle;
no module is over 600 lines; no private name is imported from another module;
and JSONL lines are parsed in one place only (``helpers/core/jsonl.py``).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "helpers"
ORDER = ["core", "models", "teacher", "tasks", "curate", "train", "merge", "evaluate", "techniques", "course"]
"""The pipeline order: a stage may import the stages at or before its own position."""

MAX_LINES = 600


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _imports(name: str, path: Path, module_level_only: bool = False) -> list[tuple[str, list[str], int]]:
    """``(imported module, names, line)`` for every import of a helpers module in ``path``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    nodes = tree.body if module_level_only else list(ast.walk(tree))
    found = []
    for node in nodes:
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            names = [a.name for a in node.names]
            # "from helpers.teacher import engine" imports a module, not a name
            if f"{target}.{names[0]}" in MODULES:
                found += [(f"{target}.{n}", [], node.lineno) for n in names]
            else:
                found.append((target, names, node.lineno))
        elif isinstance(node, ast.Import):
            found += [(a.name, [], node.lineno) for a in node.names]
    return [(t, n, line) for t, n, line in found if t == "helpers" or t.startswith("helpers.")]


def _stage(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in ORDER else None


def test_every_subpackage_is_a_known_stage() -> None:
    packages = sorted(p.name for p in ROOT.iterdir() if (p / "__init__.py").is_file())
    assert packages == sorted(ORDER), f"add a new stage to ORDER (and the README) in pipeline order: {packages}"
    loose = sorted(p.name for p in ROOT.glob("*.py") if p.name not in ("__init__.py", "__main__.py"))
    assert not loose, f"modules belong in a stage subpackage: {loose}"


@pytest.mark.parametrize("name", sorted(MODULES))
def test_a_stage_imports_only_core_and_earlier_stages(name: str) -> None:
    stage = _stage(name)
    if stage is None:  # helpers/__init__.py and __main__.py sit on top of everything
        return
    rank = ORDER.index(stage)
    for target, _, line in _imports(name, MODULES[name]):
        other = _stage(target)
        assert other is not None, f"{name}:{line} imports the top-level package {target}"
        if stage == "core":
            assert other == "core", f"{name}:{line}: core imports nothing of ours, but imports {target}"
        assert ORDER.index(other) <= rank, (
            f"{name}:{line} imports {target}: stage {stage!r} may import only {ORDER[:rank + 1]}")


def test_no_import_cycles() -> None:
    graph = {name: {t for t, _, _ in _imports(name, path, module_level_only=True) if t in MODULES and t != name}
             for name, path in MODULES.items()}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in graph[node]:
            if state.get(nxt) == 1:
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(nxt):] + [nxt]))
            if not state.get(nxt):
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in graph:
        if not state.get(node):
            visit(node)


@pytest.mark.parametrize("name", sorted(MODULES))
def test_modules_are_small_and_say_what_they_are_for(name: str) -> None:
    text = MODULES[name].read_text(encoding="utf-8")
    lines = len(text.splitlines())
    assert lines <= MAX_LINES, f"{MODULES[name]} has {lines} lines (at most {MAX_LINES}): split it"
    doc = ast.get_docstring(ast.parse(text))
    assert doc, f"{MODULES[name]} needs a docstring saying what it is for"
    assert len(doc.splitlines()) <= 25, f"{MODULES[name]}: keep the docstring to what and why (measurements: bench/)"


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_private_names_across_modules(name: str) -> None:
    for target, names, line in _imports(name, MODULES[name]):
        private = [n for n in names if n.startswith("_")]
        assert not private, f"{name}:{line} imports private {private} from {target}: make it public or move it"


def test_jsonl_lines_are_parsed_in_one_place() -> None:
    readers = {name for name, path in MODULES.items()
               if re.search(r"json\.loads\(\s*line", path.read_text(encoding="utf-8"))}
    assert readers <= {"helpers.core.jsonl"}, f"read JSONL with helpers.core.jsonl, not by hand: {sorted(readers)}"


def test_the_layout_test_fails_on_a_violation(tmp_path: Path) -> None:
    """The checks above can fail: a core module importing a later stage is caught."""
    bad = tmp_path / "helpers" / "core" / "bad.py"
    bad.parent.mkdir(parents=True)
    bad.write_text('"""x"""\nfrom ..teacher.engine import generate\n', encoding="utf-8")
    (imported, _, _), = _imports("helpers.core.bad", bad)
    assert imported == "helpers.teacher.engine" and ORDER.index(_stage(imported)) > ORDER.index("core")

"""A tag tree for a domain: topic -> subtopics -> ... -> leaf tags, editable and saved as JSON.

When a user has a topic but no questions, the teacher first breaks the topic
down into a tree of tags (see :func:`helpers.techniques.domain.build_tree`); questions are
then written for every **leaf**, with the leaf's full path (root > ... > leaf)
in the prompt. The tree is the plan of the dataset, so a person should read it
and fix it *before* any question is generated: this module is that plan as a
small data structure.

* :class:`TagTree` holds :class:`TagNode` objects; ``tree.leaves()`` lists the
  full paths, ``tree.table()`` shows them as a DataFrame.
* Editing: ``tree.prune("fractions/halves")`` removes a subtree,
  ``tree.add("fractions", "thirds")`` adds a tag (which becomes a leaf),
  ``tree.rename(...)``. A path is relative to the root, segments separated by
  ``/``; a path that starts with the root's own name is accepted too, so a
  path copied from ``tree.leaves()`` works. Names match case-insensitively.
* ``tree.save(path)`` / ``TagTree.load(path)``: a plain JSON file a person can
  also edit by hand.
* Showing it: ``tree.render()`` (text), ``tree.plot()`` (matplotlib) and
  :func:`tree_editor` (an ipywidgets editor for Jupyter; building it never
  blocks, so a headless run passes straight through).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from ..core.text import normalise_text

PATH_SEP = "/"
"""Separates the tags of a path given as text: ``"fractions/halves"``."""
SHOW_SEP = " > "
"""How a full path is shown to people and to the teacher: ``"arithmetic > fractions > halves"``."""
SOURCES: tuple[str, ...] = ("root", "teacher", "user")
"""Where a tag came from: the root topic, the teacher, or a person editing the tree."""

PathLike = str | Sequence[str]


@dataclass
class TagNode:
    """One tag and its children. ``source`` says who added it (see :data:`SOURCES`)."""

    name: str
    children: list["TagNode"] = field(default_factory=list)
    source: str = "teacher"

    def child(self, name: str) -> "TagNode | None":
        """The child whose name matches ``name`` (case and punctuation ignored), if any."""
        key = _key(name)
        return next((c for c in self.children if _key(c.name) == key), None)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "source": self.source,
                "children": [c.to_dict() for c in self.children]}

    @classmethod
    def from_dict(cls, data: Any, where: str = "root") -> "TagNode":
        if not isinstance(data, dict) or not isinstance(data.get("name"), str):
            raise ValueError(f"tree node at {where} must be an object with a string 'name'")
        children = data.get("children", [])
        if not isinstance(children, list):
            raise ValueError(f"'children' of {where} must be a list")
        source = data.get("source", "teacher")
        if source not in SOURCES:
            raise ValueError(f"'source' of {where} is {source!r}, expected one of {SOURCES}")
        name = check_tag(data["name"])
        node = cls(name, [], source)
        for child in children:
            sub = cls.from_dict(child, f"{where}{SHOW_SEP}{child.get('name') if isinstance(child, dict) else '?'}")
            if node.child(sub.name) is not None:
                raise ValueError(f"{where} has two children named {sub.name!r}")
            node.children.append(sub)
        return node


def _key(name: str) -> str:
    return normalise_text(name)


def check_tag(name: Any) -> str:
    """A clean tag name (spaces collapsed); ``ValueError`` for an empty name or one with ``/`` or ``>``."""
    if not isinstance(name, str) or not normalise_text(name):
        raise ValueError(f"a tag must be a non-empty name with letters or digits, got {name!r}")
    for sep in (PATH_SEP, SHOW_SEP.strip()):
        if sep in name:
            raise ValueError(f"a tag cannot contain {sep!r} (it separates the tags of a path): {name!r}")
    return " ".join(name.split())


def show_path(path: Sequence[str]) -> str:
    """``("a", "b", "c")`` -> ``"a > b > c"``: a full path as people and prompts read it."""
    return SHOW_SEP.join(path)


@dataclass
class TagTree:
    """A root topic and its tree of tags; ``meta`` records how it was built (levels, model...)."""

    root: TagNode
    meta: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def new(cls, topic: str, **meta: Any) -> "TagTree":
        """A tree that is only its root topic."""
        return cls(TagNode(check_tag(topic), [], "root"), dict(meta))

    # ------------------------------------------------------------------ reading
    @property
    def topic(self) -> str:
        return self.root.name

    def walk(self) -> Iterator[tuple[tuple[str, ...], TagNode]]:
        """Every ``(full path, node)``, depth first, the root first (its path is ``(topic,)``)."""
        stack: list[tuple[tuple[str, ...], TagNode]] = [((self.root.name,), self.root)]
        while stack:
            path, node = stack.pop()
            yield path, node
            stack.extend((path + (c.name,), c) for c in reversed(node.children))

    def leaves(self) -> list[tuple[str, ...]]:
        """Full paths (root first) of the nodes without children, in tree order.

        A tree that is only a root has one leaf: the root itself.
        """
        return [path for path, node in self.walk() if not node.children]

    def depth(self) -> int:
        """Levels below the root (0 for a bare root)."""
        return max(len(path) for path, _ in self.walk()) - 1

    def __len__(self) -> int:
        """Number of tags, the root included."""
        return sum(1 for _ in self.walk())

    def resolve(self, path: PathLike) -> tuple[str, ...]:
        """The full path (root first, names as stored) of the node at ``path``; ``KeyError`` if absent.

        ``path`` is relative to the root (``"fractions/halves"`` or
        ``["fractions", "halves"]``); ``""`` or ``[]`` is the root. A path that
        starts with the root's own name is taken as a full path.
        """
        parts = split_path(path)
        if parts and _key(parts[0]) == _key(self.root.name) and self.root.child(parts[0]) is None:
            parts = parts[1:]
        node, names = self.root, [self.root.name]
        for depth, part in enumerate(parts):
            found = node.child(part)
            if found is None:
                options = ", ".join(repr(c.name) for c in node.children) or "none (it is a leaf)"
                where = show_path(names)
                raise KeyError(f"no tag {part!r} under {where!r} (level {depth + 1}); its tags: {options}")
            node = found
            names.append(node.name)
        return tuple(names)

    def node(self, path: PathLike) -> TagNode:
        """The node at ``path`` (see :meth:`resolve`)."""
        node = self.root
        for name in self.resolve(path)[1:]:
            node = node.child(name)  # type: ignore[assignment]
        return node

    # ------------------------------------------------------------------ editing
    def add(self, path: PathLike, tag: str, *, source: str = "user") -> tuple[str, ...]:
        """Add ``tag`` under the node at ``path`` (``""`` for the root); returns its full path.

        Refuses a tag that already exists there (names compared case-insensitively).
        """
        parent = self.node(path)
        name = check_tag(tag)
        if source not in SOURCES:
            raise ValueError(f"source must be one of {SOURCES}, got {source!r}")
        existing = parent.child(name)
        if existing is not None:
            raise ValueError(f"{show_path(self.resolve(path))!r} already has a tag {existing.name!r}")
        parent.children.append(TagNode(name, [], source))
        return self.resolve(path) + (name,)

    def prune(self, path: PathLike) -> TagNode:
        """Remove the node at ``path`` and everything below it; returns the removed node."""
        full = self.resolve(path)
        if len(full) == 1:
            raise ValueError("cannot prune the root topic; start a new tree with TagTree.new(...) instead")
        parent = self.node(full[1:-1])
        removed = parent.child(full[-1])
        parent.children.remove(removed)  # type: ignore[arg-type]
        return removed  # type: ignore[return-value]

    def rename(self, path: PathLike, new_name: str) -> tuple[str, ...]:
        """Rename the node at ``path``; returns its new full path."""
        full = self.resolve(path)
        name = check_tag(new_name)
        node = self.node(full)
        if len(full) > 1:
            sibling = self.node(full[1:-1]).child(name)
            if sibling is not None and sibling is not node:
                raise ValueError(f"{show_path(full[:-1])!r} already has a tag {sibling.name!r}")
        node.name = name
        return full[:-1] + (name,)

    # ------------------------------------------------------------------ saving
    def to_dict(self) -> dict[str, Any]:
        return {"meta": self.meta, "tree": self.root.to_dict()}

    @classmethod
    def from_dict(cls, data: Any) -> "TagTree":
        if not isinstance(data, dict) or "tree" not in data:
            raise ValueError("a saved tag tree is an object with 'tree' (and optional 'meta')")
        meta = data.get("meta") or {}
        if not isinstance(meta, dict):
            raise ValueError("'meta' of a saved tag tree must be an object")
        root = TagNode.from_dict(data["tree"])
        root.source = "root"
        return cls(root, dict(meta))

    def save(self, path: str | Path) -> Path:
        """Write the tree as indented JSON (readable and editable by hand)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> "TagTree":
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no saved tag tree at {path}")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path} is not valid JSON: {exc.msg} (line {exc.lineno})") from None
        try:
            return cls.from_dict(data)
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from None

    # ------------------------------------------------------------------ showing
    def render(self) -> str:
        """The tree as indented text; tags a person added are marked ``(added)``."""
        lines = [self.root.name]

        def draw(node: TagNode, prefix: str) -> None:
            for i, child in enumerate(node.children):
                last = i == len(node.children) - 1
                mark = "  (added)" if child.source == "user" else ""
                lines.append(prefix + ("└── " if last else "├── ") + child.name + mark)
                draw(child, prefix + ("    " if last else "│   "))

        draw(self.root, "")
        return "\n".join(lines)

    def table(self) -> pd.DataFrame:
        """One row per leaf: its level, its full path, and who added it."""
        records = []
        for path, node in self.walk():
            if not node.children:
                records.append({"leaf": node.name, "level": len(path) - 1, "path": show_path(path),
                                "source": node.source})
        return pd.DataFrame(records, columns=["leaf", "level", "path", "source"])

    def plot(self, ax: Any = None, title: str | None = None) -> Any:
        """Draw the tree left to right: the root on the left, one row per leaf."""
        import matplotlib.pyplot as plt

        leaves = self.leaves()
        if ax is None:
            _, ax = plt.subplots(figsize=(3.2 * (self.depth() + 1) + 1, max(2.5, 0.42 * len(leaves) + 1)))
        positions: dict[tuple[str, ...], tuple[float, float]] = {}
        leaf_rows = {path: float(len(leaves) - 1 - i) for i, path in enumerate(leaves)}

        def place(path: tuple[str, ...], node: TagNode) -> float:
            if node.children:
                y = sum(place(path + (c.name,), c) for c in node.children) / len(node.children)
            else:
                y = leaf_rows[path]
            positions[path] = (float(len(path) - 1), y)
            return y

        place((self.root.name,), self.root)
        colours = {"root": "#4c72b0", "teacher": "#dd8452", "user": "#55a868"}
        for path, node in self.walk():
            x, y = positions[path]
            for c in node.children:
                cx, cy = positions[path + (c.name,)]
                mid = x + 0.5
                ax.plot([x, mid, mid, cx], [y, y, cy, cy], color="#999999", linewidth=1, zorder=1)
        for path, node in self.walk():
            x, y = positions[path]
            ax.text(x, y, node.name, ha="center", va="center", fontsize=9, zorder=2,
                    bbox={"boxstyle": "round,pad=0.3", "facecolor": "white",
                          "edgecolor": colours.get(node.source, "black"), "linewidth": 1.5})
        from matplotlib.lines import Line2D

        ax.legend(handles=[Line2D([], [], marker="s", linestyle="", markerfacecolor="white",
                                  markeredgecolor=colour, markersize=10, label=label)
                           for label, colour in (("root topic", colours["root"]),
                                                 ("from the teacher", colours["teacher"]),
                                                 ("added by you", colours["user"]))],
                  loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False, fontsize=8)
        ax.set_xlim(-0.7, self.depth() + 0.7)
        ax.set_ylim(-0.8, len(leaves) - 0.2)
        ax.axis("off")
        ax.set_title(title or f"Tag tree of {self.topic!r}: {len(leaves)} leaves, {self.depth()} levels")
        return ax


def split_path(path: PathLike) -> list[str]:
    """``"a/b"``, ``"a / b"``, ``"a > b"`` or ``["a", "b"]`` -> ``["a", "b"]``."""
    if isinstance(path, str):
        text = path.replace(SHOW_SEP.strip(), PATH_SEP)
        return [p.strip() for p in text.split(PATH_SEP) if p.strip()]
    if isinstance(path, Sequence):
        parts = [str(p).strip() for p in path]
        if any(not p for p in parts):
            raise ValueError(f"a path cannot contain empty tags: {list(path)!r}")
        return parts
    raise TypeError(f"a path is a string like 'a/b' or a list of tags, got {type(path).__name__}")


def tree_editor(tree: TagTree, on_change: Any = None) -> Any:
    """An ipywidgets editor: pick a tag, then remove it, rename it, or add a tag under it.

    Edits change ``tree`` in place (``on_change(tree)`` is called after each one,
    e.g. to save it). Building the widget runs nothing and waits for nothing, so
    a notebook executed headless goes straight on with the tree as it is.
    """
    import ipywidgets as widgets

    picker = widgets.Select(rows=min(14, max(4, len(tree))), layout=widgets.Layout(width="60%"))
    name = widgets.Text(placeholder="tag name", layout=widgets.Layout(width="60%"))
    # width "auto": ipywidgets' fixed button width (148px) cut these labels off ("Add under sele…")
    fit = {"width": "auto", "min_width": "148px"}
    add = widgets.Button(description="Add under selected", icon="plus", layout=widgets.Layout(**fit))
    rename = widgets.Button(description="Rename selected", icon="pencil", layout=widgets.Layout(**fit))
    remove = widgets.Button(description="Remove selected", icon="trash", button_style="danger",
                            layout=widgets.Layout(**fit))
    status = widgets.HTML()

    def refresh(select: tuple[str, ...] | None = None) -> None:
        options = [("    " * (len(path) - 1) + node.name + ("  (added)" if node.source == "user" else ""),
                    path) for path, node in tree.walk()]
        picker.options = options
        values = [value for _, value in options]
        picker.value = select if select in values else values[0]

    def act(action: Any) -> None:
        try:
            message = action(picker.value)
        except (KeyError, ValueError) as exc:
            status.value = f"<span style='color:#c44'>{exc}</span>"
            return
        status.value = f"{message} · {len(tree.leaves())} leaves now"
        if on_change is not None:
            on_change(tree)

    def do_add(path: tuple[str, ...]) -> str:
        new = tree.add(path, name.value)
        refresh(new)
        return f"added {show_path(new)!r}"

    def do_rename(path: tuple[str, ...]) -> str:
        new = tree.rename(path, name.value)
        refresh(new)
        return f"renamed to {show_path(new)!r}"

    def do_remove(path: tuple[str, ...]) -> str:
        tree.prune(path)
        refresh(path[:-1])
        return f"removed {show_path(path)!r}"

    add.on_click(lambda _: act(do_add))
    rename.on_click(lambda _: act(do_rename))
    remove.on_click(lambda _: act(do_remove))
    refresh()
    # flex_flow wrap: on a narrow output the buttons go to a second line instead of scrolling sideways
    return widgets.VBox([picker, name, widgets.HBox([add, rename, remove], layout=widgets.Layout(flex_flow="row wrap")),
                         status])

"""The headline classifier task: invented news headlines over five topics, labels with descriptions.

``data/classification/headlines.jsonl`` holds the headlines with a split fixed in
the file; ``labels.json`` the topic names and their one-line descriptions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from ..core.config import REPO_ROOT
from ..core.jsonl import read_jsonl
from ..teacher.prompts import assistant_reply, load_exemplar, render, require_text

Message = dict[str, str]
Row = dict[str, Any]
HEADLINES_PATH: Path = REPO_ROOT / "data" / "classification" / "headlines.jsonl"
LABELS_PATH: Path = REPO_ROOT / "data" / "classification" / "labels.json"


def _format_labels(labels: Sequence[str] | Mapping[str, str]) -> tuple[list[str], str]:
    if isinstance(labels, Mapping):
        names = [str(k) for k in labels]
        lines = [f"- {k}: {v}" if v else f"- {k}" for k, v in labels.items()]
    else:
        names = [str(x) for x in labels]
        lines = [f"- {x}" for x in names]
    if not names or any(not n.strip() for n in names):
        raise ValueError(f"labels must be a non-empty list of label names, got {labels!r}.")
    if len(set(names)) != len(names):
        raise ValueError(f"labels contain duplicates: {names}.")
    return names, "\n".join(lines)


def classification_messages(headline: str, labels: Sequence[str] | Mapping[str, str], *,
                            exemplar: bool = True) -> list[Message]:
    """The chat for classifying one headline into one of ``labels``.

    ``labels`` is a list of names or a ``{name: description}`` mapping (the
    descriptions are shown to the model). With ``exemplar`` the one worked example
    of ``classification_exemplar.json`` comes before the real headline.
    """
    headline = require_text(headline, "headline")
    names, label_block = _format_labels(labels)
    messages: list[Message] = [
        {"role": "system", "content": render("classification_system", labels=label_block)}
    ]
    if exemplar:
        ex = load_exemplar("classification_exemplar")
        if ex["label"] not in names:
            raise ValueError(
                f"The classification exemplar's label {ex['label']!r} is not one of {names}; "
                "pass exemplar=False or edit data/prompts/classification_exemplar.json."
            )
        messages.append({"role": "user", "content": render("classification_user", headline=ex["headline"])})
        messages.append({"role": "assistant", "content": assistant_reply(ex["thinking"], ex["label"])})
    messages.append({"role": "user", "content": render("classification_user", headline=headline)})
    return messages



def load_labels() -> dict[str, str]:
    """The topic labels and their one-line descriptions (``data/classification/labels.json``)."""
    import json

    return json.loads(LABELS_PATH.read_text(encoding="utf-8"))


def load_headlines(split: Literal["train", "test", "all"] = "all") -> list[dict[str, str]]:
    """The labelled headlines (``id``, ``text``, ``label``, ``split``) of one split or all."""
    if split not in ("train", "test", "all"):
        raise ValueError(f"split must be 'train', 'test' or 'all', got {split!r}.")
    rows = read_jsonl(HEADLINES_PATH)
    labels = load_labels()
    for r in rows:
        if r.get("label") not in labels or r.get("split") not in ("train", "test"):
            raise ValueError(f"{HEADLINES_PATH}: bad row {r!r} (label must be one of {sorted(labels)}).")
    return rows if split == "all" else [r for r in rows if r["split"] == split]


def headline_rows(split: Literal["train", "test", "all"], exemplar: bool = True) -> list[Row]:
    """Prompt rows (task ``"classification"``, reference = the label) for the headlines."""
    labels = load_labels()
    return [
        {
            "id": h["id"],
            "messages": classification_messages(h["text"], labels, exemplar=exemplar),
            "question": h["text"],
            "reference": h["label"],
            "task": "classification",
            "meta": {"split": h["split"], "labels": list(labels)},
        }
        for h in load_headlines(split)
    ]


"""The headline task's data, for the chapters that use the headlines directly.

The task itself is ``data/tasks/headlines/task.yaml`` (:func:`helpers.tasks.spec.load_task`).
Notebook 06 evaluates the math student on English headlines (a skill it was not
trained on) and notebook 08 scores the teacher's label probabilities on them; both
read them through here, in English unless asked otherwise.
"""

from __future__ import annotations

from typing import Any, Literal

from .spec import Task, load_task

Row = dict[str, Any]
Split = Literal["train", "test", "all"]


def headline_task() -> Task:
    return load_task("headlines")


def load_labels(lang: str = "en") -> dict[str, str]:
    """The topic labels and their one-line descriptions in ``lang``."""
    return {name: (desc.get(lang) or desc["en"]) if isinstance(desc, dict) else desc
            for name, desc in headline_task().labels.items()}


def _splits(split: Split) -> tuple[str, ...]:
    if split not in ("train", "test", "all"):
        raise ValueError(f"split must be 'train', 'test' or 'all', got {split!r}.")
    return ("train", "test") if split == "all" else (split,)


def load_headlines(split: Split = "all", lang: str | None = "en") -> list[dict[str, str]]:
    """The labelled headlines (``id``, ``text``, ``label``, ``split``, ``lang``) in file order."""
    task = headline_task()
    rows = [{"id": i["id"], "text": i["input"], "label": i["reference"], "split": i["split"],
             "lang": i["meta"].get("lang", "en")} for s in _splits(split) for i in task.items(s)]
    order = {i["id"]: n for n, i in enumerate(task.items("train") + task.items("test"))}
    rows.sort(key=lambda r: order[r["id"]])
    return [r for r in rows if lang is None or r["lang"] == lang]


def headline_rows(split: Split, exemplar: bool = True, lang: str | None = "en") -> list[Row]:
    """Prompt rows (reference = the label); ``exemplar`` puts one worked example before each headline."""
    task = headline_task()
    rows = [r for s in _splits(split) for r in task.prompt_rows(s, shots=1 if exemplar else 0)]
    return [r for r in rows if lang is None or r["meta"].get("lang", "en") == lang]


def classification_messages(headline: str, *, exemplar: bool = True, lang: str = "en") -> list[dict[str, str]]:
    """The chat that classifies one headline: system prompt, optionally the first worked example, the headline."""
    task = headline_task()
    messages = task.student_messages(headline, lang)
    if exemplar:
        item = {"id": "", "input": headline, "reference": None, "meta": {"lang": lang}}
        messages[-1:-1] = task.shots_for(item, [], 1, None)  # type: ignore[arg-type]
    return messages
